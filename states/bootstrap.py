"""bootstrap: prepare the repository (venv, deps) and compute the env every later stage receives."""

from __future__ import annotations

import time

from fsm_runner.contract.bootstrap import load_bootstrap
from fsm_runner.contract.envexpand import expand_env
from fsm_runner.engine.actions import run_actions
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import FAILED, ErrorInfo, Outcome, skipped
from fsm_runner.engine.phase import finish
from fsm_runner.errors import ContractError
from fsm_runner.evidence import layout


class BootstrapPhase:
    name = "bootstrap"

    def run(self, ctx: RunContext) -> Outcome:
        try:
            # Read again: a repair may have fixed it since setup.
            ctx.bootstrap = load_bootstrap(ctx.repo_root)
        except ContractError as exc:
            return Outcome(self.name, FAILED, error=ErrorInfo("contract", str(exc), self.name, exc.path))
        spec = ctx.bootstrap
        has_actions = (ctx.repo_root / layout.ACTIONS_REL).exists()
        if spec is None and not has_actions:
            return skipped(self.name, f"no {layout.BOOTSTRAP_REL}")
        started = time.monotonic()
        stage_dir = ctx.new_stage_dir(self.name)
        _, action_error = run_actions(ctx, self.name, stage_dir)
        if action_error is not None or spec is None:
            return finish(ctx, self.name, stage_dir, started, None, error=action_error)
        base = {**ctx.base_env, **ctx.env_overrides}
        ctx.bootstrap_env = expand_env(spec.env, base, ctx.repo_root)
        ctx.refresh_redactor()
        ctx.write_json(
            stage_dir / layout.BOOTSTRAP_SNAPSHOT,
            {
                "path": spec.path,
                "sha256": spec.sha256,
                "cmds": list(spec.cmds),
                "env": dict(spec.env),
                "workdir": spec.workdir,
                "timeout_seconds": spec.timeout_seconds,
                "retries": spec.retries,
            },
        )
        ctx.write_json(stage_dir / layout.APPLIED_ENV, ctx.redactor.redact_env(ctx.bootstrap_env))
        if not spec.cmds:
            return finish(
                ctx, self.name, stage_dir, started, None, data={"env_keys": sorted(ctx.bootstrap_env)}
            )
        run = ctx.run_stage(
            self.name,
            spec.cmds,
            stage_dir,
            timeout_seconds=spec.timeout_seconds,
            retries=spec.retries,
            workdir=spec.workdir,
        )
        return finish(ctx, self.name, stage_dir, started, run, data={"env_keys": sorted(ctx.bootstrap_env)})
