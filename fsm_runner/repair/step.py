"""One repair: snapshot the repo, call the agent, hold it to the guardrails, record what happened.

:func:`run_repair` is the mechanism; :class:`RepairStep` is how the engine's repair phase reaches it
(it implements :class:`fsm_runner.engine.phase.Repairer`, so the phases never import this package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner.engine.actions import run_actions
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.engine.phase import RepairReport
from fsm_runner.evidence.atomic import write_json_atomic, write_text_atomic
from fsm_runner.evidence.layout import (
    AGENT_AREA,
    AGENT_OUTPUT,
    REPAIR_PROMPT,
    REPAIR_PROVENANCE,
    REPAIR_REPLY,
    REPAIR_REQUEST,
)
from fsm_runner.repair.agents import (
    RepairAgent,
    RepairReply,
    RepairRequest,
    as_agent,
    as_reply,
    failure_summary,
    str_tuple,
)
from fsm_runner.repair.guardrails import (
    DEFAULT_EXCLUDE,
    DEFAULT_PROTECTED,
    Provenance,
    enforce_guardrails,
    snapshot_repo,
)
from fsm_runner.repair.prompt import render_prompt

WriteJson = Callable[[Path, Any], None]


def run_repair(
    agent: RepairAgent,
    request: RepairRequest,
    *,
    allowed_globs: Iterable[str] | None = None,
    protected: Iterable[str] = DEFAULT_PROTECTED,
    write_json: WriteJson | None = None,
) -> tuple[RepairReply, Provenance]:
    """Snapshot, record the request, call the agent, enforce guardrails, record reply and provenance.

    ``agent`` may be anything :func:`as_agent` accepts; ``allowed_globs`` defaults to the request's. Agent
    failures come back as ``reply.ok is False``; only evidence write failures (:class:`EvidenceError`), bad
    globs and unusable agents (:class:`UsageError`) raise.
    """
    agent = as_agent(agent)
    write = write_json or write_json_atomic
    globs = str_tuple(request.allowed_globs if allowed_globs is None else allowed_globs)
    guarded = str_tuple(protected)
    repo, work = request.repo.resolve(), request.work_dir
    work.mkdir(parents=True, exist_ok=True)
    exclude = DEFAULT_EXCLUDE
    work_abs = work.resolve()
    if work_abs != repo and work_abs.is_relative_to(repo):
        exclude += (work_abs.relative_to(repo).as_posix(),)
    before = snapshot_repo(repo, exclude=exclude)
    write(work / REPAIR_REQUEST, request.to_json())
    write_text_atomic(work / REPAIR_PROMPT, request.prompt)
    reply = RepairReply(ok=False, summary="repair agent was interrupted")
    try:
        try:
            reply = as_reply(agent.repair(request))
        except Exception as exc:
            reply = RepairReply(ok=False, summary=failure_summary(exc))
    finally:
        provenance = enforce_guardrails(repo, before, allowed_globs=globs, protected=guarded)
        write(work / REPAIR_REPLY, reply.to_json())
        write(work / REPAIR_PROVENANCE, provenance.to_json())
    return reply, provenance


@define(frozen=True)
class RepairStep:
    """The engine's :class:`~fsm_runner.engine.phase.Repairer`: one agent, the run's guardrails."""

    agent: RepairAgent
    allowed_globs: tuple[str, ...] = (AGENT_AREA,)

    def repair(self, ctx: RunContext, work_dir: Path, failure: ErrorInfo) -> RepairReport:
        phase = ctx.failed_phase or failure.phase
        evidence = tuple(p for p in (failure.evidence,) if p)
        message = ctx.redactor.mask(failure.message)
        prompt = render_prompt(
            phase, failure.kind, message, evidence, self.allowed_globs, ctx.repo_root, ctx.redactor.mask
        )
        request = RepairRequest(
            repo=ctx.repo_root,
            phase=phase,
            error_kind=failure.kind,
            error_message=message,
            evidence_paths=evidence,
            attempt=ctx.repairs_used,
            max_attempts=ctx.repair_iters,
            allowed_globs=self.allowed_globs,
            run_id=ctx.run_id,
            prompt=ctx.redactor.mask(prompt),  # it quotes evidence and repo files, which may hold secrets
            work_dir=work_dir,
        )
        agent = _ThenActions(self.agent, ctx, work_dir)
        reply, provenance = run_repair(
            agent,
            request,
            allowed_globs=self.allowed_globs,
            protected=(ctx.pipeline_rel,),
            write_json=ctx.write_json,
        )
        for output in work_dir.glob(f"{AGENT_OUTPUT}*"):
            ctx.redactor.mask_file(output)
        error = agent.action_error
        if error is None and not reply.ok:
            error = ErrorInfo(
                "repair", f"repair agent failed: {reply.summary or 'no detail'}", "repair", reply.output_path
            )
        return RepairReport(
            agent_ok=reply.ok,
            summary=reply.summary,
            output_path=reply.output_path,
            changed=tuple(c.path for c in provenance.changed),
            reverted=tuple(c.path for c in provenance.reverted),
            pipeline_restored=provenance.pipeline_restored,
            error=error,
        )


class _ThenActions:
    """The agent, then any actions.yml it wrote, inside the same guardrail window (so both are checked)."""

    def __init__(self, inner: RepairAgent, ctx: RunContext, work_dir: Path) -> None:
        self.inner = inner
        self.ctx = ctx
        self.work_dir = work_dir
        self.action_error: ErrorInfo | None = None

    def repair(self, request: RepairRequest) -> RepairReply:
        reply = as_reply(self.inner.repair(request))
        _, self.action_error = run_actions(self.ctx, "repair", self.work_dir)
        return reply
