"""What the CLI prints about runs: the ``runs`` table, the ``show`` timeline, and the line that reports one
transition. Finding and reading runs is :mod:`fsm_runner.evidence.store`; the live side of ``run`` and
``replay`` is :mod:`fsm_runner.cli.live`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsm_runner.engine import topology
from fsm_runner.evidence.layout import RESULT_SUFFIX, ROUND_METRICS, round_file
from fsm_runner.evidence.records import ErrorInfo, Outcome, RoundRecord, TransitionRecord
from fsm_runner.evidence.store import RunInfo, read_run, run_info, whole_journal

_PHASE_TRIGGERS = (topology.PHASE_DONE, topology.PHASE_SKIPPED, topology.PHASE_FAILED)
_INDENT = " " * 10


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
    header = ("RUN ID", "STATUS", "FAILED PHASE", "ROUNDS", "SCORE", "DURATION", "LLM", "REDRIVES")
    rows = [
        (
            i.run_id,
            i.status,
            i.failed_phase or "-",
            str(i.rounds) if i.rounds else "-",
            fmt_score(i.score),
            fmt_seconds(i.duration_s) if i.status != "unreadable" else "-",
            i.llm or "-",
            str(i.redrive_count),
        )
        for i in infos
    ]
    return _table(header, rows)


def _duration(outcome: Outcome | None) -> str:
    if outcome is None or outcome.status == "skipped":
        return ""
    return fmt_seconds(outcome.duration_s)


def _status_of(record: TransitionRecord) -> str:
    failing = record.dest in (topology.FAILED, topology.REPAIR)
    if failing and record.trigger in (topology.PHASE_DONE, topology.PHASE_FAILED):
        return "failed"
    return record.outcome.status if record.outcome else record.trigger


def _note(record: TransitionRecord) -> str:
    if record.dest == topology.REPAIR:
        return f"  (repairs used {record.repairs_used}/{record.repair_iters})"
    if record.trigger not in _PHASE_TRIGGERS:
        return f"  [{record.trigger}{': ' + record.reason if record.reason else ''}]"
    return f"  ({record.reason})" if record.reason else ""


def _error_block(error: ErrorInfo, label: str, indent: str) -> list[str]:
    lines = str(f"{error.kind}: {error.message}").splitlines() or [""]
    pad = indent + " " * len(label)
    out = [f"{indent}{label}{lines[0]}", *(f"{pad}{line}" for line in lines[1:])]
    if error.evidence:
        out.append(f"{indent}{'evidence: ' if indent else 'evidence '}{error.evidence}")
    return out


def _error_lines(record: TransitionRecord) -> list[str]:
    if record.trigger == topology.CLEANUP:  # the run's own error was shown when it failed
        error = record.outcome.error if record.outcome else None
        return _error_block(error, "teardown failed: ", _INDENT) if error else []
    error = record.failure
    return _error_block(error, "error: ", _INDENT) if error else []


def transition_lines(record: TransitionRecord, elapsed: float) -> list[str]:
    """How ``run`` and ``replay`` report one transition as it happens."""
    moved = f"{record.source} -> {record.dest}"
    duration = _duration(record.outcome)
    head = f"[{elapsed:6.1f}s] {moved:<28} {_status_of(record):<8} {duration:>7}{_note(record)}"
    return [head.rstrip(), *_repair_lines(record.outcome), *_error_lines(record)]


def _repair_lines(outcome: Outcome | None) -> list[str]:
    """What a repair changed and what the guardrails undid, where a person will see it."""
    if outcome is None or outcome.phase != "repair":
        return []
    lines = []
    for key, label in (("changed", "changed"), ("reverted", "reverted by the guardrails")):
        paths = outcome.data.get(key)
        if paths and isinstance(paths, list):  # phase outputs are free-form JSON: show only what fits
            lines.append(f"{_INDENT}{label}: {', '.join(str(p) for p in paths)}")
    return lines


def _command_lines(outcome: Outcome | None) -> list[str]:
    lines = []
    for cmd in outcome.commands if outcome else ():
        flags = " TIMED OUT" if cmd.timed_out else ""
        flags += f" BLOCKED ({cmd.blocked})" if cmd.blocked else ""
        result = cmd.result or ""
        if result and cmd.exit_code not in (0, None) and result.endswith(RESULT_SUFFIX):
            result = result.removesuffix(RESULT_SUFFIX) + ".{json,stdout,stderr}"
        lines.append(
            f"{_INDENT}cmd {cmd.index} try {cmd.attempt}  exit {cmd.exit_code}{flags}  "
            f"{fmt_seconds(cmd.duration_s)}  {result}".rstrip()
        )
    return lines


def _guard_text(record: TransitionRecord) -> str:
    # failed_in_<phase> guards only pick the retry target: show the one that held.
    shown = {n: v for n, v in record.guards.items() if v or not n.startswith("failed_in_")}
    return ", ".join(f"{name}={'yes' if value else 'no'}" for name, value in shown.items())


_SHOWN_JSON = 100


def _short_metrics(metrics: dict[str, Any]) -> str:
    """The top-level numbers and words of a metrics object (``ok=true score=0.75``); the file has the rest."""
    shown = [
        f"{key}={json.dumps(value, ensure_ascii=False)}"
        for key, value in metrics.items()
        if value is None or isinstance(value, (bool, int, float, str))
    ]
    text = " ".join(shown)
    return text if len(text) <= _SHOWN_JSON else text[: _SHOWN_JSON - 3] + "..."


def round_lines(record: RoundRecord) -> list[str]:
    """One round of a session: its model, how it ended, its phases and the outputs it kept."""
    head = f"round {record.round:<3} {record.status:<8} llm {record.llm or '-'}  mode {record.mode}"
    if record.score is not None:
        head += f"  score {fmt_score(record.score)}"
    pad = " " * 10
    lines = [head, f"{pad}phases   {', '.join(record.phases) or '-'}"]
    if record.samples:
        lines.append(f"{pad}samples  {record.samples}  ({record.sample_count} samples)")
    for phase, metrics in (("evaluate", record.metrics), ("benchmark", record.benchmark)):
        if metrics is not None:
            label = "metrics " if phase == "evaluate" else "bench   "
            lines.append(
                f"{pad}{label} {round_file(record.round, ROUND_METRICS[phase])}  {_short_metrics(metrics)}"
            )
    lines.append(f"{pad}time     {record.started} -> {record.finished or '...'}")
    return lines


def timeline_lines(run_dir: Path) -> list[str]:
    """``fsm-runner show``: the run's header, then every transition with its commands and evidence."""
    run = read_run(run_dir)
    records = whole_journal(run_dir)
    info = run_info(run_dir)
    target = run.target
    status = info.status + (f" in {info.failed_phase}" if info.failed_phase else "")
    commit = f" {target.commit[:12]}" if target.commit else ""
    place = str(target.repo_root)
    if target.clone is not None:  # a git URL: its own checkout, removed once the run ended well
        place = f"{target.url}  checkout {place}" + ("" if target.repo_root.exists() else " (removed)")
    lines = [
        f"run      {info.run_id}",
        f"status   {status}" + (f"  (replayed {info.redrive_count}x)" if info.redrive_count else ""),
        f"target   {place}  ({target.kind}{commit})",
        f"llm      {run.llm or '-'}  mode {run.mode or '-'}",
    ]
    if info.score is not None:
        lines.append(f"score    {fmt_score(info.score)}")
    if run.last_error and info.status != "ok":
        lines += _error_block(run.last_error, "error    ", "")
    lines.append(f"run dir  {run_dir}")
    for one in run.rounds:
        lines += ["", *round_lines(one)]
    lines += [
        "",
        f"{'#':>3}  {'time':<8}  {'transition':<28} {'status':<8} {'duration':>8}",
    ]
    for record in records:
        moved = f"{record.source} -> {record.dest}"
        head = f"{record.seq:>3}  {record.ts[11:19]:<8}  {moved:<28} {_status_of(record):<8} "
        lines.append((head + f"{_duration(record.outcome):>8}" + _note(record)).rstrip())
        if record.guards:
            lines.append(f"{_INDENT}guards: {_guard_text(record)}")
        lines += _repair_lines(record.outcome) + _command_lines(record.outcome) + _error_lines(record)
    lines.append(f"total {fmt_seconds(info.duration_s)} in phases, {len(records)} transitions")
    return lines


def timeline_json(run_dir: Path) -> dict[str, Any]:
    run = read_run(run_dir)
    records = whole_journal(run_dir)
    return {
        "run_dir": str(run_dir),
        "run": run.state_json(),
        "summary": run_info(run_dir).to_json(),
        "rounds": [r.to_json() for r in run.rounds],
        "journal": [r.to_json() for r in records],
    }
