"""The phase protocol ``states/`` implements, and the helpers phases share."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from fsm_runner.context import RunContext
from fsm_runner.execution import StageRun
from fsm_runner.outcome import FAILED, OK, ErrorInfo, Outcome

SUMMARY_NAME = "summary.json"


class Phase(Protocol):
    """One pipeline phase. ``run`` does the work and reports; the driver decides where to go next."""

    name: str

    def run(self, ctx: RunContext) -> Outcome: ...


def command_error(phase: str, run: StageRun) -> ErrorInfo:
    last = run.results[-1] if run.results else None
    if run.budget_exceeded:
        kind = "budget"
    elif last is not None and last.blocked:
        kind = "blocked"
    elif last is not None and last.timed_out:
        kind = "timeout"
    else:
        kind = "command"
    evidence = None
    if last is not None:
        evidence = last.stderr_path or last.result_path
    message = run.error or "a command failed"
    if message.startswith(f"{phase}: "):  # ErrorInfo prints the phase itself
        message = message[len(phase) + 2 :]
    if last is not None and last.tail.strip() and kind in ("command", "timeout"):
        lines = last.tail.strip().splitlines()
        start = max(0, len(lines) - 5)
        if start and not lines[start].strip(" ^~"):  # a caret line means nothing without its source line
            start -= 1
        tail = lines[start:]
        message += "\n  | " + "\n  | ".join(tail)
    return ErrorInfo(kind=kind, message=message, phase=phase, evidence=evidence)


def finish(
    ctx: RunContext,
    phase: str,
    stage_dir: Path,
    started: float,
    run: StageRun | None,
    *,
    data: dict[str, Any] | None = None,
    error: ErrorInfo | None = None,
) -> Outcome:
    """Turn a stage run into an outcome and write ``<phase>/summary.json``."""
    commands = tuple(r.to_json() for r in run.results) if run else ()
    if error is None and run is not None and not run.ok:
        error = command_error(phase, run)
    outcome = Outcome(
        phase=phase,
        status=FAILED if error else OK,
        duration_s=time.monotonic() - started,
        commands=tuple(
            {
                "index": c.get("index"),
                "attempt": c.get("attempt"),
                "exit_code": c.get("exit_code"),
                "duration_s": c.get("duration_s"),
                "timed_out": c.get("timed_out"),
                "blocked": c.get("blocked"),
                "result": ctx.relpath(c["result_path"]) if c.get("result_path") else None,
            }
            for c in commands
        ),
        error=error,
        data=data or {},
    )
    summary = outcome.to_json()
    summary["stage_dir"] = str(stage_dir)
    if run is not None:
        summary["budget_exceeded"] = run.budget_exceeded
    ctx.write_json(stage_dir / SUMMARY_NAME, summary)
    return outcome
