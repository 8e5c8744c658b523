"""Property tests: whatever bytes a repo holds, the loaders give a spec or ContractErrors, nothing else."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm_runner.contract.actions import parse_actions
from fsm_runner.contract.bootstrap import parse_bootstrap
from fsm_runner.contract.pipeline import PipelineSpec, parse_pipeline
from fsm_runner.contract.yamlload import RawFile
from fsm_runner.errors import ContractError

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "pipeline.example.yml").read_text()
ROOT = Path(__file__).resolve().parent
EXAMPLE_DOC = yaml.safe_load(EXAMPLE)
ALL_PARSERS = (parse_pipeline, parse_bootstrap, parse_actions)


def fast(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )


def outcome(data: bytes, parsers: tuple[Any, ...] = (parse_pipeline,)) -> None:
    """Each parser either returns a model with no errors or no model and located ContractErrors."""
    lines = data.count(b"\n") + 2
    for parse in parsers:
        spec, errors = parse(RawFile("fuzz.yml", data), ROOT)  # type: ignore[operator]
        assert (spec is None) == bool(errors)
        for error in errors:
            assert isinstance(error, ContractError)
            assert error.path == "fuzz.yml" and error.problem
            assert error.line is None or 1 <= error.line <= lines


@fast(150)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_arbitrary_text(text: str) -> None:
    outcome(text.encode("utf-8"), ALL_PARSERS)


@fast(100)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    outcome(data, ALL_PARSERS)


YAMLISH = st.sampled_from(
    [":", " ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!str ", "!x ", "'", '"', "#", "|\n",
     ">-\n", "---\n", "...", "? ", "<<: ", "~", "null", "true", "1", "-1", "1.5", ".inf", "0x1F", "\t", "\\",
     "version", "tests", "cmds", "steps", "env", "workdir", "../", "/abs", "retries", "timeout_seconds",
     "2021-02-30", "\x00", "\ufeff", "%YAML 1.1\n"]
)  # fmt: skip


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    text = EXAMPLE
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        insert = "".join(draw(st.lists(YAMLISH, max_size=4)))
        text = text[:start] + insert + text[end:]
    return text


@fast(300)
@given(mutated_example())
def test_mutations_of_the_example(text: str) -> None:
    outcome(text.encode("utf-8"))


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(
    ["version", "security", "tests", "auth", "deploy", "rollout", "evaluation", "benchmark", "artifacts",
     "cmds", "steps", "env", "workdir", "retries", "timeout_seconds", "metrics_path", "required_keys",
     "kubectl_dump", "teardown_policy", "allowlist", "mode", "actions", "id", "kind", "path", "content",
     "cmd"]
)  # fmt: skip


@st.composite
def structured(draw: st.DrawFn) -> str:
    """The example as data with a value swapped somewhere: exercises every type check."""
    doc: Any = copy.deepcopy(EXAMPLE_DOC)
    for _ in range(draw(st.integers(1, 3))):
        target = doc
        for _ in range(draw(st.integers(0, 2))):
            if not isinstance(target, dict) or not target:
                break
            child = target[draw(st.sampled_from(sorted(target)))]
            if not isinstance(child, dict):
                break
            target = child
        if isinstance(target, dict):
            target[draw(KEYS)] = draw(VALUES)
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


@fast(150)
@given(structured())
def test_typed_values_in_any_field(text: str) -> None:
    outcome(text.encode())


def test_a_valid_structured_document_still_parses() -> None:
    spec, errors = parse_pipeline(RawFile("x.yml", yaml.safe_dump(yaml.safe_load(EXAMPLE)).encode()), ROOT)
    assert errors == [] and isinstance(spec, PipelineSpec)
