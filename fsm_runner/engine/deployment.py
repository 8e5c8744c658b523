"""The run's deployment: whether what deploy started is still up, and ending it.

Deploy, health, teardown, the driver and replay all ask these questions, so they are answered here once.
A group is ended only when its leader is the process recorded at deploy time (a reused pid is not ours).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Collection
from pathlib import Path

from attrs import define, field

from fsm_runner.engine.context import RunContext
from fsm_runner.evidence.confine import open_regular
from fsm_runner.evidence.layout import ATTEMPT_RESULT_GLOB, stage_dir_name
from fsm_runner.execution.outputs import output_tail
from fsm_runner.execution.process import exit_codes_of_groups, is_same_group, kill_group, processes_with_env
from fsm_runner.execution.shellwords import analyse, span_kinds

DEPLOY_PHASE = "deploy_setup"


@define(frozen=True)
class DeployOutput:
    """The masked end of one deploy command's output in the deploy's evidence: the command, the directory it
    ran in, the file the tail comes from (stderr, or stdout when stderr is blank; None: it left nothing
    there) and the tail."""

    cmd: str
    cwd: str
    path: str | None
    tail: str


@define(frozen=True)
class ServicesExited:
    """What is known of a deployment whose services all exited: the groups deploy left, the exit codes the
    system still holds (often none: a reaped process leaves no trace), the output of each deploy command
    that left one of the groups, and the deploy's evidence dir."""

    pgids: tuple[int, ...]
    exit_codes: tuple[int, ...]
    outputs: tuple[DeployOutput, ...]
    stage_dir: str


def deployment_alive(ctx: RunContext) -> bool:
    """Whether a phase that needs the service may run now (no deploy section means nothing to need)."""
    deploy = ctx.pipeline.deploy
    if deploy is None or not deploy.setup_cmds:
        return True
    if not ctx.deployed:
        return False
    # As health judges it: a deploy that left nothing to watch (an external service), a server that left
    # deploy's group (it keeps deploy's environment) and launchers that exited 0 (they handed off) count as
    # alive; deploying again would start a second server beside the first.
    return services_exited(ctx) is None


def services_exited(ctx: RunContext) -> ServicesExited | None:
    """The deploy's services when every process they were has exited and nothing says they may still come
    up, else None; see :class:`ServiceWatch`, which also remembers what earlier looks found."""
    return ServiceWatch().exited(ctx)


@define
class ServiceWatch:
    """Whether the deploy's services are gone, asked again and again while health polls.

    Gone means: no process left in the groups deploy recorded, and no live process that still carries the
    deploy's environment (a server that daemonizes leaves its group but keeps what it inherited). A server
    started with a clean environment (``env -i``, sudo, a container launcher) carries none of it, so only a
    crash counts: when every exit code seen is 0 the groups were launchers that handed off, and what they
    started may still be coming up. A non-zero code or a signal is a crash. When no exit code is known at
    all (the exited processes were reaped before any look) the groups are taken as crashed: a launcher that
    hands off to a server with a clean environment is then reported too early, which a deploy command that
    waits for its server to listen avoids. The codes seen are kept across looks, since an init that reaps
    now and then takes them away between two.
    """

    codes: set[int] = field(factory=set)

    def exited(self, ctx: RunContext) -> ServicesExited | None:
        """The deploy's services when they crashed, else None (still running, nothing deployed, a deploy that
        left nothing running to watch, such as one that starts an external service, or a hand-off)."""
        deploy = ctx.pipeline.deploy
        if deploy is None or not deploy.setup_cmds or not ctx.deployed or not ctx.deploy_pgids:
            return None
        if any(is_same_group(p, ctx.deploy_leaders.get(str(p))) for p in ctx.deploy_pgids):
            return None
        stage_dir = deploy_stage_dir(ctx)
        # What every deploy command of this deploy had in its environment, and no other process has.
        marks = (
            f"AIDER_FSM_RUN_ID={ctx.run_id}".encode(),
            f"AIDER_FSM_STAGE={DEPLOY_PHASE}".encode(),
            f"AIDER_FSM_ARTIFACTS_DIR={stage_dir.resolve()}".encode(),
        )
        if processes_with_env(marks):
            return None
        pgids = tuple(ctx.deploy_pgids)
        self.codes.update(exit_codes_of_groups(pgids))
        if self.codes and not any(self.codes):  # only launchers that exited 0: they handed off
            return None
        return ServicesExited(pgids, tuple(sorted(self.codes)), deploy_outputs(ctx, pgids), str(stage_dir))


def deploy_stage_dir(ctx: RunContext) -> Path:
    """The evidence dir of the run's latest deploy."""
    return ctx.run_dir / stage_dir_name(DEPLOY_PHASE, max(1, ctx.runs_of_phase.get(DEPLOY_PHASE, 1)))


def deploy_outputs(ctx: RunContext, pgids: Collection[int] | None = None) -> tuple[DeployOutput, ...]:
    """The output of the latest deploy's commands, read from their attempt files (the services wrote there
    until they exited): of every attempt that left one of ``pgids``, or with None of each command's last
    attempt."""
    stage_dir = deploy_stage_dir(ctx)
    found: dict[object, DeployOutput] = {}
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
        if not isinstance(doc, dict) or (pgids is not None and doc.get("pgid") not in pgids):
            continue
        out, err = doc.get("stdout_path"), doc.get("stderr_path")
        if isinstance(out, str) and isinstance(err, str):
            tail, path = output_tail(Path(out), Path(err), ctx.redactor)
            key = name if pgids is not None else doc.get("index")  # the last attempt of a command wins
            found[key] = DeployOutput(str(doc.get("cmd", "")), str(doc.get("cwd", "")), path, tail)
    return tuple(found.values())


def redirect_targets(output: DeployOutput) -> list[str]:
    """The files a deploy command sends output to (``> log``, ``2>> err.log``, ``&> out``), as far as the
    command's text tells: a target with a variable in it is left out, and so is ``/dev/...``."""
    found: list[str] = []
    for inv in analyse(output.cmd).invocations:
        for op, target in inv.redirects:
            if ">" not in op or op.endswith("&") or not target or span_kinds(target):
                continue
            if target.startswith("/dev/"):
                continue
            path = str(Path(output.cwd, target)) if output.cwd else target
            if path not in found:
                found.append(path)
    return found


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
