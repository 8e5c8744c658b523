"""Structural checks of the files stages write (metrics JSON, rollout.json and its samples JSONL).

These are pure functions used by the machine's guards: they return a result listing every problem found
instead of raising, so a guard can decide and the evidence can say exactly what was wrong.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from attrs import define

from fsm_runner.contract.fields import RequiredKey
from fsm_runner.contract.pipeline import PipelineSpec
from fsm_runner.evidence.confine import ConfinementError, open_inside, resolve_inside
from fsm_runner.evidence.layout import ROLLOUT_REL

MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_REPORTED_LINES = 20
_MISSING = object()


@define(frozen=True)
class MetricsCheck:
    ok: bool
    metrics: dict[str, Any] | None
    problems: tuple[str, ...]


@define(frozen=True)
class RolloutCheck:
    ok: bool
    rollout: dict[str, Any] | None
    samples_path: Path | None
    sample_count: int
    problems: tuple[str, ...]


def json_type(value: object) -> str:
    """JSON-flavoured type names for messages."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {literal} does not fit a float (non-finite values are not JSON)")
    return value


def parse_json(text: str | bytes) -> tuple[Any, str | None]:
    """Strict JSON (no NaN/Infinity); returns (value, None) or (None, problem)."""
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"invalid JSON: {exc}"


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


def read_json_object(
    path: Path, *, max_bytes: int = MAX_JSON_BYTES, root: Path | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object stored at ``path`` or a problem; never reads more than ``max_bytes`` + 1 bytes.

    With ``root``, ``path`` is a file a command wrote under ``root`` and is opened without leaving it
    (:mod:`fsm_runner.evidence.confine`): a symlink out of the tree is a problem, never followed.
    """
    try:
        fh = _open_output(Path(path), root)
    except FileNotFoundError:
        return None, f"file not found: {path}"
    except ConfinementError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    if fh is None:
        return None, f"not a regular file: {path}"
    try:
        with fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    if len(data) > max_bytes:
        return None, f"file is larger than the {_size(max_bytes)} limit: {path}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (at byte offset {exc.start}): {path}"
    value, problem = parse_json(text)
    if problem:
        return None, problem
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {json_type(value)}"
    return value, None


def _open_output(path: Path, root: Path | None) -> BinaryIO | None:
    """``path`` opened for reading (None when it is not a regular file); below ``root`` when given."""
    if root is None:
        if not path.exists():
            raise FileNotFoundError(path)
        return path.open("rb") if path.is_file() else None
    rel = os.path.relpath(path, root) if path.is_absolute() else str(path)
    fd = open_inside(root, rel)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def lookup(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]`` if that literal key exists, else the nested value for a dotted key, else a sentinel."""
    if key in obj:
        return obj[key]
    current: Any = obj
    for part in key.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def check_metrics(
    path: Path,
    required_keys: Sequence[str | RequiredKey],
    *,
    max_bytes: int = MAX_JSON_BYTES,
    root: Path | None = None,
) -> MetricsCheck:
    """Is ``path`` a JSON object with every required key, none null, each of the type its entry names
    (``score`` a number when it names none), and ``ok`` exactly true whenever it is there (required or not)?

    ``root`` (the repository) confines the read: see :func:`read_json_object`.
    """
    metrics, problem = read_json_object(Path(path), max_bytes=max_bytes, root=root)
    if metrics is None:
        return MetricsCheck(False, None, (problem or "unreadable",))
    keys = [key if isinstance(key, RequiredKey) else RequiredKey(key) for key in required_keys]
    problems: list[str] = []
    missing = [key.name for key in keys if lookup(metrics, key.name) is _MISSING]
    if missing:
        problems.append(f"missing required keys: {', '.join(missing)}")
    for key in keys:
        value = lookup(metrics, key.name)
        expected = key.type or ("number" if key.name == "score" else None)
        if value is _MISSING:
            continue
        if value is None:
            wanted = _with_article(expected) if key.type else "a value"
            problems.append(f"{key.name}: expected {wanted}, got null")
        elif expected is not None and not _has_type(value, expected):
            problems.append(
                f"{key.name}: expected {_with_article(expected)}, got {json_type(value)} {_shown(value)}"
            )
    if "ok" in metrics and metrics["ok"] is not True:
        problems.append(_not_ok(metrics))
    return MetricsCheck(not problems, metrics, tuple(problems))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _has_type(value: object, expected: str) -> bool:
    """JSON Schema's meaning of the type names: booleans are not numbers, and 3.0 is an integer."""
    if expected == "number":
        return _is_number(value)
    if expected == "integer":
        return _is_number(value) and float(value).is_integer()  # type: ignore[arg-type]
    python = {"string": str, "boolean": bool, "object": dict, "array": list}[expected]
    return isinstance(value, python)


def _with_article(kind: str | None) -> str:
    return f"an {kind}" if kind and kind[0] in "aeiou" else f"a {kind}"


def _shown(value: object, limit: int = 200) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_ok(metrics: dict[str, Any]) -> str:
    """`ok` other than true fails the phase whether or not it is required; the file's own reason is quoted."""
    problem = f"ok must be true, got {_shown(metrics['ok'])}"
    for name in ("error", "message"):
        reason = metrics.get(name)
        if isinstance(reason, str) and reason.strip():
            return f"{problem}; the metrics file says ({name}): {_shown(reason.strip(), 500)}"
    return problem


def _sample_problems(line: bytes) -> tuple[list[str], str | None]:
    """Problems of one JSONL line, and its completion when the line is valid."""
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return [f"not valid UTF-8 (at byte offset {exc.start})"], None
    sample, problem = parse_json(text)
    if problem:
        return [problem.replace(" at line 1 column", " at column")], None
    if not isinstance(sample, dict):
        return [f"expected a JSON object, got {json_type(sample)}"], None
    problems = [f"{name}: missing" for name in ("prompt", "completion", "reward") if name not in sample]
    for name in ("prompt", "completion"):
        if name in sample and not isinstance(sample[name], str):
            problems.append(f"{name}: expected a string, got {json_type(sample[name])}")
    reward = sample.get("reward", 0)
    if isinstance(reward, bool) or not isinstance(reward, (int, float)):
        problems.append(f"reward: expected a number, got {json_type(reward)}")
    elif not math.isfinite(reward):
        problems.append(f"reward: expected a finite number, got {reward}")
    if "meta" in sample and not isinstance(sample["meta"], dict):
        problems.append(f"meta: expected an object, got {json_type(sample['meta'])}")
    return problems, None if problems else sample["completion"]


def check_samples(path: Path, shown: str) -> tuple[int, list[str]]:
    """Stream ``path`` line by line: (number of valid samples, problems). Lines are read with a bound."""
    problems: list[str] = []
    invalid = count = nonblank = 0
    lineno = 0
    with path.open("rb") as fh:
        for line in _bounded_lines(fh):
            lineno += 1
            if line is None:
                found = [f"line is longer than the {_size(MAX_LINE_BYTES)} limit"]
                completion = None
            elif not line.strip():
                continue
            else:
                found, completion = _sample_problems(line)
            if found:
                invalid += 1
                if invalid <= MAX_REPORTED_LINES:
                    problems.extend(f"{shown}:{lineno}: {p}" for p in found)
                continue
            count += 1
            nonblank += bool(completion and completion.strip())
    if invalid > MAX_REPORTED_LINES:
        problems.append(f"{shown}: {invalid - MAX_REPORTED_LINES} more invalid lines not shown")
    if count and not nonblank:
        problems.append(f"{shown}: all {count} completions are blank")
    if not count and not invalid:
        problems.append(f"{shown}: no samples")
    return count, problems


def _bounded_lines(fh: BinaryIO) -> Iterator[bytes | None]:
    """Each line of ``fh`` (None for one longer than :data:`MAX_LINE_BYTES`), read in bounded pieces: a file
    with no newline at all costs at most one line's worth of memory, never its size."""
    while line := fh.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = fh.readline(1024 * 1024)
            yield None
        else:
            yield line


def count_json_lines(path: Path) -> int:
    """Lines of ``path`` that are JSON objects, each at most :data:`MAX_LINE_BYTES`; streamed, bounded memory.

    What a rollout run without ``require_samples`` reports as its sample count: blank, invalid and
    over-long lines are not counted (the samples' own fields are only checked with ``require_samples``).
    """
    count = 0
    with path.open("rb") as fh:
        for line in _bounded_lines(fh):
            if line is None or not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                continue
            value, problem = parse_json(text)
            count += problem is None and isinstance(value, dict)
    return count


def _samples_location(rollout: dict[str, Any], root: Path, required: bool) -> tuple[Path | None, str | None]:
    paths = rollout.get("paths")
    if paths is not None and not isinstance(paths, dict):
        return None, f"paths: expected an object, got {json_type(paths)}"
    value = (paths or {}).get("samples_jsonl")
    if value is None:
        return None, "paths.samples_jsonl: missing; it must name the samples file" if required else None
    if not isinstance(value, str) or not value.strip():
        return None, f"paths.samples_jsonl: expected a non-empty string, got {json_type(value)}"
    try:
        resolved = resolve_inside(root, os.path.relpath(value, root) if os.path.isabs(value) else value)
    except ConfinementError:
        return None, f"paths.samples_jsonl: {value!r} is outside the repository"
    except FileNotFoundError:
        return root / value, None  # reported as missing where it is read
    except (OSError, ValueError) as exc:
        return None, f"paths.samples_jsonl: cannot resolve {value!r}: {exc}"
    return resolved, None


def _counts_problem(rollout: dict[str, Any], samples: int | None) -> str | None:
    counts = rollout.get("counts")
    if counts is None:
        return None
    if not isinstance(counts, dict):
        return f"counts: expected an object, got {json_type(counts)}"
    numbers = {}
    for name in ("errors", "samples"):
        value = counts.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"counts.{name}: expected a number, got {json_type(value)}"
        numbers[name] = value
    errors = numbers["errors"]
    total = samples if samples is not None else numbers["samples"]
    if errors is not None and total is not None and errors > 0 and errors >= total:
        return f"counts.errors ({errors}) >= number of samples ({total}): the rollout mostly failed"
    return None


def check_rollout(repo_root: Path, *, require_samples: bool, rollout_rel: str = ROLLOUT_REL) -> RolloutCheck:
    """Is the rollout the stage wrote usable? Samples are read (streamed) only when ``require_samples``."""
    root = Path(repo_root).resolve()
    rollout_path = root / rollout_rel
    if not rollout_path.exists() and not require_samples:
        return RolloutCheck(True, None, None, 0, ())
    rollout, problem = read_json_object(rollout_path, root=root)
    if rollout is None:
        return RolloutCheck(False, None, None, 0, (f"{rollout_rel}: {problem}",))
    problems: list[str] = []
    samples_path, problem = _samples_location(rollout, root, require_samples)
    if problem:
        problems.append(f"{rollout_rel}: {problem}")
    count: int | None = None
    if require_samples and samples_path is not None:
        shown = samples_path.relative_to(root).as_posix()
        if not samples_path.is_file():
            what = "not a regular file" if samples_path.exists() else "samples file not found"
            problems.append(f"{shown}: {what}")
        else:
            count, sample_problems = check_samples(samples_path, shown)
            problems.extend(sample_problems)
    problem = _counts_problem(rollout, count)
    if problem:
        problems.append(f"{rollout_rel}: {problem}")
    return RolloutCheck(not problems, rollout, samples_path, count or 0, tuple(problems))


# -- which files a run writes in the repository ------------------------------------------------------------


@define(frozen=True)
class OutputFile:
    """A file a run writes in the repository: ``rel`` to the repo root, and the ``key`` that names it, in
    ``named_in`` (a file relative to the repo) or, when that is None, in the pipeline contract."""

    rel: str
    key: str
    named_in: str | None = None


def rollout_outputs(repo_root: Path) -> tuple[OutputFile, ...]:
    """rollout.json (its path is fixed, the rollout commands write it) and the samples file that a
    rollout.json already in the repository names: the outputs a new rollout replaces."""
    found = [OutputFile(ROLLOUT_REL, "rollout.run_cmds")]
    samples = check_rollout(repo_root, require_samples=False).samples_path
    if samples is not None:
        rel = samples.relative_to(Path(repo_root).resolve()).as_posix()
        found.append(OutputFile(rel, "paths.samples_jsonl", ROLLOUT_REL))
    return tuple(found)


def run_outputs(pipeline: PipelineSpec, repo_root: Path) -> tuple[OutputFile, ...]:
    """Every file in the repository a run of ``pipeline`` writes (and so moves into its evidence when one
    is already there)."""
    found: list[OutputFile] = []
    if pipeline.rollout is not None and pipeline.rollout.run_cmds:
        found.extend(rollout_outputs(repo_root))
    for key in ("evaluation", "benchmark"):
        section = getattr(pipeline, key)
        if section is not None and section.run_cmds and section.metrics_path:
            found.append(OutputFile(section.metrics_path, f"{key}.metrics_path"))
    return tuple(found)
