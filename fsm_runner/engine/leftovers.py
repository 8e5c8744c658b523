"""What dead runs of a tree left running, and ending it before anything runs in that tree again.

A runner killed with SIGKILL (the OOM killer, a preempted node) cannot tear down: its deployed services,
the command it was waiting for and a repair agent keep running, and the next run of the tree would pass
``health`` against the old service. A run is dead when nothing holds its run lock; what it left is read
from its evidence: ``run.json`` (``deploy_pgids`` with their leaders' start times), attempt files that
still say ``"running": true``, and ``repair_NN/agent_process.json``. Setup (before anything deploys) and
replay both call :func:`end_dead_runs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.layout import AGENT_PROCESS, RUN_JSON, repair_dir_name
from fsm_runner.evidence.lock import lock_holder, lock_pid
from fsm_runner.evidence.records import OK, ResolvedTarget, RunState
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.evidence.store import list_runs, read_run
from fsm_runner.execution.commands import leftover_command_groups
from fsm_runner.execution.process import (
    groups_with_env,
    is_same_group,
    kill_group,
    process_start_time,
    running_group,
)
from fsm_runner.typing import EventLogger

#: A run that ended this way had torn everything down before it wrote its status.
_ENDED_CLEANLY = frozenset({OK, "closed"})
#: Prefix of a private copy of a tree (``setup(isolate=True)``), made in the temp dir.
PRIVATE_COPY_PREFIX = "fsm-runner-"


@define(frozen=True)
class Leftovers:
    """What one dead run left running, and this process ended."""

    run_id: str
    run_dir: Path
    deploy_pgids: tuple[int, ...] = ()
    command_pgids: tuple[int, ...] = ()
    agent_pgids: tuple[int, ...] = ()
    removed_copy: str | None = None

    @property
    def pgids(self) -> tuple[int, ...]:
        return (*self.deploy_pgids, *self.command_pgids, *self.agent_pgids)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "deploy_pgids": list(self.deploy_pgids),
            "command_pgids": list(self.command_pgids),
            "agent_pgids": list(self.agent_pgids),
            "removed_copy": self.removed_copy,
        }

    def describe(self) -> str:
        parts = [f"process groups {', '.join(map(str, self.pgids))}"] if self.pgids else []
        if self.removed_copy:
            parts.append(f"its private copy {self.removed_copy}")
        return f"run {self.run_id}: {' and '.join(parts)}"


def end_dead_runs(
    runs_root: Path | None,
    *,
    log: EventLogger,
    target: ResolvedTarget,
    also: Iterable[Path] = (),
    own: Path | None = None,
    redactor: Redactor | None = None,
) -> list[Leftovers]:
    """End what the dead runs of ``target`` under ``runs_root`` (and the run dirs in ``also``) left running.

    A run counts only when it recorded the same target (this tree, a private copy of it, or a checkout of
    the same clone): a run dir that came with a ``cp -r`` of a tree belongs to the original tree's runs,
    which may be live. ``own`` is a run this process holds the lock of and treats as dead (the run a replay
    continues). Each run that had something left is logged as a ``leftovers.ended`` event and returned.
    With a ``redactor``, the evidence of each such run (but ``own``, which its caller masks) is masked once
    its processes are gone: a killed runner never masked the output of the command it was waiting for, nor
    of its deployment.
    """
    candidates: dict[Path, None] = {}
    if runs_root is not None:
        with contextlib.suppress(EvidenceError):
            candidates.update((p.resolve(), None) for p in list_runs(runs_root))
    for path in (*also, *((own,) if own is not None else ())):
        if path.is_dir():
            candidates[path.resolve()] = None
    mine = own.resolve() if own is not None else None
    booted = _boot_time()
    ended = []
    for run_dir in candidates:
        found = _end_one(run_dir, target, dead=run_dir == mine, booted=booted)
        if found is not None:
            log.info("leftovers.ended", **found.to_json())
            ended.append(found)
            if redactor is not None and run_dir != mine:
                with contextlib.suppress(EvidenceError):  # best effort: another user's run, a full disk
                    redactor.mask_tree(run_dir)
    return ended


def _end_one(run_dir: Path, target: ResolvedTarget, *, dead: bool, booted: float) -> Leftovers | None:
    try:
        if (run_dir / RUN_JSON).stat().st_mtime < booted:
            return None  # written before this machine booted: nothing of it can be running
        state = read_run(run_dir)
    except (OSError, EvidenceError):
        return None
    if not _same_target(state.target, target):
        return None
    # Read first, then probe: a run that is live now took its lock before writing what we read. A lock file
    # naming a live process other than this one may be a copy of a live run's: never its processes.
    if not dead:
        pid = lock_pid(run_dir)
        if lock_holder(run_dir) is not None or (
            pid is not None and pid != os.getpid() and process_start_time(pid) is not None
        ):
            return None
    # Only a group whose leader's start time was recorded: a pgid alone could name any process by now.
    leaders = state.deploy_leaders
    deploy = [
        p for p in state.deploy_pgids if leaders.get(str(p)) is not None and is_same_group(p, leaders[str(p)])
    ]
    commands: list[int] = []
    agents: list[int] = []
    if state.status not in _ENDED_CLEANLY:
        # Attempt files lie in dirs the run's own commands may write: a group they name is ended only when
        # a member carries the run's id, as every command of the run does (no other process can).
        found = [p for p in leftover_command_groups(run_dir) if p not in deploy]
        commands = groups_with_env(found, [f"AIDER_FSM_RUN_ID={state.run_id}".encode()])
        agents = [p for p in _agent_groups(run_dir, state) if p not in deploy and p not in commands]
    for pgid in (*deploy, *commands, *agents):
        with contextlib.suppress(ValueError):  # never this process's own group
            kill_group(pgid)
    removed = _remove_private_copy(state) if state.status not in _ENDED_CLEANLY else None
    if not (deploy or commands or agents or removed):
        return None
    return Leftovers(state.run_id, run_dir, tuple(deploy), tuple(commands), tuple(agents), removed)


def _same_target(recorded: ResolvedTarget, target: ResolvedTarget) -> bool:
    if target.clone is not None:
        return recorded.clone is not None and recorded.clone.resolve() == target.clone.resolve()
    tree = (target.isolated_from or target.repo_root).resolve()
    return (recorded.isolated_from or recorded.repo_root).resolve() == tree


def _agent_groups(run_dir: Path, state: RunState) -> list[int]:
    """Command agents of the run's repairs whose record still says running (and whose group lives)."""
    found = []
    for count in range(1, state.runs_of_phase.get("repair", 0) + 2):  # + 1: a dir made after the last save
        try:
            doc = json.loads((run_dir / repair_dir_name(count) / AGENT_PROCESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        pgid = running_group(doc)
        if pgid is not None:
            found.append(pgid)
    return found


def _remove_private_copy(state: RunState) -> str | None:
    """A dead isolated run's private copy of its tree, removed; only a directory that is one by its name
    and place (in the temp dir, named after the run) is ever touched."""
    target = state.target
    copy = target.repo_root
    if target.isolated_from is None or copy == target.isolated_from:
        return None
    expected = Path(tempfile.gettempdir()).resolve()
    if (
        copy.parent != expected
        or not copy.name.startswith(PRIVATE_COPY_PREFIX)
        or state.run_id not in copy.name
    ):
        return None
    if not copy.is_dir() or copy.is_symlink():
        return None
    shutil.rmtree(copy, ignore_errors=True)
    return str(copy)


def _boot_time() -> float:
    """When this machine booted (epoch seconds); 0 when unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def private_copy_name(repo: Path, run_id: str) -> str:
    """The prefix :func:`tempfile.mkdtemp` gets for a private copy of ``repo`` made for ``run_id``."""
    return f"{PRIVATE_COPY_PREFIX}{repo.name[:40]}-{run_id}-"
