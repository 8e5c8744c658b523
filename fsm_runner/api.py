"""``setup()``: resolve a target, load its contract, and open a session on it."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from fsm_runner.contract.bootstrap import load_bootstrap
from fsm_runner.contract.pipeline import PipelineSpec, artifacts_root, load_pipeline
from fsm_runner.engine import topology
from fsm_runner.engine.leftovers import end_dead_runs
from fsm_runner.engine.progress import ProgressHook, as_hook, heartbeat_seconds
from fsm_runner.errors import ContractError, FsmRunnerError, UsageError
from fsm_runner.evidence.atomic import artifacts_inside
from fsm_runner.evidence.layout import PIPELINE_REL, contract_rel_problem, new_run_id
from fsm_runner.evidence.records import SANDBOXES, UNATTENDED, ResolvedTarget, target_secrets
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.ports import pinned_port
from fsm_runner.execution.sandbox import require_sandbox, resolve_sandbox
from fsm_runner.execution.stage_env import check_overrides, env_map
from fsm_runner.repair import AgentLike, RepairAgent, RepairStep, as_agent
from fsm_runner.repair.scaffold import scaffold_contract
from fsm_runner.session import Session
from fsm_runner.targets import refuse_committed_outputs, remove_checkout, resolve_target
from fsm_runner.trees import TreeClaim, claim_tree
from fsm_runner.typing import TransitionHook

#: Keywords of the older API that configured its built-in coding agent; accepted and ignored.
LEGACY_AGENT_KEYWORDS = frozenset(
    {
        "agent",
        "agent_model",
        "agent_kind",
        "agent_timeout",
        "agent_timeout_seconds",
        "aider_model",
        "aider_args",
        "edit_format",
        "auto_commits",
        "map_tokens",
        "max_agent_turns",
        "opencode_model",
        "opencode_url",
        "strict_opencode",
        "model",
    }
)


def setup(  # noqa: PLR0913 (every option is a keyword of the public API)
    target: str | os.PathLike[str],
    *,
    pipeline_rel: str = PIPELINE_REL,
    clones_dir: str | os.PathLike[str] | None = None,
    artifacts_dir: str | os.PathLike[str] | None = None,
    unattended: str = "strict",
    require_metrics: bool = True,
    repair_agent: AgentLike | None = None,
    ref: str | None = None,
    env_overrides: Mapping[str, str] | None = None,
    console: bool | None = None,
    on_transition: TransitionHook | None = None,
    wait: bool = False,
    isolate: bool = False,
    on_wait: Callable[[str], None] | None = None,
    sandbox: str | None = None,
    progress: ProgressHook | bool | None = None,
    heartbeat_s: float | None = None,
    **legacy: Any,
) -> Session:
    """Resolve ``target`` (a local directory or a git URL, optionally ``url@ref``), load and validate its
    contract, open a run under the repo's artifacts dir (or ``artifacts_dir``) and run the ``clone`` phase.
    A git URL runs in a checkout of its own, and its runs are kept beside the clone cache unless
    ``artifacts_dir`` is given.

    ``repair_agent`` is anything :func:`fsm_runner.repair.as_agent` accepts: an object with
    ``repair(request)``, a callable, or a command line with ``{prompt_file}``/``{request_file}``/``{repo}``.
    ``console=True`` prints one line per transition on stderr. Raises :class:`TargetError` or
    :class:`ContractError` with what to fix (also when a file the run writes, such as the metrics file,
    is committed to git).

    A local directory is used in place and held by this session until it closes: while another live run
    holds it, setup raises :class:`UsageError` naming that run, unless ``wait=True`` (block until it is
    free; ``on_wait`` hears one line when the wait starts) or ``isolate=True`` (work in a private copy of
    the tree, removed at close; the evidence still goes to the tree's runs). Before anything deploys, what
    dead runs of the tree left running is ended. A git URL needs none of this: each run has its own checkout.

    ``sandbox="bwrap"`` runs every command (and a command repair agent) under bubblewrap, whatever the
    contract's ``security.sandbox`` says; ``None`` (the default) uses the contract's. A caller may tighten the
    contract, never loosen it: ``sandbox="none"`` with a contract that sets ``bwrap`` is a
    :class:`UsageError`, and so is a sandbox bwrap cannot provide on this machine (the message says what to
    install).

    ``progress`` hears a heartbeat of the running phase every ``heartbeat_s`` seconds (default: the
    ``FSM_RUNNER_HEARTBEAT_S`` environment variable, else 30; 0 turns it off): a callable receives a
    :class:`~fsm_runner.Progress` (phase, elapsed time, command n/m, the command's last output line, masked),
    ``True`` prints it as one line on stderr. Heartbeats run in a thread of their own and stop when the phase
    ends.
    """
    _check_legacy(legacy)
    _check_arguments(pipeline_rel, unattended, sandbox, wait=wait, isolate=isolate)
    hook, interval = as_hook(progress), heartbeat_seconds(heartbeat_s)
    # A value that cannot be an agent fails now, not at the first repair.
    agent = as_agent(repair_agent) if repair_agent is not None else None
    overrides = env_map(env_overrides)
    check_overrides({**os.environ, **overrides})
    pinned_port(overrides)  # a bad AIDER_FSM_PORT fails before anything is resolved or created
    # Chosen first: a git target's private checkout and an isolated copy are named after the run.
    run_id = new_run_id()
    runs_root = Path(artifacts_dir).absolute() if artifacts_dir else None
    resolved = resolve_target(
        target,
        clones_dir=Path(clones_dir) if clones_dir else None,
        ref=ref,
        run_id=run_id,
        artifacts_dir=runs_root,
    )
    # A git target's runs outlive its checkout: they live beside the clone unless artifacts_dir says where.
    runs_root = runs_root or resolved.runs_root
    claim = None
    if resolved.kind == "local":
        tree = resolved.repo_root
        if agent is None or (tree / pipeline_rel).exists():
            # A contract that cannot load fails here, before the tree is locked or touched.
            own_runs = tree / load_pipeline(tree, pipeline_rel).artifacts.out_dir
        else:
            own_runs = artifacts_root(tree, pipeline_rel)
        own_runs = own_runs.resolve() if runs_root else artifacts_inside(own_runs, tree)
        claim = claim_tree(
            tree,
            run_id=run_id,
            run_dir=(runs_root or own_runs) / run_id,
            wait=wait,
            isolate=isolate,
            on_wait=on_wait,
            exclude=[own_runs, *([runs_root] if runs_root else [])],
        )
        if claim.copy_of is not None:  # commands run in the copy; the runs stay with the tree
            resolved = attrs.evolve(resolved, repo_root=claim.repo, isolated_from=tree)
            runs_root = runs_root or own_runs
    try:
        session = _open(
            resolved,
            run_id=run_id,
            pipeline_rel=pipeline_rel,
            agent=agent,
            runs_root=runs_root,
            unattended=unattended,
            require_metrics=require_metrics,
            overrides=overrides,
            console=console,
            on_transition=on_transition,
            claim=claim,
            sandbox=sandbox,
        )
        session.driver.progress, session.driver.heartbeat_s = hook, interval
    except BaseException:
        if claim is not None:
            claim.release()
        _abandon(resolved, runs_root, run_id)
        raise
    try:
        if claim is not None:
            claim.report(session.ctx.log)
        # Before anything deploys: a dead run's service would pass this run's health checks.
        previous = claim.previous if claim is not None else None
        also = [Path(previous.run_dir)] if previous and previous.run_dir else []
        ended = end_dead_runs(
            session.run_dir.parent,
            log=session.ctx.log,
            target=session.ctx.target,
            also=also,
            redactor=session.ctx.redactor,
        )
        session.ctx.ended_leftovers = [e.to_json() for e in ended]
    except BaseException:
        session.close()
        raise
    session._call(lambda: session.driver.run_until(lambda state: state != "clone"))
    if session.driver.state == topology.FAILED:
        error = session.ctx.last_error
        session.close()
        shown = error.redacted(session.ctx.redactor) if error is not None else error
        raise FsmRunnerError(f"setup failed: {shown}")
    return session


def _open(
    resolved: ResolvedTarget,
    *,
    run_id: str,
    pipeline_rel: str,
    agent: RepairAgent | None,
    runs_root: Path | None,
    unattended: str,
    require_metrics: bool,
    overrides: dict[str, str],
    console: bool | None,
    on_transition: TransitionHook | None,
    claim: TreeClaim | None,
    sandbox: str | None = None,
) -> Session:
    """Load the contract (asking the agent for one when it is missing) and open the session."""
    redactor = Redactor.from_env({**os.environ, **overrides}, extra=target_secrets(resolved))
    pipeline = _load_contract(resolved, pipeline_rel, agent, redactor, runs_root, sandbox)
    mode = resolve_sandbox(pipeline.security.sandbox, sandbox)
    if mode == "bwrap":  # before the run exists: one error that says what to install or drop
        require_sandbox(pipeline.security.network)
    bootstrap = load_bootstrap(resolved.repo_root)
    refuse_committed_outputs(resolved.repo_root, pipeline, pipeline_rel)
    return Session._open(
        resolved,
        pipeline,
        run_id=run_id,
        pipeline_rel=pipeline_rel,
        bootstrap=bootstrap,
        artifacts_dir=runs_root,
        unattended=unattended,
        require_metrics=require_metrics,
        repairer=RepairStep(agent) if agent is not None else None,
        env_overrides=overrides,
        redactor=redactor,
        console=console,
        on_transition=on_transition,
        claim=claim,
        sandbox=mode,
    )


def _load_contract(
    resolved: ResolvedTarget,
    pipeline_rel: str,
    agent: RepairAgent | None,
    redactor: Redactor,
    runs_dir: Path | None,
    sandbox: str | None = None,
) -> PipelineSpec:
    """The target's pipeline; with a repair agent, a missing one is scaffolded first (a git target's
    scaffold evidence goes beside its runs, not into the checkout that is removed later), in the sandbox
    when the caller asks for one."""
    try:
        return load_pipeline(resolved.repo_root, pipeline_rel)
    except ContractError:
        if agent is None or (resolved.repo_root / pipeline_rel).exists():
            raise
        evidence_root = runs_dir if resolved.clone is not None else None
        if sandbox == "bwrap":
            require_sandbox()
        scaffold_contract(
            resolved.repo_root, pipeline_rel, agent, redactor, evidence_root, sandboxed=sandbox == "bwrap"
        )
        return load_pipeline(resolved.repo_root, pipeline_rel)


def _abandon(resolved: ResolvedTarget, runs_dir: Path | None, run_id: str) -> None:
    """Setup stopped before a session existed: a git target's checkout and empty run dir go again."""
    if resolved.clone is None:
        return
    with contextlib.suppress(FsmRunnerError):
        remove_checkout(resolved)
    if runs_dir is not None:
        with contextlib.suppress(OSError):
            (runs_dir / run_id).rmdir()  # only while it is empty: nothing was recorded in it


def _check_arguments(
    pipeline_rel: object, unattended: str, sandbox: str | None, *, wait: bool, isolate: bool
) -> None:
    """Arguments that are wrong whatever the target: refused before anything is resolved, locked or run."""
    problem = contract_rel_problem(pipeline_rel) if isinstance(pipeline_rel, str) else "must be a string"
    if problem:
        raise ContractError(f"the pipeline file {problem}", key="pipeline_rel")
    if unattended not in UNATTENDED:
        raise UsageError(f"unattended must be one of {', '.join(UNATTENDED)}, got {unattended!r}")
    if sandbox is not None and sandbox not in SANDBOXES:
        raise UsageError(f"sandbox must be one of {', '.join(SANDBOXES)}, got {sandbox!r}")
    if wait and isolate:
        raise UsageError("pass wait=True or isolate=True, not both: an isolated run never waits for the tree")


def _check_legacy(legacy: dict[str, Any]) -> None:
    unknown = sorted(set(legacy) - LEGACY_AGENT_KEYWORDS)
    if unknown:
        raise UsageError(f"setup() got unexpected keyword argument(s): {', '.join(unknown)}")
    if legacy:
        warnings.warn(
            f"setup(): ignoring {', '.join(sorted(legacy))} (options of the former built-in agent); "
            "pass repair_agent= to configure repairs",
            UserWarning,
            stacklevel=3,
        )
