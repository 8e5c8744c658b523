"""deploy_setup: start the service under test; whatever it leaves running is recorded for teardown."""

from __future__ import annotations

import time
from typing import Any

from fsm_runner.context import RunContext
from fsm_runner.execution import StageRun
from fsm_runner.outcome import Outcome
from states.base import CommandPhase


class DeployPhase(CommandPhase):
    name = "deploy_setup"
    section_name = "deploy"
    keep_background = True

    def commands(self, section: Any) -> tuple[str, ...]:
        return tuple(section.setup_cmds)

    def run(self, ctx: RunContext) -> Outcome:
        ctx.deployed_at = time.monotonic()
        ctx.health_passed_at = None
        deploy = ctx.pipeline.deploy
        if deploy is not None and deploy.setup_cmds:
            # Set before any command runs: a deploy that fails or is interrupted half-way still gets teardown.
            ctx.deployed = True
        return super().run(ctx)

    def record(self, ctx: RunContext, run: StageRun) -> None:
        # run_stage has registered each background group as its command ended; this catches any left.
        for pgid in run.background_pgids:
            if pgid not in ctx.deploy_pgids:
                ctx.deploy_pgids.append(pgid)
