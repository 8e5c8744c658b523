"""verify: the last look before teardown; the contract_intact guard decides whether the run stands."""

from __future__ import annotations

import time

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import Outcome
from fsm_runner.engine.phase import finish


class VerifyPhase:
    name = "verify"

    def run(self, ctx: RunContext) -> Outcome:
        started = time.monotonic()
        stage_dir = ctx.new_stage_dir(self.name)
        data = {
            "contract_sha256_start": ctx.contract_sha256,
            "contract_sha256_now": ctx.contract_now(),
            "phases_completed": sorted(p for p, r in ctx.completed.items() if r == ctx.round),
        }
        return finish(ctx, self.name, stage_dir, started, None, data=data)
