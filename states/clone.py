"""clone: the target was resolved (cloned or refreshed) by setup; this phase checks and records it."""

from __future__ import annotations

import time

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo, Outcome
from fsm_runner.engine.phase import finish
from fsm_runner.evidence.contract_copies import keep_contract_copies
from fsm_runner.evidence.layout import BOOTSTRAP_REL


class ClonePhase:
    name = "clone"

    def run(self, ctx: RunContext) -> Outcome:
        started = time.monotonic()
        stage_dir = ctx.new_stage_dir(self.name)
        error = None
        if not ctx.pipeline_path.is_file():
            error = ErrorInfo("contract", f"{ctx.pipeline_path} is missing", self.name)
        # The bytes behind the recorded hash: what a replay diffs against and restores from.
        keep_contract_copies(ctx.run_dir, ctx.repo_root, (ctx.pipeline_rel, BOOTSTRAP_REL), ctx.redactor)
        data: dict[str, object] = {"target": ctx.target.to_json(), "contract_sha256": ctx.contract_sha256}
        if ctx.ended_leftovers:
            data["ended_leftovers"] = ctx.ended_leftovers
        return finish(ctx, self.name, stage_dir, started, None, data=data, error=error)
