"""Finding runs and reading them back: the one place run directories are listed, resolved and loaded.

Everything here reads ``run.json`` and ``journal.jsonl`` only (through their typed records), so it never
depends on the process that wrote a run still being alive, and a damaged file gives the same error to
every reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.journal import JournalRead, read_journal
from fsm_runner.evidence.layout import EVENTS, JOURNAL, RUN_JSON
from fsm_runner.evidence.lock import lock_holder
from fsm_runner.evidence.records import RunState, TransitionRecord

LATEST = "latest"


# -- finding runs ----------------------------------------------------------------------------------------


def _started(run_dir: Path) -> float:
    """When the run's first event was logged; orders runs whose ids share a second (ids are whole seconds)."""
    try:
        with (run_dir / EVENTS).open("rb") as handle:
            return float(json.loads(handle.readline(4096))["ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def list_runs(root: Path) -> list[Path]:
    """Run directories under ``root``, newest first (run ids start with their UTC creation time)."""
    try:
        entries = list(root.iterdir()) if root.is_dir() else []
    except OSError as exc:
        raise EvidenceError(f"cannot list runs in {root}: {exc.strerror or exc}") from None
    runs = [p for p in entries if _is_run_dir(p)]
    return sorted(runs, key=lambda p: (p.name.split("-", 1)[0], _started(p), p.name), reverse=True)


def _is_run_dir(path: Path) -> bool:
    """A directory holding a run.json or a journal; one that cannot be looked into is listed too (so
    ``runs`` can say it is unreadable rather than hide it)."""
    try:
        return path.is_dir() and ((path / RUN_JSON).is_file() or (path / JOURNAL).is_file())
    except OSError:
        return True


def resolve_run(spec: str, root: Path, *, start_hint: str = ".") -> Path:
    """A run directory from a path, a run id (or a unique prefix of one), or ``latest`` under ``root``."""
    path = Path(spec).expanduser()
    if spec != LATEST and _is_run_dir(path) and path.exists():
        return path.resolve()
    runs = list_runs(root)
    if spec == LATEST:
        if not runs:
            raise UsageError(f"no runs under {root}; start one with `fsm-runner run {start_hint}`")
        return runs[0]
    if (root / spec).is_dir():
        return root / spec
    matches = [p for p in runs if p.name.startswith(spec)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:5])
        raise UsageError(f"run {spec!r} is ambiguous under {root}: {names}")
    where = "a run directory, a run id, or `latest`"
    raise UsageError(f"no run {spec!r} under {root} (expected {where}; list runs with `fsm-runner runs`)")


# -- reading a run ---------------------------------------------------------------------------------------


def read_run(run_dir: Path) -> RunState:
    """run.json as a :class:`RunState`, or an :class:`EvidenceError` naming the file and what is wrong."""
    path = run_dir / RUN_JSON
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if (run_dir / JOURNAL).is_file():
            raise EvidenceError(f"{path} is missing (the runner stopped before writing it)") from None
        raise EvidenceError(f"{run_dir}: no {RUN_JSON}; this is not a run directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise EvidenceError(f"{path}: cannot read: {detail}") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise EvidenceError(f"{path}: nested too deeply to be a run.json") from None
    except ValueError as exc:
        raise EvidenceError(f"{path}: not valid JSON ({exc})") from None
    return RunState.from_json(data, str(path))


def read_records(run_dir: Path) -> JournalRead:
    """The journal's records; a missing journal is a problem, not an exception."""
    path = run_dir / JOURNAL
    try:
        if not path.is_file():
            return JournalRead((), problem=f"{path} does not exist")
        return read_journal(path)
    except OSError as exc:
        return JournalRead((), problem=f"{path}: cannot read: {exc.strerror or exc}")
    except EvidenceError as exc:
        return JournalRead((), problem=str(exc))


def whole_journal(run_dir: Path) -> tuple[TransitionRecord, ...]:
    """Every record, or an :class:`EvidenceError` when any line but a torn last one is damaged."""
    read = read_records(run_dir)
    if read.problem and not read.torn:
        raise EvidenceError(read.problem)
    return read.records


# -- one row of `fsm-runner runs` ------------------------------------------------------------------------


def _score(run: RunState) -> Any:
    """The last round's score (a run.json from before rounds were recorded: the last evaluation's)."""
    if run.rounds:
        return run.rounds[-1].score
    metrics = (run.outputs.get("evaluate") or {}).get("metrics")
    return metrics.get("score") if isinstance(metrics, dict) else None


@define(frozen=True)
class RunInfo:
    """A run at a glance; ``duration_s`` is the time spent in phases (replays add to it). ``score`` and
    ``llm`` are the last round's; ``rounds`` counts the session's rounds."""

    run_id: str
    run_dir: Path
    status: str
    failed_phase: str | None = None
    score: Any = None
    duration_s: float = 0.0
    llm: str | None = None
    mode: str | None = None
    redrive_count: int = 0
    problem: str | None = None
    rounds: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "status": self.status,
            "failed_phase": self.failed_phase,
            "score": self.score,
            "duration_s": round(self.duration_s, 4),
            "llm": self.llm,
            "mode": self.mode,
            "redrive_count": self.redrive_count,
            "problem": self.problem,
            "rounds": self.rounds,
        }


def run_info(run_dir: Path) -> RunInfo:
    """Summarise a run; a damaged run is ``unreadable`` with the problem, never an exception."""
    try:
        run = read_run(run_dir)
    except EvidenceError as exc:
        return RunInfo(run_dir.name, run_dir, "unreadable", problem=str(exc))
    read = read_records(run_dir)
    status = run.status
    if status == "running" and lock_holder(run_dir) is None:
        status = "stale"  # the process that ran it is gone without recording an end
    problem = read.problem if read.problem and not read.torn else None
    if problem:
        status = "unreadable"
    failed = run.failed_phase or (run.last_error.phase if run.last_error else None)
    return RunInfo(
        run_id=run.run_id,
        run_dir=run_dir,
        status=status,
        failed_phase=failed if status in ("failed", "interrupted", "stale") else None,
        score=_score(run),
        duration_s=sum(r.outcome.duration_s for r in read.records if r.outcome),
        llm=run.llm,
        mode=run.mode,
        redrive_count=run.redrive_count,
        problem=problem,
        rounds=len(run.rounds),
    )
