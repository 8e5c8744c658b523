"""The phase protocol ``states/`` implements, the repair protocol the repair phase calls, and the helper that
turns a stage run into an outcome."""

from __future__ import annotations

import fnmatch
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from attrs import define

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import FAILED, OK, CommandRef, ErrorInfo, Outcome
from fsm_runner.evidence.confine import open_regular
from fsm_runner.evidence.layout import ATTEMPT_RESULT_GLOB, SUMMARY
from fsm_runner.execution.commands import StageRun


class Phase(Protocol):
    """One pipeline phase. ``run`` does the work and reports; the driver decides where to go next."""

    name: str

    def run(self, ctx: RunContext) -> Outcome: ...


@define(frozen=True)
class RepairReport:
    """What one repair did: the agent's verdict, what it changed, what the guardrails undid."""

    agent_ok: bool
    summary: str
    output_path: str | None = None
    changed: tuple[str, ...] = ()
    reverted: tuple[str, ...] = ()
    pipeline_restored: bool = False
    #: A failure of the repair itself (the agent, its actions.yml, or the guardrails), not of the phase.
    error: ErrorInfo | None = None


class Repairer(Protocol):
    """Runs one repair of ``failure`` for the repair phase, with ``work_dir`` as its evidence dir.

    :mod:`fsm_runner.repair` provides it; the engine only knows this shape, so the phases never import the
    agents, the prompt or the guardrails.
    """

    def repair(self, ctx: RunContext, work_dir: Path, failure: ErrorInfo) -> RepairReport: ...


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
        evidence = last.output_path
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
    """Turn a stage run into an outcome and write ``<phase>/summary.json``.

    Secrets are masked in every file of ``stage_dir`` first (commands may write there, through
    ``$AIDER_FSM_ARTIFACTS_DIR``), unless a service the stage started still runs and writes to them: then
    teardown masks them once it has ended the service.
    """
    if run is None or not run.background_pgids:
        ctx.redactor.mask_tree(stage_dir, skip=_masked_already(stage_dir, run))
    commands = tuple(
        CommandRef(
            index=r.index,
            attempt=r.attempt,
            exit_code=r.exit_code,
            duration_s=round(r.duration_s, 6),
            timed_out=r.timed_out,
            blocked=r.blocked,
            result=ctx.relpath(r.result_path) if r.result_path else None,
        )
        for r in (run.results if run else ())
    )
    if error is None and run is not None and not run.ok:
        error = command_error(phase, run)
    outcome = Outcome(
        phase=phase,
        status=FAILED if error else OK,
        duration_s=round(time.monotonic() - started, 4),
        commands=commands,
        error=error,
        data=data or {},
    )
    summary = outcome.to_json()
    summary["stage_dir"] = str(stage_dir)
    if run is not None:
        summary["budget_exceeded"] = run.budget_exceeded
    ctx.write_json(stage_dir / SUMMARY, summary)
    return outcome


def recorded_commands(ctx: RunContext, stage_dir: Path) -> tuple[CommandRef, ...]:
    """The command attempts a stage recorded in its ``cmdNN_tryMM.json`` files, for a stage a signal ended
    before it could report them (the one cut while running has no exit code)."""
    try:
        names = fnmatch.filter(os.listdir(stage_dir), ATTEMPT_RESULT_GLOB)
    except OSError:
        return ()
    refs = []
    for name in names:
        try:
            with open_regular(stage_dir / name) as fh:  # a command may have left anything there
                doc = json.loads(fh.read())
        except (OSError, ValueError):
            continue
        if (
            not isinstance(doc, dict)
            or type(doc.get("index")) is not int
            or type(doc.get("attempt")) is not int
        ):
            continue
        exit_code, duration, blocked = doc.get("exit_code"), doc.get("duration_s"), doc.get("blocked")
        if type(duration) is not float:
            duration = float(duration) if type(duration) is int else 0.0
        refs.append(
            CommandRef(
                index=doc["index"],
                attempt=doc["attempt"],
                exit_code=exit_code if type(exit_code) is int else None,
                duration_s=duration,
                timed_out=doc.get("timed_out") is True,
                blocked=blocked if isinstance(blocked, str) else None,
                result=ctx.relpath(stage_dir / name),
            )
        )
    return tuple(sorted(refs, key=lambda ref: (ref.index, ref.attempt)))


def _masked_already(stage_dir: Path, run: StageRun | None) -> list[str]:
    """The attempt files the command runner masked when each command ended (relative to ``stage_dir``)."""
    done = []
    for result in run.results if run else ():
        if result.pgid is None:
            for path in (result.stdout_path, result.stderr_path, result.result_path):
                if path:
                    done.append(Path(os.path.relpath(path, stage_dir)).as_posix())
    return done
