"""The run's deployment: whether what deploy started is still up, and ending it.

Deploy, health, teardown, the driver and replay all ask these questions, so they are answered here once.
A group is ended only when its leader is the process recorded at deploy time (a reused pid is not ours).
"""

from __future__ import annotations

from fsm_runner.engine.context import RunContext
from fsm_runner.execution.process import is_same_group, kill_group


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
