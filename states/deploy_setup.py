"""deploy_setup: start the service under test; whatever it leaves running is recorded for teardown."""

from __future__ import annotations

import time

from fsm_runner.contract.pipeline import DeploySpec
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.deployment import end_deployment
from fsm_runner.engine.outcome import Outcome
from fsm_runner.evidence.layout import stage_dir_name
from fsm_runner.execution.outputs import cap_stage_outputs
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
        mask_deploy_output(ctx)
        ctx.deployed_at = time.monotonic()
        ctx.health_passed_at = None
        deploy = ctx.pipeline.deploy
        if deploy is not None and deploy.setup_cmds:
            # Set before any command runs: a deploy that fails or is interrupted half-way still gets teardown.
            ctx.deployed = True
            ctx.deployed_llm = ctx.llm
        return super().run(ctx)


def mask_deploy_output(ctx: RunContext) -> None:
    """Mask secrets in the evidence of every deploy of the run; call it only once the services those deploys
    started are gone, since masking replaces a file that holds a secret and a service still writing to it
    would go on writing to the replaced one (and its lines would be lost)."""
    for count in range(1, ctx.runs_of_phase.get(DeploySetupPhase.name, 0) + 1):
        stage_dir = ctx.run_dir / stage_dir_name(DeploySetupPhase.name, count)
        if stage_dir.is_dir():
            ctx.redactor.mask_tree(stage_dir)
            cap_stage_outputs(stage_dir, ctx.pipeline.artifacts.max_output_bytes)
