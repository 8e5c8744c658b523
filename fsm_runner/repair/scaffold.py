"""Ask a repair agent to write a missing contract, then hold the result to the same validation."""

from __future__ import annotations

from pathlib import Path

from fsm_runner.errors import ContractError
from fsm_runner.evidence import layout
from fsm_runner.evidence.atomic import create_run_dir, write_json_atomic
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.sandbox import Sandbox
from fsm_runner.repair.agents import AgentLike, RepairRequest, as_agent
from fsm_runner.repair.step import run_repair

SCAFFOLD_GLOBS = (layout.PIPELINE_REL, layout.AGENT_AREA)


def scaffold_contract(
    repo: Path,
    pipeline_rel: str,
    agent: AgentLike,
    redactor: Redactor,
    evidence_root: Path | None = None,
    *,
    sandboxed: bool = False,
) -> Path:
    """Returns the evidence dir (under ``evidence_root``, else the repo's default artifacts dir); raises
    :class:`ContractError` when the agent wrote nothing. ``sandboxed``: a command agent runs under bwrap,
    with the repo and the evidence dir writable (there is no contract yet to keep read-only)."""
    root = evidence_root or repo / layout.DEFAULT_OUT_DIR
    work_dir = create_run_dir(root, f"scaffold-{layout.new_run_id()}")
    globs = tuple(dict.fromkeys((pipeline_rel, *SCAFFOLD_GLOBS)))
    message = (
        f"{pipeline_rel} does not exist. Write a pipeline.yml (version: 1) for this repository, and "
        f"{layout.BOOTSTRAP_REL} if it needs setup; see `fsm-runner init` for a commented skeleton."
    )
    request = RepairRequest(
        repo=repo,
        phase="scaffold",
        error_kind="contract_missing",
        error_message=message,
        evidence_paths=(),
        attempt=1,
        max_attempts=1,
        allowed_globs=globs,
        run_id=work_dir.name,
        prompt=message,
        work_dir=work_dir,
        sandbox=Sandbox(writable=(repo, work_dir)) if sandboxed else None,
    )
    try:
        run_repair(
            as_agent(agent),
            request,
            allowed_globs=globs,
            protected=(),
            write_json=lambda path, data: write_json_atomic(path, redactor.scrub(data)),
        )
    finally:
        if request.sandbox is not None:
            request.sandbox.close()
    if not (repo / pipeline_rel).is_file():
        raise ContractError(
            f"the repair agent was asked to write the contract but did not (evidence: {work_dir})",
            path=str(repo / pipeline_rel),
        )
    return work_dir
