"""repair: hand the failure to the run's repairer (an agent held to the guardrails) and record the result."""

from __future__ import annotations

import time

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo, Outcome
from fsm_runner.engine.phase import finish


class RepairPhase:
    name = "repair"

    def run(self, ctx: RunContext) -> Outcome:
        started = time.monotonic()
        ctx.repairs_used += 1
        work_dir = ctx.new_repair_dir()
        # The agent may have touched the service or its config: health is re-checked before it is used.
        ctx.health_passed_at = None
        failure = ctx.last_error or ErrorInfo("unknown", "the phase failed", ctx.failed_phase or "?")
        phase = ctx.failed_phase or failure.phase
        ctx.log.bind(phase=self.name, attempt=ctx.repairs_used).info("repair.start", failed_phase=phase)
        if ctx.repairer is None:  # the can_repair guard keeps the machine out of here without one
            error = ErrorInfo("repair", "no repair agent is configured", self.name)
            return finish(ctx, self.name, work_dir, started, None, error=error)
        report = ctx.repairer.repair(ctx, work_dir, failure)
        data = {
            "attempt": ctx.repairs_used,
            "failed_phase": phase,
            "agent_ok": report.agent_ok,
            "summary": report.summary,
            "changed": list(report.changed),
            "reverted": list(report.reverted),
            "pipeline_restored": report.pipeline_restored,
        }
        return finish(ctx, self.name, work_dir, started, None, data=data, error=report.error)
