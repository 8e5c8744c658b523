"""deploy_setup: start the service under test; whatever it leaves running is recorded for teardown."""

from __future__ import annotations

import time

from fsm_runner.contract.pipeline import DeploySpec
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.deployment import end_deployment
from fsm_runner.engine.outcome import Outcome
from fsm_runner.states._command import CommandPhase


class DeploySetupPhase(CommandPhase[DeploySpec]):
    """Background groups are registered by the context as each command ends (see ``command_ended``)."""

    name = "deploy_setup"
    section_name = "deploy"
    keep_background = True

    def commands(self, section: DeploySpec) -> tuple[str, ...]:
        return tuple(section.setup_cmds)

    def run(self, ctx: RunContext) -> Outcome:
        # Deploying again (after a failed deploy, a repair or a new model): the old service goes first.
        end_deployment(ctx)
        ctx.deployed_at = time.monotonic()
        ctx.health_passed_at = None
        deploy = ctx.pipeline.deploy
        if deploy is not None and deploy.setup_cmds:
            # Set before any command runs: a deploy that fails or is interrupted half-way still gets teardown.
            ctx.deployed = True
            ctx.deployed_llm = ctx.llm
        return super().run(ctx)
