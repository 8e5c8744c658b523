"""``setup()``: resolve a target, load its contract, and open a session on it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fsm_runner.contract.bootstrap import load_bootstrap
from fsm_runner.contract.pipeline import load_pipeline
from fsm_runner.engine import topology
from fsm_runner.errors import ContractError, FsmRunnerError, UsageError
from fsm_runner.evidence.layout import PIPELINE_REL, new_run_id
from fsm_runner.evidence.records import UNATTENDED
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.ports import pinned_port
from fsm_runner.execution.stage_env import check_overrides, env_map
from fsm_runner.repair import AgentLike, RepairStep, as_agent
from fsm_runner.repair.scaffold import scaffold_contract
from fsm_runner.session import Session
from fsm_runner.targets import resolve_target
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


def setup(
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
    **legacy: Any,
) -> Session:
    """Resolve ``target`` (a local directory or a git URL, optionally ``url@ref``), load and validate its
    contract, open a run under the repo's artifacts dir (or ``artifacts_dir``) and run the ``clone`` phase.

    ``repair_agent`` is anything :func:`fsm_runner.repair.as_agent` accepts: an object with
    ``repair(request)``, a callable, or a command line with ``{prompt_file}``/``{request_file}``/``{repo}``.
    ``console=True`` prints one line per transition on stderr. Raises :class:`TargetError` or
    :class:`ContractError` with what to fix.
    """
    _check_legacy(legacy)
    # A value that cannot be an agent fails now, not at the first repair.
    agent = as_agent(repair_agent) if repair_agent is not None else None
    if unattended not in UNATTENDED:
        raise UsageError(f"unattended must be one of {', '.join(UNATTENDED)}, got {unattended!r}")
    overrides = env_map(env_overrides)
    check_overrides({**os.environ, **overrides})
    pinned_port(overrides)  # a bad AIDER_FSM_PORT fails before anything is resolved or created
    # Chosen first: a git target's private checkout and an isolated copy are named after the run.
    run_id = new_run_id()
    resolved = resolve_target(target, clones_dir=Path(clones_dir) if clones_dir else None, ref=ref)
    redactor = Redactor.from_env({**os.environ, **overrides})
    try:
        pipeline = load_pipeline(resolved.repo_root, pipeline_rel)
    except ContractError:
        if agent is None or (resolved.repo_root / pipeline_rel).exists():
            raise
        scaffold_contract(resolved.repo_root, pipeline_rel, agent, redactor)
        pipeline = load_pipeline(resolved.repo_root, pipeline_rel)
    bootstrap = load_bootstrap(resolved.repo_root)
    session = Session._open(
        resolved,
        pipeline,
        run_id=run_id,
        pipeline_rel=pipeline_rel,
        bootstrap=bootstrap,
        artifacts_dir=Path(artifacts_dir) if artifacts_dir else None,
        unattended=unattended,
        require_metrics=require_metrics,
        repairer=RepairStep(agent) if agent is not None else None,
        env_overrides=overrides,
        redactor=redactor,
        console=console,
        on_transition=on_transition,
    )
    session._call(lambda: session.driver.run_until(lambda state: state != "clone"))
    if session.driver.state == topology.FAILED:
        error = session.ctx.last_error
        session.close()
        raise FsmRunnerError(f"setup failed: {error}")
    return session


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
