"""What ``compare`` reads: a sweep's ``results.jsonl`` (or the sweep directory holding it, whose manifest
gives the order of targets and llms), run directories (one cell per round), and a sweep's rows in memory.
Each becomes the same record of one cell; a source that cannot be read is a :class:`UsageError` naming the
file and line.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field

from fsm_runner.errors import UsageError
from fsm_runner.evidence.layout import JOURNAL, RUN_JSON, SWEEP_MANIFEST, SWEEP_RESULTS
from fsm_runner.evidence.records import RoundRecord, RunState
from fsm_runner.evidence.store import read_run


@define(frozen=True)
class Recorded:
    """One cell as a source recorded it: a results.jsonl row, a sweep row, or a run's round."""

    target: str
    llm: str
    ok: bool
    score: Any = None
    metrics: dict[str, Any] | None = None
    error: str | None = None


@define(frozen=True)
class Sources:
    """What the sources gave: the results in order, and the order a sweep manifest declared (if any)."""

    results: list[Recorded] = field(factory=list)
    targets: list[str] = field(factory=list)
    llms: list[str] = field(factory=list)


def run_dir_of(source: Any) -> Path | None:
    """The run directory ``source`` names (a run dir, or its run.json), or None when it names none."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    if path.is_file() and path.name == RUN_JSON:
        return path.parent
    in_run = path.is_dir() and ((path / RUN_JSON).is_file() or (path / JOURNAL).is_file())
    return path if in_run and not (path / SWEEP_RESULTS).is_file() else None


def read_sources(sources: Iterable[Any]) -> Sources:
    read = Sources()
    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            _read_path(Path(source), read)
        else:
            read.results.extend(_from_object(source))
    return read


def _read_path(path: Path, read: Sources) -> None:
    run_dir = run_dir_of(path)
    if run_dir is not None:
        read.results.extend(_from_run(run_dir))
        return
    if path.is_dir():
        results = path / SWEEP_RESULTS
        if not results.is_file():
            raise UsageError(
                f"{path}: neither a sweep directory (no {SWEEP_RESULTS}) nor a run directory "
                f"(no {RUN_JSON}); give a results file, a sweep's out_dir or a run directory"
            )
        path = results
    elif not path.exists():
        raise UsageError(
            f"{path}: no such file or directory (give a {SWEEP_RESULTS}, a sweep dir or a run dir)"
        )
    read.results.extend(_from_results_file(path))
    _read_manifest(path.parent / SWEEP_MANIFEST, read)


def _from_results_file(path: Path) -> list[Recorded]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise UsageError(f"{path}: cannot read: {detail}") from None
    results = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except RecursionError:
            raise UsageError(f"{where}: nested too deeply to be a result row") from None
        except ValueError as exc:
            if _cut_short(line, exc):
                # A row cut short (a sweep killed while it wrote it; a later append ends that line and goes on
                # after it): the rows around it still count.
                warnings.warn(f"{where}: a row cut short; skipped", UserWarning, stacklevel=2)
                continue
            raise UsageError(f"{where}: not JSON ({exc}); every line is one result row") from None
        results.append(_result_of(data, where))
    return results


def _cut_short(line: str, exc: ValueError) -> bool:
    """Whether ``line`` is the start of a JSON object whose end is missing (not some other text)."""
    if not isinstance(exc, json.JSONDecodeError) or not line.lstrip().startswith("{"):
        return False
    rest = line[exc.pos :].rstrip()
    return (
        not rest
        or exc.msg.startswith("Unterminated string")
        or any(word.startswith(rest) for word in ("true", "false", "null"))
    )


def _result_of(data: Any, where: str) -> Recorded:
    """A row in the results.jsonl format (also a sweep row's ``to_json()``)."""
    if not isinstance(data, Mapping):
        raise UsageError(
            f"{where}: expected a JSON object with target, llm and ok, got {type(data).__name__}"
        )
    for key in ("target", "llm"):
        if not isinstance(data.get(key), str):
            raise UsageError(f"{where}: {key!r} must be a string, got {data.get(key)!r}")
    metrics = data.get("metrics")
    error = data.get("error")
    return Recorded(
        target=data["target"],
        llm=data["llm"],
        ok=data.get("ok") is True,
        score=data.get("score"),
        metrics=dict(metrics) if isinstance(metrics, Mapping) else None,
        error=None if error is None else str(error),
    )


def _from_object(source: Any) -> list[Recorded]:
    """A sweep's result (``rows``), one of its rows (``to_json()``), a row as a mapping, or a list of them."""
    rows = getattr(source, "rows", None)
    if rows is None and isinstance(source, Mapping) and isinstance(source.get("rows"), list):
        rows = source["rows"]
    if rows is not None:
        return [r for row in rows for r in _from_object(row)]
    data = source.to_json() if callable(getattr(source, "to_json", None)) else source
    if isinstance(data, Mapping):
        return [_result_of(data, f"row {data.get('target')!r} x {data.get('llm')!r}")]
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return [r for item in source for r in _from_object(item)]
    raise UsageError(
        f"cannot compare a {type(source).__name__}: give paths (results.jsonl, sweep dirs, run dirs) or "
        "sweep results"
    )


def _read_manifest(path: Path, read: Sources) -> None:
    """The targets and llms a sweep declared, in the order given (cells finish in any order)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return  # the order is a nicety; results.jsonl is what counts
    if not isinstance(data, Mapping):
        return
    for key, into in (("targets", read.targets), ("llms", read.llms)):
        values = data.get(key)
        if isinstance(values, list):
            into.extend(v for v in values if isinstance(v, str) and v not in into)


def round_metrics(entry: RoundRecord) -> dict[str, Any] | None:
    """A round's evaluation metrics, with its benchmark metrics under ``benchmark``."""
    if entry.metrics is None and entry.benchmark is None:
        return None
    metrics = dict(entry.metrics or {})
    if entry.benchmark is not None:
        metrics.setdefault("benchmark", entry.benchmark)
    return metrics


def _round_error(run: RunState, entry: RoundRecord) -> str | None:
    if entry.ok:
        return None
    if run.last_error is not None and entry.round == run.rounds[-1].round:
        return f"{run.last_error.phase}: {run.last_error.message}"
    return f"round {entry.round} ended {entry.status}"


def _from_run(run_dir: Path) -> list[Recorded]:
    """One cell per round of the run; a run that failed before its first round is one failed cell."""
    run = read_run(run_dir)
    target = run.target.spec
    if not run.rounds:
        error = f"{run.last_error.phase}: {run.last_error.message}" if run.last_error else None
        return [
            Recorded(target, run.llm or "-", False, error=error or f"the run is {run.status}, with no round")
        ]
    return [
        Recorded(
            target=target,
            llm=entry.llm or "-",
            ok=entry.ok,
            score=entry.score,
            metrics=round_metrics(entry),
            error=_round_error(run, entry),
        )
        for entry in run.rounds
    ]
