"""repair: hand the failure to the configured agent, then hold it to the guardrails."""

from __future__ import annotations

import time
from pathlib import Path

from fsm_runner.actions import run_actions
from fsm_runner.context import RunContext
from fsm_runner.outcome import ErrorInfo, Outcome
from fsm_runner.phase import finish
from fsm_runner.repair import RepairAgent, RepairReply, RepairRequest, as_agent, render_prompt, run_repair

ALLOWED_GLOBS = (".aider_fsm/**",)


class RepairPhase:
    name = "repair"

    def run(self, ctx: RunContext) -> Outcome:
        started = time.monotonic()
        ctx.repairs_used += 1
        work_dir = ctx.new_repair_dir()
        # The agent may have touched the service or its config: health is re-checked before it is used.
        ctx.health_passed_at = None
        error = ctx.last_error or ErrorInfo("unknown", "the phase failed", ctx.failed_phase or "?")
        phase = ctx.failed_phase or error.phase
        evidence = tuple(p for p in (error.evidence,) if p)
        protected = (ctx.pipeline_rel,)
        request = RepairRequest(
            repo=ctx.repo_root,
            phase=phase,
            error_kind=error.kind,
            error_message=error.message,
            evidence_paths=evidence,
            attempt=ctx.repairs_used,
            max_attempts=ctx.repair_iters,
            allowed_globs=ALLOWED_GLOBS,
            run_id=ctx.run_id,
            prompt=render_prompt(phase, error.kind, error.message, evidence, ALLOWED_GLOBS, ctx.repo_root),
            work_dir=work_dir,
        )
        ctx.log.bind(phase=self.name, attempt=ctx.repairs_used).info("repair.start", failed_phase=phase)
        agent = _ThenActions(as_agent(ctx.agent), ctx, work_dir)
        reply, provenance = run_repair(
            agent,
            request,
            allowed_globs=ALLOWED_GLOBS,
            protected=protected,
            write_json=ctx.write_json,
        )
        action_error = agent.action_error
        for output in work_dir.glob("agent_output*"):
            ctx.redactor.mask_file(output)
        data = {
            "attempt": ctx.repairs_used,
            "failed_phase": phase,
            "agent_ok": reply.ok,
            "summary": reply.summary,
            "changed": [c.path for c in provenance.changed],
            "reverted": [c.path for c in provenance.reverted],
            "pipeline_restored": provenance.pipeline_restored,
        }
        failure = action_error
        if failure is None and not reply.ok:
            failure = ErrorInfo(
                "repair", f"repair agent failed: {reply.summary or 'no detail'}", self.name, reply.output_path
            )
        return finish(ctx, self.name, work_dir, started, None, data=data, error=failure)


class _ThenActions:
    """The agent, then any actions.yml it wrote, inside the same guardrail window (so both are checked)."""

    def __init__(self, inner: RepairAgent, ctx: RunContext, work_dir: Path) -> None:
        self.inner = inner
        self.ctx = ctx
        self.work_dir = work_dir
        self.action_error: ErrorInfo | None = None

    def repair(self, request: RepairRequest) -> RepairReply:
        reply = self.inner.repair(request)
        _, self.action_error = run_actions(self.ctx, "repair", self.work_dir)
        return reply
