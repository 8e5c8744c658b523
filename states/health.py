"""health: poll the health commands with backoff until they pass, the deploy timeout runs out, or the
services deploy started have all exited.

Only the first and the latest poll keep their files (a long window would otherwise leave thousands); the
outcome counts the polls in between, whose files were removed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.deployment import (
    DeployOutput,
    ServicesExited,
    ServiceWatch,
    deploy_outputs,
    redirect_targets,
)
from fsm_runner.engine.outcome import ErrorInfo, Outcome, skipped
from fsm_runner.engine.phase import finish
from fsm_runner.evidence.layout import attempt_name
from fsm_runner.execution.commands import CommandResult, StageRun, run_command
from fsm_runner.execution.policy import SecurityPolicy

FIRST_DELAY = 0.02
MAX_DELAY = 0.1
DEFAULT_WINDOW = 60.0
#: Lines of output an error quotes (per deploy command).
QUOTED_LINES = 5


class HealthPhase:
    name = "health"

    def run(self, ctx: RunContext) -> Outcome:
        deploy = ctx.pipeline.deploy
        cmds = tuple(deploy.health_cmds) if deploy else ()
        if not cmds:
            return skipped(self.name, "pipeline.yml has no deploy.health_cmds")
        assert deploy is not None
        started = time.monotonic()
        stage_dir = ctx.new_stage_dir(self.name)
        window = ctx.cmd_timeout(deploy.timeout_seconds or DEFAULT_WINDOW)
        deadline = started + window
        env = ctx.stage_env(self.name, stage_dir, dict(deploy.env))
        cwd = ctx.workdir(deploy.workdir)
        policy = ctx.policy()
        delay = FIRST_DELAY
        poll = 0
        exited: ServicesExited | None = None
        watch = ServiceWatch()
        first: list[CommandResult] = []  # poll 1 and the latest poll keep their files and are journaled
        this_poll: list[CommandResult] = []
        while True:
            poll += 1
            if poll > 2:
                _discard(this_poll)  # the previous poll: neither the first nor the last
            this_poll = self._poll(ctx, cmds, poll, cwd, env, stage_dir, deadline, policy)
            if poll == 1:
                first, this_poll = this_poll, []
            last = this_poll[-1] if this_poll else first[-1]
            data: dict[str, Any] = {"polls": poll, "polls_discarded": max(0, poll - 2)}
            run = StageRun(ok=last.ok, results=(*first, *this_poll))
            if last.ok:
                ctx.health_passed_at = time.monotonic()
                ctx.log.bind(phase=self.name).info("health.passed", polls=poll)
                return finish(ctx, self.name, stage_dir, started, run, data=data)
            if last.blocked:
                break
            exited = watch.exited(ctx)  # a service that crashed will not become healthy: say so now
            if exited is not None:
                break
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(MAX_DELAY, delay * 1.6)
        if exited is not None:
            data["services_exited"] = {"pgids": list(exited.pgids), "exit_codes": list(exited.exit_codes)}
            error = _exited_error(ctx, exited, poll, time.monotonic() - started)
            return finish(ctx, self.name, stage_dir, started, run, error=error, data=data)
        tail = last.tail.strip().splitlines()[-QUOTED_LINES:]
        message = f"guard is_healthy: no health command passed within {window:.1f}s ({poll} polls)"
        if last.blocked:
            message = f"health command blocked: {last.blocked}"
        if tail:
            message += "; last output:\n  | " + "\n  | ".join(tail)
        if not last.blocked and ctx.deployed:
            # A service that died while deploy still ran left no group to watch: its last words are here.
            message += "".join(_quoted(ctx, out, "the deploy's output") for out in deploy_outputs(ctx))
        error = ErrorInfo("unhealthy", message, self.name, last.output_path)
        return finish(ctx, self.name, stage_dir, started, run, error=error, data=data)

    def _poll(
        self,
        ctx: RunContext,
        cmds: Sequence[str],
        poll: int,
        cwd: Path,
        env: dict[str, str],
        stage_dir: Path,
        deadline: float,
        policy: SecurityPolicy,
    ) -> list[CommandResult]:
        """One poll: the health commands in order, up to the first that fails."""
        results: list[CommandResult] = []
        for index, cmd in enumerate(cmds, start=1):
            ctx.command_started(self.name, cmd, index, poll, total=len(cmds), out_dir=stage_dir)
            result = run_command(
                cmd,
                cwd=cwd,
                env=env,
                out_dir=stage_dir,
                name=attempt_name(index, poll),
                timeout=max(0.5, deadline - time.monotonic()),
                policy=policy,
                redactor=ctx.redactor,
                index=index,
                attempt=poll,
                sandbox=ctx.command_sandbox(),
                max_output_bytes=ctx.pipeline.artifacts.max_output_bytes,
            )
            ctx.command_ended(self.name, result)
            results.append(result)
            if not result.ok:
                break
        return results


def _discard(results: Sequence[CommandResult]) -> None:
    """Remove the files of a poll that is neither the first nor the last."""
    for result in results:
        for path in (result.result_path, result.stdout_path, result.stderr_path):
            if path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def _quoted(ctx: RunContext, output: DeployOutput, what: str) -> str:
    """The last lines of one deploy command's output, for an error message ("" when it left none)."""
    lines = output.tail.strip().splitlines()[-QUOTED_LINES:]
    if not lines or output.path is None:
        return ""
    return f"; {what} ({ctx.relpath(output.path)}):\n  | " + "\n  | ".join(lines)


def _exited_error(ctx: RunContext, exited: ServicesExited, polls: int, elapsed: float) -> ErrorInfo:
    """The services deploy started are all gone: say so with how they ended and the end of their output."""
    codes = sorted(set(exited.exit_codes) - {0}) or sorted(set(exited.exit_codes))
    how = f" (exit code {', '.join(map(str, codes))})" if codes else " (exit code unknown)"
    message = (
        f"the deploy's services exited{how} before a health command passed ({polls} polls in "
        f"{elapsed:.1f}s): no process of the deploy's process groups {', '.join(map(str, exited.pgids))} "
        "is running; fix the service or the deploy command and run again"
    )
    evidence = None
    for output in exited.outputs:
        quoted = _quoted(ctx, output, "its output")
        if quoted:
            evidence = evidence or output.path
            message += quoted
    if evidence is None:
        logs = [path for output in exited.outputs for path in redirect_targets(output)]
        message += f"; they left no output in the deploy's evidence ({ctx.relpath(exited.stage_dir)})"
        if logs:
            message += f": the deploy command sends it to {', '.join(dict.fromkeys(logs))}"
        evidence = exited.stage_dir
    return ErrorInfo("unhealthy", message, "health", evidence)
