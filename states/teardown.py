"""teardown: run the contract's teardown per policy and end every process group deploy left behind."""

from __future__ import annotations

import time
from pathlib import Path

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.deployment import end_deployment
from fsm_runner.engine.outcome import Outcome, skipped
from fsm_runner.engine.phase import finish
from fsm_runner.execution.commands import StageRun
from fsm_runner.states._kubectl import kubectl_dump
from fsm_runner.states.deploy_setup import mask_deploy_output

POLICY_RUNS = {
    "always": {"success", "failure"},
    "on_success": {"success"},
    "on_failure": {"failure"},
    "never": set(),
}


class TeardownPhase:
    name = "teardown"

    def run(self, ctx: RunContext) -> Outcome:
        deploy = ctx.pipeline.deploy
        if not ctx.deployed and not ctx.deploy_pgids:
            return skipped(self.name, "nothing is deployed")
        started = time.monotonic()
        stage_dir = ctx.new_stage_dir(self.name)
        result = "failure" if ctx.status in ("failed", "interrupted") else "success"
        policy = deploy.teardown_policy if deploy else "always"
        run: StageRun | None = None
        dump: dict[str, object] = {}
        killed: list[int] = []
        try:
            run, dump = self._contract_teardown(ctx, result, policy, stage_dir)
        finally:
            # Whatever the teardown commands did (or a second signal interrupting them), end the groups.
            killed = end_deployment(ctx)
            mask_deploy_output(ctx)  # what the services wrote until now, secrets masked
        data = {
            "policy": policy,
            "run_for": result,
            "teardown_cmds_ran": run is not None,
            "killed_pgids": killed,
            **dump,
        }
        return finish(ctx, self.name, stage_dir, started, run, data=data)

    def _contract_teardown(
        self, ctx: RunContext, result: str, policy: str, stage_dir: Path
    ) -> tuple[StageRun | None, dict[str, object]]:
        deploy = ctx.pipeline.deploy
        dump: dict[str, object] = {}
        run = None
        if deploy and deploy.kubectl_dump.enabled:
            dump = kubectl_dump(ctx, deploy.kubectl_dump, stage_dir, self.name)
        if deploy and deploy.teardown_cmds and result in POLICY_RUNS.get(policy, set()):
            run = ctx.run_stage(
                self.name,
                deploy.teardown_cmds,
                stage_dir,
                timeout_seconds=deploy.timeout_seconds,
                retries=deploy.retries,
                env=dict(deploy.env),
                workdir=deploy.workdir,
                service=True,  # in a sandbox, next to the services it stops
            )
        return run, dump
