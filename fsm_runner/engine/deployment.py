"""The run's deployment: whether what deploy started is still up, and ending it.

Deploy, health, teardown, the driver and replay all ask these questions, so they are answered here once.
A group is ended only when its leader is the process recorded at deploy time (a reused pid is not ours).
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

from attrs import define

from fsm_runner.engine.context import RunContext
from fsm_runner.evidence.confine import open_regular
from fsm_runner.evidence.layout import ATTEMPT_RESULT_GLOB, stage_dir_name
from fsm_runner.execution.commands import output_tail
from fsm_runner.execution.process import exit_codes_of_groups, is_same_group, kill_group, processes_with_env

DEPLOY_PHASE = "deploy_setup"


@define(frozen=True)
class ServicesExited:
    """What is known of a deployment whose services all exited: the groups deploy left, the exit codes the
    system still holds (often none: a reaped process leaves no trace), and the tail of each group's output
    in the deploy's evidence with the file it comes from (``(path, tail)``; masked)."""

    pgids: tuple[int, ...]
    exit_codes: tuple[int, ...]
    outputs: tuple[tuple[str, str], ...]


def deployment_alive(ctx: RunContext) -> bool:
    """Whether a phase that needs the service may run now (no deploy section means nothing to need)."""
    deploy = ctx.pipeline.deploy
    if deploy is None or not deploy.setup_cmds:
        return True
    if not ctx.deployed:
        return False
    # Deploy commands that leave nothing running (e.g. an external service) count as alive.
    return not ctx.deploy_pgids or any(
        is_same_group(p, ctx.deploy_leaders.get(str(p))) for p in ctx.deploy_pgids
    )


def services_exited(ctx: RunContext) -> ServicesExited | None:
    """The deploy's services when every process they were has exited, else None (still running, nothing
    deployed, or a deploy that left nothing running to watch, such as one that starts an external service).

    Gone means: no process left in the groups deploy recorded, and no live process that still carries the
    deploy's environment (a server that daemonizes leaves its group but keeps what it inherited).
    """
    deploy = ctx.pipeline.deploy
    if deploy is None or not deploy.setup_cmds or not ctx.deployed or not ctx.deploy_pgids:
        return None
    if any(is_same_group(p, ctx.deploy_leaders.get(str(p))) for p in ctx.deploy_pgids):
        return None
    stage_dir = ctx.run_dir / stage_dir_name(DEPLOY_PHASE, max(1, ctx.runs_of_phase.get(DEPLOY_PHASE, 1)))
    # What every deploy command of this deploy had in its environment, and no other process has.
    marks = (
        f"AIDER_FSM_RUN_ID={ctx.run_id}".encode(),
        f"AIDER_FSM_STAGE={DEPLOY_PHASE}".encode(),
        f"AIDER_FSM_ARTIFACTS_DIR={stage_dir.resolve()}".encode(),
    )
    if processes_with_env(marks):
        return None
    pgids = tuple(ctx.deploy_pgids)
    return ServicesExited(pgids, tuple(exit_codes_of_groups(pgids)), _deploy_outputs(ctx, stage_dir, pgids))


def _deploy_outputs(ctx: RunContext, stage_dir: Path, pgids: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    """The masked output tail of each deploy command that left one of ``pgids``, read from its attempt files
    in the deploy's evidence dir ``stage_dir`` (the services wrote there until they exited)."""
    found: list[tuple[str, str]] = []
    try:
        names = sorted(fnmatch.filter(os.listdir(stage_dir), ATTEMPT_RESULT_GLOB))
    except OSError:
        return ()
    for name in names:
        try:
            with open_regular(stage_dir / name) as fh:  # never a FIFO a service left there
                doc = json.loads(fh.read().decode("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("pgid") not in pgids:
            continue
        out, err = doc.get("stdout_path"), doc.get("stderr_path")
        if isinstance(out, str) and isinstance(err, str):
            tail, path = output_tail(Path(out), Path(err), ctx.redactor)
            found.append((path or err, tail))
    return tuple(found)


def end_deployment(ctx: RunContext, *, kill: bool = True) -> list[int]:
    """End every process group deploy left running; returns the groups that were still alive.

    ``kill=False`` only forgets them: what a run dir copied with its tree recorded belongs to the original.
    """
    killed = kill_deployment_groups(ctx) if kill else []
    ctx.deploy_pgids.clear()
    ctx.deploy_leaders.clear()
    ctx.deployed = False
    ctx.health_passed_at = None
    return killed


def kill_deployment_groups(ctx: RunContext) -> list[int]:
    """End the process groups deploy left running without recording anything (the context is unchanged), for
    a caller that must not touch a run another thread owns; returns the groups that were still alive.

    In a sandbox, the service namespace ends too, and with it whatever deploy started outside its groups.
    """
    killed = []
    for pgid in list(ctx.deploy_pgids):
        if is_same_group(pgid, ctx.deploy_leaders.get(str(pgid))):
            kill_group(pgid)
            killed.append(pgid)
    ctx.end_sandbox_services()
    return killed
