"""One repair: snapshot the repo, call the agent, hold it to the guardrails, record what happened.

:func:`run_repair` is the mechanism; :class:`RepairStep` is how the engine's repair phase reaches it
(it implements :class:`fsm_runner.engine.phase.Repairer`, so the phases never import this package).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner.engine.actions import run_actions
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.engine.phase import RepairReport
from fsm_runner.errors import EvidenceError, RepairError
from fsm_runner.evidence.atomic import write_json_atomic, write_text_atomic
from fsm_runner.evidence.contract_copies import keep_contract_copies
from fsm_runner.evidence.layout import (
    AGENT_AREA,
    AGENT_OUTPUT,
    BOOTSTRAP_REL,
    REPAIR_BEFORE,
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
    RepoSnapshot,
    check_globs,
    enforce_guardrails,
    matches_any,
    snapshot_repo,
)
from fsm_runner.repair.prompt import render_prompt

WriteJson = Callable[[Path, Any], None]
#: How many paths a :class:`RepairError` names before it says "and N more".
_NAMED = 8


def run_repair(
    agent: RepairAgent,
    request: RepairRequest,
    *,
    allowed_globs: Iterable[str] | None = None,
    protected: Iterable[str] = DEFAULT_PROTECTED,
    write_json: WriteJson | None = None,
    contract: Iterable[str] = (),
) -> tuple[RepairReply, Provenance]:
    """Snapshot, record the request, call the agent, enforce guardrails, record reply and provenance.

    ``agent`` may be anything :func:`as_agent` accepts; ``allowed_globs`` defaults to the request's. Agent
    failures come back as ``reply.ok is False``. ``contract`` names the contract files whose hashes
    ``before.json`` records (with the guarded files) before the agent starts.

    Raises :class:`UsageError` for bad globs and unusable agents (before the agent runs),
    :class:`EvidenceError` when evidence cannot be written, and :class:`RepairError` when the guardrails
    cannot be applied in full: the tree cannot be looked at, the check after the agent fails, or a change
    they must undo is still there (``provenance.json`` says which; the reply is recorded first).
    """
    agent = as_agent(agent)
    write = write_json or write_json_atomic
    globs = check_globs(str_tuple(request.allowed_globs if allowed_globs is None else allowed_globs))
    guarded = check_globs(str_tuple(protected))
    repo, work = request.repo.resolve(), request.work_dir
    work.mkdir(parents=True, exist_ok=True)
    exclude = DEFAULT_EXCLUDE
    work_abs = work.resolve()
    if work_abs != repo and work_abs.is_relative_to(repo):
        exclude += (work_abs.relative_to(repo).as_posix(),)
    try:
        before = snapshot_repo(repo, exclude=exclude)
    except OSError as exc:
        raise RepairError(
            f"cannot look at {repo} before the repair agent runs ({exc.strerror or exc}), so its changes "
            "could not be checked; the agent was not started"
        ) from exc
    write(work / REPAIR_REQUEST, request.to_json())
    write_text_atomic(work / REPAIR_PROMPT, request.prompt)
    write(work / REPAIR_BEFORE, _before_record(before, globs, guarded, str_tuple(contract)))
    reply = RepairReply(ok=False, summary="repair agent was interrupted")
    try:
        try:
            reply = as_reply(agent.repair(request))
        except Exception as exc:
            reply = RepairReply(ok=False, summary=failure_summary(exc))
    finally:
        # The guardrails first: the agent may have made the evidence dir itself unwritable.
        try:
            provenance = _hold_to_guardrails(repo, before, globs, guarded, work / REPAIR_PROVENANCE, write)
        except RepairError:
            with contextlib.suppress(EvidenceError):
                write(work / REPAIR_REPLY, reply.to_json())
            raise
        write(work / REPAIR_REPLY, reply.to_json())
    return reply, provenance


def _before_record(
    before: RepoSnapshot, allowed: tuple[str, ...], guarded: tuple[str, ...], contract: tuple[str, ...]
) -> dict[str, Any]:
    """``before.json``: what replay needs to undo this repair if the runner dies before the guardrails run.

    The contract files' hashes, and hash and mode of every file the guardrails would restore (outside the
    allowed area, or protected).
    """
    files = {
        path: {"sha256": state.sha256, "mode": state.mode}
        for path, state in sorted(before.files.items())
        if path in contract or matches_any(path, guarded) or not matches_any(path, allowed)
    }
    return {
        "contract": {rel: (before.files[rel].sha256 if rel in before.files else None) for rel in contract},
        "allowed_globs": list(allowed),
        "protected": list(guarded),
        "exclude": list(before.exclude),
        "files": files,
        "unreadable": dict(sorted(before.unreadable.items())),
    }


def _hold_to_guardrails(
    repo: Path,
    before: RepoSnapshot,
    globs: tuple[str, ...],
    guarded: tuple[str, ...],
    record: Path,
    write: WriteJson,
) -> Provenance:
    """Enforce the guardrails and record the provenance; :class:`RepairError` when they could not be applied
    in full (recorded in ``record`` first)."""
    try:
        provenance = enforce_guardrails(repo, before, allowed_globs=globs, protected=guarded)
    except Exception as exc:
        message = (
            f"the guardrail check after the repair agent failed ({type(exc).__name__}: {exc}), so the "
            f"agent's changes to {repo} may still be there; compare the tree with version control before "
            "running again"
        )
        with contextlib.suppress(EvidenceError):  # the error below says it all
            write(record, {"error": message})
        raise RepairError(message) from exc
    write(record, provenance.to_json())
    if provenance.unreverted:
        named = [f"{c.path} ({c.kind})" for c in provenance.unreverted[:_NAMED]]
        more = len(provenance.unreverted) - len(named)
        listing = ", ".join(named) + (f" and {more} more" if more > 0 else "")
        raise RepairError(
            f"the repair agent changed what it may not, and the runner could not undo it: {listing}; restore "
            f"these by hand (for example `git checkout -- PATH`) before running again (details: {record})"
        )
    return provenance


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
            sandbox=ctx.bwrap_sandbox(),
        )
        agent = _ThenActions(self.agent, ctx, work_dir)
        contract = (ctx.pipeline_rel, BOOTSTRAP_REL)
        # The contract as it is before the agent runs: a replay after a runner killed meanwhile restores it.
        keep_contract_copies(ctx.run_dir, ctx.repo_root, contract, ctx.redactor)
        try:
            reply, provenance = run_repair(
                agent,
                request,
                allowed_globs=self.allowed_globs,
                protected=(ctx.pipeline_rel,),
                write_json=ctx.write_json,
                contract=contract,
            )
        except RepairError as exc:
            ctx.log.warning("repair.guardrails_failed", error=str(exc))
            failed = ErrorInfo(
                "repair", ctx.redactor.mask(str(exc)), "repair", str(work_dir / REPAIR_PROVENANCE)
            )
            log = work_dir / AGENT_OUTPUT
            shown = str(log) if log.exists() else None
            return RepairReport(agent_ok=False, summary=failed.message, output_path=shown, error=failed)
        finally:
            for output in work_dir.glob(f"{AGENT_OUTPUT}*"):
                ctx.redactor.mask_file(output)
        keep_contract_copies(ctx.run_dir, ctx.repo_root, contract, ctx.redactor)  # what the run goes on with
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
