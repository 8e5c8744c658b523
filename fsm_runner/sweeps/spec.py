"""The sweep file: which targets, which llms, how, and where the rows go, read with file:line errors.

It is read by the contract reader (the same key checks, "did you mean" hints and line numbers as
pipeline.yml) from the field metadata below, which also gives ``fsm-runner schema sweep``. Paths in it are
relative to the file's own directory, so a sweep file means the same whatever directory it is run from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import define, evolve, field
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fsm_runner.contract.fields import MAX_WORKERS, meta, text_problem, to_env, to_str_tuple, workers_problem
from fsm_runner.contract.reader import Reader
from fsm_runner.contract.schema import document_schema
from fsm_runner.contract.yamlload import compose, line_of, present, read_file
from fsm_runner.errors import ContractError, UsageError
from fsm_runner.evidence.records import MODES
from fsm_runner.sweeps import EXECUTORS
from fsm_runner.targets import _looks_like_url, url_scheme_problem


@define(frozen=True)
class RepairOptions:
    """What a cell's run may do when a phase fails: a repair agent command line and its budget."""

    iters: int = field(default=0, metadata=meta("count", "Repairs allowed per cell (needs `cmd`)."))
    cmd: str | None = field(
        default=None,
        metadata=meta(
            "str",
            "Repair agent command line; {prompt_file}, {request_file} and {repo} are filled in.",
        ),
    )


@define(frozen=True)
class SweepSpec:
    """A sweep: every target scored for every llm, one isolated run per cell."""

    version: int = field(
        metadata=meta("version", "Format version; must be 1.", missing="missing; add `version: 1` at the top")
    )
    targets: tuple[str, ...] = field(
        converter=to_str_tuple,
        metadata=meta(
            "strs",
            "Targets: directories (relative to this file) or git URLs, optionally URL@REF.",
            required=True,
            missing="missing; list the targets, e.g. `targets: [examples/arith_bench]`",
        ),
    )
    llms: tuple[str, ...] = field(
        converter=to_str_tuple,
        metadata=meta(
            "strs",
            "Models, in column order: model names, or checkpoint directories (relative to this file).",
            required=True,
            missing="missing; list the models or checkpoint directories, e.g. `llms: [exact, ckpts/step-1]`",
        ),
    )
    mode: str = field(default="smoke", metadata=meta("enum", "AIDER_EVAL_MODE of every cell.", choices=MODES))
    concurrency: int | None = field(
        default=None,
        metadata=meta("workers", "Cells run at once (default: the local executor's cores, Ray's CPUs)."),
    )
    executor: str = field(
        default="local",
        metadata=meta(
            "enum",
            "local: processes on this machine; ray: Ray tasks (pip install 'fsm-runner[ray]').",
            choices=EXECUTORS,
        ),
    )
    address: str | None = field(
        default=None, metadata=meta("str", "Ray only: the address of an existing cluster to join.")
    )
    num_cpus: float = field(default=1.0, metadata=meta("cpus", "Ray only: CPUs each cell reserves."))
    out_dir: str | None = field(
        default=None,
        metadata=meta("str", "Where results.jsonl and sweep.json go, relative to this file."),
    )
    env: dict[str, str] = field(
        factory=dict, converter=to_env, metadata=meta("env", "Variables for every stage of every cell.")
    )
    repair: RepairOptions = field(
        factory=RepairOptions, metadata=meta("section", "Repair agent of every cell.", model=RepairOptions)
    )
    path: str = ""

    @property
    def base(self) -> Path:
        """The directory relative paths in the file are read from."""
        return Path(self.path).absolute().parent if self.path else Path.cwd()

    def resolved_targets(self) -> list[str]:
        return [resolve_target_spec(t, self.base) for t in self.targets]

    def resolved_llms(self) -> list[str]:
        return [resolve_llm(llm, self.base) for llm in self.llms]

    def resolved_out_dir(self) -> Path:
        """``out_dir`` (relative to the file), else ``sweeps/<file name without .yml>`` beside the file."""
        if self.out_dir:
            return Path(os.path.abspath(self.base / Path(self.out_dir).expanduser()))
        stem = Path(self.path).stem if self.path else "sweep"
        return self.base / "sweeps" / stem


def resolve_target_spec(target: str, base: Path) -> str:
    """A local path made absolute against ``base`` (a ``path@ref`` too); a URL as given."""
    text = os.fspath(target)
    if _looks_like_url(text):
        return text
    path = Path(text).expanduser()
    return text if path.is_absolute() and text == str(path) else os.path.abspath(base / path)


def resolve_llm(llm: str, base: Path) -> str:
    """An llm naming an existing directory (relative to ``base``) is a checkpoint: its absolute path. Anything
    else names a served model and is kept as given (the same rule a rollout applies)."""
    candidate = Path(llm).expanduser()
    candidate = candidate if candidate.is_absolute() else base / candidate
    return os.path.abspath(candidate) if llm.strip() and candidate.is_dir() else llm


def spec_base(path: str) -> Path:
    """The directory a sweep file's relative paths are read from."""
    return Path(path).absolute().parent


def target_problem(target: str, base: Path) -> str | None:
    """Why ``target`` cannot be a target, found before anything runs: a URL whose scheme git cannot fetch,
    or a local path (relative to ``base``) that does not exist. Other URLs are left to the fetch."""
    if _looks_like_url(target):
        problem = url_scheme_problem(target)
        return f"{target!r}: {problem}" if problem else None
    path = Path(resolve_target_spec(target, base))
    if path.exists() or (("@" in path.name) and Path(str(path).rpartition("@")[0]).exists()):
        return None
    return f"{target!r}: no such directory ({path}); give a directory or a git URL"


def out_dir_problem(out: Path) -> str | None:
    """Why a sweep cannot make ``out`` its directory: it, or a directory above it, is a file."""
    for where in (out, *out.parents):
        if where.exists():
            return None if where.is_dir() else f"{where} is a file, not a directory; choose another out_dir"
    return None


def check_arguments(
    targets: list[Any],
    llms: list[Any],
    *,
    mode: object,
    concurrency: object = None,
    repair_iters: object = 0,
    num_cpus: object = 1.0,
    env_overrides: object = None,
    base: Path,
) -> None:
    """What ``sweep()`` and ``submit()`` were given, checked before anything is resolved or started, with
    the sweep file's messages (a UsageError naming the argument)."""
    for key, items in (("targets", targets), ("llms", llms)):
        for index, item in enumerate(items):
            if not isinstance(item, (str, os.PathLike)):
                raise UsageError(f"{key}[{index}]: expected a string, got {type(item).__name__}")
            text = os.fspath(item)
            if not isinstance(text, str) or not text.strip():
                raise UsageError(f"{key}[{index}]: empty {key[:-1]}")
            problem = text_problem(text)
            if problem:
                raise UsageError(f"{key}[{index}]: {problem}")
            if key == "targets":
                problem = target_problem(text, base)
                if problem:
                    raise UsageError(f"{key}[{index}]: {problem}")
    if not isinstance(mode, str) or mode not in MODES:
        raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if concurrency is not None and (problem := workers_problem(concurrency)):
        raise UsageError(f"concurrency {problem}")
    if isinstance(repair_iters, bool) or not isinstance(repair_iters, int) or repair_iters < 0:
        raise UsageError(f"repair_iters must be a whole number >= 0, got {repair_iters!r}")
    if (
        isinstance(num_cpus, bool)
        or not isinstance(num_cpus, (int, float))
        or not (math.isfinite(num_cpus) and 0 < num_cpus <= MAX_WORKERS)
    ):
        raise UsageError(
            f"num_cpus must be a positive number of CPUs (at most {MAX_WORKERS}), got {num_cpus!r}"
        )
    if env_overrides is not None and not (
        isinstance(env_overrides, Mapping)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env_overrides.items())
    ):
        raise UsageError("env_overrides must map variable names to strings, e.g. {'HF_HOME': '/data/hf'}")


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and validate a sweep file; every problem is in the ContractError (each with file:line)."""
    file = Path(path)
    if not present(file):
        raise ContractError("file not found; write a sweep file (see docs/sweeps.md)", path=str(file))
    raw = read_file(file)
    node = compose(raw)
    reader = Reader(raw.path, file.absolute().parent)
    spec = reader.read(SweepSpec, node)
    errors = sorted(reader.errors, key=lambda e: e.line or 0)
    if spec is not None:
        errors = _problems(spec, node, raw.path)
    if errors:
        first = errors[0]
        rest = "".join(f"\n{e}" for e in errors[1:])
        raise ContractError(first.problem + rest, path=first.path, line=first.line, key=first.key)
    assert isinstance(spec, SweepSpec)
    return evolve(spec, path=str(file.absolute()))


def _key_node(node: MappingNode, key: str) -> tuple[Node, Node] | None:
    for knode, vnode in node.value:
        if isinstance(knode, ScalarNode) and knode.value == key:
            return knode, vnode
    return None


def _problems(spec: SweepSpec, node: MappingNode, shown: str) -> list[ContractError]:
    """What the key-by-key reading cannot see: empty or repeated lists, options that go together."""
    errors: list[ContractError] = []

    def add(key: str, problem: str) -> None:
        where = _key_node(node, key.split(".")[0])
        errors.append(ContractError(problem, path=shown, line=line_of(where[1]) if where else None, key=key))

    for key, items in (("targets", spec.targets), ("llms", spec.llms)):
        if not items:
            add(key, "must name at least one; a sweep runs every one of the targets x llms cells")
        seen: set[str] = set()
        for item in items:
            if item in seen:
                add(key, f"{item!r} is listed twice; each cell must be named once")
            seen.add(item)
    where = _key_node(node, "targets")
    nodes: list[Node] = list(where[1].value) if where and isinstance(where[1], SequenceNode) else []
    for index, target in enumerate(spec.targets):
        problem = target_problem(target, spec_base(shown))
        if problem:
            at: Node | None = nodes[index] if index < len(nodes) else (where[1] if where else None)
            key = f"targets[{index}]" if nodes else "targets"
            errors.append(ContractError(problem, path=shown, line=line_of(at) if at else None, key=key))
    out_problem = out_dir_problem(evolve(spec, path=str(Path(shown).absolute())).resolved_out_dir())
    if spec.out_dir and out_problem:
        add("out_dir", out_problem)
    if spec.address is not None and spec.executor != "ray":
        add("address", "joins a Ray cluster: set `executor: ray` too, or remove it")
    if spec.repair.iters and not spec.repair.cmd:
        add("repair.iters", "has no effect without repair.cmd (the agent's command line)")
    return errors


def sweep_json_schema() -> dict[str, Any]:
    """JSON Schema of the sweep file (``fsm-runner schema sweep``)."""
    return document_schema(SweepSpec, "fsm-runner sweep file v1")
