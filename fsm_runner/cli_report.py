"""What the CLI prints about past runs: finding a run, the ``runs`` table, the ``show`` timeline, and the
line that reports one transition. The live side of ``run`` and ``replay`` is in :mod:`fsm_runner.cli_live`.

Reports read ``run.json`` and ``journal.jsonl`` only, so they never depend on the process that wrote the
run still being alive.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner import machine as topology
from fsm_runner.context import RUN_JSON
from fsm_runner.contract.pipeline import load_pipeline
from fsm_runner.errors import ContractError, UsageError
from fsm_runner.journal import JOURNAL_NAME, read_journal
from fsm_runner.lifecycle import LOCK_NAME
from fsm_runner.logs import EVENTS_NAME

DEFAULT_OUT_DIR = ".aider_fsm/artifacts"
LATEST = "latest"
_PHASE_TRIGGERS = (topology.PHASE_DONE, topology.PHASE_SKIPPED, topology.PHASE_FAILED)
_INDENT = " " * 10


# -- finding runs ----------------------------------------------------------------------------------------


def artifacts_root(repo: Path, pipeline_rel: str = "pipeline.yml") -> Path:
    """Where ``repo`` keeps its runs: ``artifacts.out_dir`` of its pipeline.yml, else the default."""
    out_dir = DEFAULT_OUT_DIR
    with contextlib.suppress(ContractError, OSError):  # a broken contract must not hide its past runs
        out_dir = load_pipeline(repo, pipeline_rel).artifacts.out_dir
    return (repo / out_dir).resolve()


def _started(run_dir: Path) -> float:
    """When the run's first event was logged; orders runs whose ids share a second (ids are whole seconds)."""
    try:
        with (run_dir / EVENTS_NAME).open("rb") as handle:
            return float(json.loads(handle.readline(4096))["ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def list_runs(root: Path) -> list[Path]:
    """Run directories under ``root``, newest first (run ids start with their UTC creation time)."""
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and (p / RUN_JSON).is_file()]
    return sorted(runs, key=lambda p: (p.name.split("-", 1)[0], _started(p), p.name), reverse=True)


def resolve_run(spec: str, *, repo: Path, artifacts_dir: Path | None = None) -> Path:
    """A run directory from a path, a run id (or a unique prefix of one), or ``latest``."""
    path = Path(spec).expanduser()
    if spec != LATEST and path.is_dir() and ((path / RUN_JSON).is_file() or (path / JOURNAL_NAME).is_file()):
        return path.resolve()
    root = artifacts_dir.resolve() if artifacts_dir else artifacts_root(repo)
    runs = list_runs(root)
    if spec == LATEST:
        if not runs:
            raise UsageError(f"no runs under {root}; start one with `fsm-runner run {repo}`")
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


def read_run_json(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / RUN_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: no {RUN_JSON}; this is not a run directory") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{run_dir / RUN_JSON} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{run_dir / RUN_JSON} is not a JSON object")
    return data


def read_records(run_dir: Path) -> tuple[tuple[dict[str, Any], ...], str | None]:
    """The journal records that parse, and the problem with the rest (None when the journal is whole)."""
    path = run_dir / JOURNAL_NAME
    if not path.is_file():
        return (), f"{path} does not exist"
    read = read_journal(path)
    return read.records, read.problem


def _lock_alive(run_dir: Path) -> bool:
    """Whether the process recorded in the run's lock file still exists (read-only: never takes the lock)."""
    try:
        pid = int((run_dir / LOCK_NAME).read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _score(run: dict[str, Any]) -> Any:
    outputs = run.get("outputs") or {}
    metrics = (outputs.get("evaluate") or {}).get("metrics") or {}
    return metrics.get("score") if isinstance(metrics, dict) else None


def _phase_seconds(records: tuple[dict[str, Any], ...]) -> float:
    return sum(float((r.get("outcome") or {}).get("duration_s") or 0.0) for r in records)


@define(frozen=True)
class RunInfo:
    """One row of ``fsm-runner runs``; ``duration_s`` is the time spent in phases (replays add to it)."""

    run_id: str
    run_dir: Path
    status: str
    failed_phase: str | None
    score: Any
    duration_s: float
    llm: str | None
    mode: str | None
    redrive_count: int

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
        }


def run_info(run_dir: Path) -> RunInfo:
    try:
        run = read_run_json(run_dir)
    except UsageError:
        return RunInfo(run_dir.name, run_dir, "unreadable", None, None, 0.0, None, None, 0)
    records, _ = read_records(run_dir)
    status = str(run.get("status", "?"))
    if status == "running" and not _lock_alive(run_dir):
        status = "stale"  # the process that ran it is gone without recording an end
    failed = run.get("failed_phase") or (run.get("last_error") or {}).get("phase")
    return RunInfo(
        run_id=str(run.get("run_id", run_dir.name)),
        run_dir=run_dir,
        status=status,
        failed_phase=failed if status in ("failed", "interrupted", "stale") else None,
        score=_score(run),
        duration_s=_phase_seconds(records),
        llm=run.get("llm"),
        mode=run.get("mode"),
        redrive_count=int(run.get("redrive_count") or 0),
    )


# -- formatting ------------------------------------------------------------------------------------------


def fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_score(score: Any) -> str:
    if score is None:
        return "-"
    if isinstance(score, bool):
        return str(score).lower()
    if isinstance(score, float):
        text = f"{score:.4g}"
        return text if any(c in text for c in ".einf") else text + ".0"
    return str(score)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def runs_table(infos: list[RunInfo]) -> list[str]:
    header = ("RUN ID", "STATUS", "FAILED PHASE", "SCORE", "DURATION", "LLM", "REDRIVES")
    rows = [
        (
            i.run_id,
            i.status,
            i.failed_phase or "-",
            fmt_score(i.score),
            fmt_seconds(i.duration_s),
            i.llm or "-",
            str(i.redrive_count),
        )
        for i in infos
    ]
    return _table(header, rows)


def _indented(label: str, text: str) -> list[str]:
    lines = str(text).splitlines() or [""]
    return [f"{_INDENT}{label}{lines[0]}", *(f"{_INDENT}{' ' * len(label)}{line}" for line in lines[1:])]


def _duration(outcome: dict[str, Any]) -> str:
    if not outcome or outcome.get("status") == "skipped":
        return ""
    return fmt_seconds(float(outcome.get("duration_s") or 0.0))


def _status_of(record: dict[str, Any]) -> str:
    outcome = record.get("outcome") or {}
    failing = record.get("dest") in (topology.FAILED, topology.REPAIR)
    if failing and record.get("trigger") in (topology.PHASE_DONE, topology.PHASE_FAILED):
        return "failed"
    return str(outcome.get("status") or record.get("trigger", ""))


def _note(record: dict[str, Any]) -> str:
    trigger = record.get("trigger", "")
    reason = str(record.get("reason") or "")
    if record.get("dest") == topology.REPAIR:
        return f"  (repairs used {record.get('repairs_used', 0)}/{record.get('repair_iters', 0)})"
    if trigger not in _PHASE_TRIGGERS:
        return f"  [{trigger}{': ' + reason if reason else ''}]"
    if reason:
        return f"  ({reason})"
    return ""


def _error_lines(record: dict[str, Any]) -> list[str]:
    error = record.get("error") or (record.get("outcome") or {}).get("error")
    if not error or record.get("trigger") == topology.CLEANUP:
        return []
    lines = _indented("error: ", f"{error.get('kind')}: {error.get('message')}")
    if error.get("evidence"):
        lines += _indented("evidence: ", str(error["evidence"]))
    return lines


def transition_lines(record: dict[str, Any], elapsed: float) -> list[str]:
    """How ``run`` and ``replay`` report one transition as it happens."""
    outcome = record.get("outcome") or {}
    moved = f"{record.get('source')} -> {record.get('dest')}"
    duration = _duration(outcome)
    head = f"[{elapsed:6.1f}s] {moved:<28} {_status_of(record):<8} {duration:>7}{_note(record)}"
    return [head.rstrip(), *_repair_lines(outcome), *_error_lines(record)]


def _repair_lines(outcome: dict[str, Any]) -> list[str]:
    """What a repair changed and what the guardrails undid, where a person will see it."""
    if outcome.get("phase") != "repair":
        return []
    data = outcome.get("data") or {}
    lines = []
    if data.get("changed"):
        lines.append(f"{_INDENT}changed: {', '.join(data['changed'])}")
    if data.get("reverted"):
        lines.append(f"{_INDENT}reverted by the guardrails: {', '.join(data['reverted'])}")
    return lines


def _command_lines(outcome: dict[str, Any]) -> list[str]:
    lines = []
    for cmd in outcome.get("commands") or []:
        flags = " TIMED OUT" if cmd.get("timed_out") else ""
        flags += f" BLOCKED ({cmd['blocked']})" if cmd.get("blocked") else ""
        exit_code = cmd.get("exit_code")
        result = cmd.get("result") or ""
        if result and exit_code not in (0, None) and result.endswith(".json"):
            result = result[: -len(".json")] + ".{json,stdout,stderr}"
        duration = fmt_seconds(float(cmd.get("duration_s") or 0.0))
        lines.append(
            f"{_INDENT}cmd {cmd.get('index')} try {cmd.get('attempt')}  exit {exit_code}{flags}  "
            f"{duration}  {result}".rstrip()
        )
    return lines


def _guard_text(record: dict[str, Any]) -> str:
    guards = record.get("guards") or {}
    # failed_in_<phase> guards only pick the retry target: show the one that held.
    shown = {n: v for n, v in guards.items() if v or not n.startswith("failed_in_")}
    return ", ".join(f"{name}={'yes' if value else 'no'}" for name, value in shown.items())


def timeline_lines(run_dir: Path) -> list[str]:
    """``fsm-runner show``: the run's header, then every transition with its commands and evidence."""
    run = read_run_json(run_dir)
    records, problem = read_records(run_dir)
    info = run_info(run_dir)
    target = run.get("target") or {}
    status = info.status + (f" in {info.failed_phase}" if info.failed_phase else "")
    lines = [
        f"run      {info.run_id}",
        f"status   {status}" + (f"  (replayed {info.redrive_count}x)" if info.redrive_count else ""),
        f"target   {target.get('repo_root', '?')}  ({target.get('kind', '?')}"
        + (f" {target['commit'][:12]}" if target.get("commit") else "")
        + ")",
        f"llm      {run.get('llm') or '-'}  mode {run.get('mode') or '-'}",
    ]
    if info.score is not None:
        lines.append(f"score    {fmt_score(info.score)}")
    error = run.get("last_error")
    if error and info.status != "ok":
        lines += [
            line.replace(_INDENT, "", 1)
            for line in _indented("error    ", f"{error.get('kind')}: {error.get('message')}")
        ]
        if error.get("evidence"):
            lines.append(f"evidence {error['evidence']}")
    lines += [
        f"run dir  {run_dir}",
        "",
        f"{'#':>3}  {'time':<8}  {'transition':<28} {'status':<8} {'duration':>8}",
    ]
    for record in records:
        outcome = record.get("outcome") or {}
        ts = str(record.get("ts", ""))[11:19]
        moved = f"{record.get('source')} -> {record.get('dest')}"
        duration = _duration(outcome)
        head = f"{record.get('seq', '?'):>3}  {ts:<8}  {moved:<28} {_status_of(record):<8} {duration:>8}"
        lines.append((head + _note(record)).rstrip())
        if record.get("guards"):
            lines.append(f"{_INDENT}guards: {_guard_text(record)}")
        lines += _repair_lines(record.get("outcome") or {})
        lines += _command_lines(outcome) + _error_lines(record)
    lines.append(f"total {fmt_seconds(info.duration_s)} in phases, {len(records)} transitions")
    if problem:
        lines.append(f"warning: {problem}")
    return lines


def timeline_json(run_dir: Path) -> dict[str, Any]:
    records, problem = read_records(run_dir)
    return {
        "run_dir": str(run_dir),
        "run": read_run_json(run_dir),
        "summary": run_info(run_dir).to_json(),
        "journal": list(records),
        "journal_problem": problem,
    }
