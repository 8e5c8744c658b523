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
        return super().run(ctx)

    def record(self, ctx: RunContext, run: StageRun) -> None:
        # Even a failed deploy may have started something: teardown must still end it.
        ctx.deployed = True
        ctx.deploy_pgids.extend(p for p in run.background_pgids if p not in ctx.deploy_pgids)
