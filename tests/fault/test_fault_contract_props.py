"""Property tests through the real file loader: whatever pipeline.yml holds, ``load_pipeline`` returns a spec or
raises ContractError naming the file, and never hangs.

Two generators, 2,000 examples each: arbitrary YAML documents (random data dumped in random styles, plus
token soup), and byte-level mutations of ``examples/pipeline.example.yml``. The file is rewritten in one
directory per test, not per example, to keep examples cheap. A per-example alarm turns a hang into a failure.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm_runner.contract.pipeline import PipelineSpec, load_pipeline
from fsm_runner.errors import ContractError

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "pipeline.example.yml").read_bytes()
PER_EXAMPLE_SECONDS = 5.0
EXAMPLES = 2000
PROPS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("props")
    (root / "scripts").mkdir()
    (root / "link-out").symlink_to("/")
    return root


class Hang(Exception):
    pass


@pytest.fixture(autouse=True, scope="module")
def _alarm_is_ours() -> Iterator[None]:
    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"load_pipeline took longer than {PER_EXAMPLE_SECONDS}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    yield
    signal.signal(signal.SIGALRM, previous)


def load_or_error(repo: Path, data: bytes) -> PipelineSpec | ContractError:
    """The only two outcomes allowed; anything else (or a hang) propagates and fails the example."""
    path = repo / "pipeline.yml"
    path.write_bytes(data)
    signal.setitimer(signal.ITIMER_REAL, PER_EXAMPLE_SECONDS)
    try:
        return load_pipeline(repo)
    except ContractError as exc:
        return exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


#: What YAML counts as a line break besides LF (NEL, LS and PS are none to an editor; the loader names them).
YAML_BREAKS = (b"\r", "\x85".encode(), "\u2028".encode(), "\u2029".encode())


def check(repo: Path, data: bytes) -> None:
    outcome = load_or_error(repo, data)
    path = str(repo / "pipeline.yml")
    if isinstance(outcome, ContractError):
        assert outcome.path == path and outcome.problem
        lines = data.count(b"\n") + sum(data.count(b) for b in YAML_BREAKS) + 2
        assert outcome.line is None or 1 <= outcome.line <= lines
        assert str(outcome).startswith(path)
    else:
        assert isinstance(outcome, PipelineSpec) and outcome.version == 1 and outcome.path == path


# -- arbitrary YAML documents -------------------------------------------------------------------------------

VOCABULARY = [
    "version", "security", "mode", "allowlist", "denylist", "max_cmd_seconds", "max_total_seconds", "tests",
    "cmds", "steps", "auth", "interactive", "deploy", "setup_cmds", "health_cmds", "teardown_cmds",
    "teardown_policy", "kubectl_dump", "enabled", "namespace", "label_selector", "include_logs", "rollout",
    "run_cmds", "evaluation", "benchmark", "metrics_path", "required_keys", "artifacts", "out_dir",
    "timeout_seconds", "retries", "env", "workdir", "safe", "system", "always", "never", "../x", "/etc",
    "link-out", "PATH", "1", "true", "null", "~",
]  # fmt: skip
KEYS = st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=10), st.integers(-3, 3), st.booleans())
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(VOCABULARY),
    st.text(max_size=20),
)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=12,
)


@st.composite
def yaml_documents(draw: st.DrawFn) -> bytes:
    data = draw(DATA)
    if draw(st.booleans()):  # most documents look like a pipeline at the top
        data = {
            "version": draw(st.sampled_from([1, 1, 2, "1", None])),
            **(data if isinstance(data, dict) else {}),
        }
        for _ in range(draw(st.integers(0, 3))):
            data[draw(st.sampled_from(VOCABULARY[:31]))] = draw(DATA)
    text = yaml.safe_dump(
        data,
        default_flow_style=draw(st.sampled_from([None, True, False])),
        default_style=draw(st.sampled_from([None, None, '"', "'", "|"])),
        allow_unicode=draw(st.booleans()),
        explicit_start=draw(st.booleans()),
        sort_keys=False,
    )
    return text.encode("utf-8")


TOKENS = st.sampled_from(
    [":", " ", "\n", "  ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "!!str ", "!!binary ", "!x ", "'", '"',
     "#", "|\n", ">-\n", "---\n", "...\n", "? ", "<<: ", "~", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "\t",
     "\\", "\ufeff", "\x85", "\u2028", "\x00", "version: 1\n", "tests:\n  cmds:\n", "    - ", "env:\n",
     "  workdir: ", "2001-12-14t21:59:43.10-05:00", "0o17", "0x_1F", "1_000", ".NaN", "-.inf", "=", "!!set "]
)  # fmt: skip


@st.composite
def token_soup(draw: st.DrawFn) -> bytes:
    return "".join(draw(st.lists(TOKENS, max_size=40))).encode("utf-8", errors="surrogatepass")


@PROPS
@given(st.one_of(yaml_documents(), token_soup(), st.binary(max_size=120)))
def test_any_yaml_document_loads_or_raises_contract_error(repo: Path, data: bytes) -> None:
    check(repo, data)


# -- mutations of a valid contract ---------------------------------------------------------------------------

JUNK = st.one_of(
    st.binary(min_size=1, max_size=8),
    st.sampled_from(
        [b":", b"- ", b"  ", b"\t", b"&a ", b"*a", b"{", b"[", b"'", b'"', b"\xff", b"\xc3", b"\n"]
    ),
)


@st.composite
def mutated_example(draw: st.DrawFn) -> bytes:
    data = bytearray(EXAMPLE)
    for _ in range(draw(st.integers(1, 5))):
        lines = bytes(data).split(b"\n")
        operation = draw(
            st.sampled_from(["delete", "insert", "replace", "dup-line", "swap", "indent", "truncate"])
        )
        at = draw(st.integers(0, len(data)))
        if operation == "delete":
            del data[at : at + draw(st.integers(1, 60))]
        elif operation == "insert":
            data[at:at] = draw(JUNK)
        elif operation == "replace":
            data[at : at + 1] = draw(JUNK)
        elif operation == "truncate":
            del data[at:]
        else:
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if operation == "dup-line":
                lines.insert(j, lines[i])
            elif operation == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = b" " * draw(st.integers(0, 6)) + lines[i].lstrip(b" ")
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def test_the_unmutated_example_is_valid(repo: Path) -> None:
    assert isinstance(load_or_error(repo, EXAMPLE), PipelineSpec)


@PROPS
@given(mutated_example())
def test_mutations_of_the_example_load_or_raise_contract_error(repo: Path, data: bytes) -> None:
    check(repo, data)


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029"], ids=["NEL", "LS", "PS"])
def test_unicode_line_separators_are_named_at_their_own_line(repo: Path, char: str) -> None:
    data = f"# pasted from a web page{char}with a separator\nversion: 1\ntests:\n  cmds: 'true'\n".encode()
    outcome = load_or_error(repo, data)
    assert isinstance(outcome, ContractError)
    assert outcome.line == 1 and f"U+{ord(char):04X}" in outcome.problem, str(outcome)
