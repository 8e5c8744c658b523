"""health: poll the health commands with backoff until they pass or the deploy timeout runs out."""

from __future__ import annotations

import time

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo, Outcome, skipped
from fsm_runner.engine.phase import finish
from fsm_runner.evidence.layout import attempt_name
from fsm_runner.execution.commands import CommandResult, StageRun, run_command

FIRST_DELAY = 0.02
MAX_DELAY = 0.1
DEFAULT_WINDOW = 60.0
#: Polls whose commands the journal lists; after them only the last poll is listed (all are on disk).
FIRST_POLLS_KEPT = 3


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
        last = None
        first: list[CommandResult] = []  # the journal keeps the first polls and the last one
        this_poll: list[CommandResult] = []
        while True:
            poll += 1
            passed = True
            this_poll = []
            for index, cmd in enumerate(cmds, start=1):
                remaining = max(0.5, deadline - time.monotonic())
                ctx.command_started(self.name, cmd, index, poll, total=len(cmds), out_dir=stage_dir)
                last = run_command(
                    cmd,
                    cwd=cwd,
                    env=env,
                    out_dir=stage_dir,
                    name=attempt_name(index, poll),
                    timeout=remaining,
                    policy=policy,
                    redactor=ctx.redactor,
                    index=index,
                    attempt=poll,
                    sandbox=ctx.command_sandbox(),
                )
                ctx.command_ended(self.name, last)
                (first if poll <= FIRST_POLLS_KEPT else this_poll).append(last)
                if not last.ok:
                    passed = False
                    break
            if passed:
                ctx.health_passed_at = time.monotonic()
                ctx.log.bind(phase=self.name).info("health.passed", polls=poll)
                run = StageRun(ok=True, results=(*first, *this_poll))
                return finish(ctx, self.name, stage_dir, started, run, data={"polls": poll})
            if last is not None and last.blocked:
                break
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(MAX_DELAY, delay * 1.6)
        tail = last.tail.strip().splitlines()[-5:] if last else []
        message = f"guard is_healthy: no health command passed within {window:.1f}s ({poll} polls)"
        if last is not None and last.blocked:
            message = f"health command blocked: {last.blocked}"
        if tail:
            message += "; last output:\n  | " + "\n  | ".join(tail)
        evidence = (last.stderr_path or last.result_path) if last else None
        error = ErrorInfo("unhealthy", message, self.name, evidence)
        run = StageRun(ok=False, results=(*first, *this_poll))
        return finish(ctx, self.name, stage_dir, started, run, error=error, data={"polls": poll})
