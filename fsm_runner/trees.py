"""Who works in a local tree: the one live run that holds it, or a run in a private copy of it.

A local directory is run in place, so two live runs of it would share every file the contract writes
(metrics, ``runtime_env.json``, pid files) and each other's services. A run therefore holds the tree's lock
(``.aider_fsm/tree.lock``, an ``flock`` the kernel drops when the process dies, so a killed run never blocks
anyone) for its whole session. A second run is refused with the live run's id, pid, start time and run dir,
unless it waits for the lock (``wait=True``) or works in a private copy of the tree (``isolate=True``): a
copy in the temp dir, uncommitted and untracked files included, the runs themselves left out; its evidence
still goes to the original tree's runs, and the copy is removed when the session closes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import attrs
from attrs import define

from fsm_runner.engine.leftovers import private_copy_name
from fsm_runner.engine.lifecycle import live_sessions
from fsm_runner.errors import TargetError, UsageError
from fsm_runner.evidence.layout import TREE_LOCK_REL
from fsm_runner.evidence.lock import TreeHolder, hold_tree_lock, release_lock, rename_tree_holder
from fsm_runner.typing import EventLogger


@define
class TreeClaim:
    """What a run holds on its tree: the tree's lock (in place), or a private copy (isolated)."""

    #: Where the run works: the tree itself, or its private copy.
    repo: Path
    holder: TreeHolder
    lock: IO[str] | None = None
    copy_of: Path | None = None
    #: The run the lock file named when this claim took it: it ended, or it died (see engine.leftovers).
    previous: TreeHolder | None = None
    waited_for: TreeHolder | None = None
    waited_s: float = 0.0

    def name_run_dir(self, run_dir: Path) -> None:
        """Put the run dir into the lock file once it exists, so a refused run can name it."""
        self.holder = attrs.evolve(self.holder, run_dir=str(run_dir))
        if self.lock is not None:
            rename_tree_holder(self.lock, self.holder)

    def report(self, log: EventLogger) -> None:
        """Say in the run's events how it got its tree."""
        if self.waited_for is not None:
            log.info("tree.waited", waited_s=round(self.waited_s, 3), **{"for": self.waited_for.to_json()})
        if self.copy_of is not None:
            log.info("tree.isolated", tree=str(self.copy_of), copy=str(self.repo))

    def release(self) -> None:
        """Release the lock, or remove the private copy. Safe to call twice."""
        lock, self.lock = self.lock, None
        if lock is not None:
            with contextlib.suppress(OSError):
                release_lock(lock)
        if self.copy_of is not None and self.repo.is_dir():
            shutil.rmtree(self.repo, ignore_errors=True)


def claim_tree(
    repo: Path,
    *,
    run_id: str,
    run_dir: Path | None = None,
    wait: bool = False,
    isolate: bool = False,
    exclude: Iterable[Path] = (),
    replaying: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> TreeClaim:
    """Hold ``repo`` for the run ``run_id``, wait for it, or make a private copy of it (see module doc).

    ``exclude`` names directories a private copy leaves out (the runs). Raises :class:`UsageError` when
    another live run holds the tree and ``wait`` is false. ``on_wait`` hears one line when waiting starts
    (the caller may block for long; the CLI prints it).
    """
    holder = TreeHolder(run_id, os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if run_dir is not None:
        holder = attrs.evolve(holder, run_dir=str(run_dir))
    if isolate:
        return TreeClaim(_private_copy(repo, run_id, exclude), holder, copy_of=repo)
    claim = TreeClaim(repo, holder)
    started = time.monotonic()

    def on_busy(current: TreeHolder | None) -> None:
        if not wait or (current is not None and _idle_here(current)):
            raise UsageError(_refusal(repo, current, replaying=replaying, waiting=wait))
        who = current.describe() if current is not None else "another live run"
        if on_wait is not None:
            on_wait(f"{repo} is in use by {who}; waiting for it to finish")
        claim.waited_for = current or TreeHolder("unknown", 0, "")

    claim.lock, claim.previous = hold_tree_lock(repo / TREE_LOCK_REL, holder, on_busy=on_busy)
    if claim.waited_for is not None:
        claim.waited_s = time.monotonic() - started
    return claim


def _idle_here(holder: TreeHolder) -> bool:
    """The holder is an open session of this process that is between calls: waiting would never end."""
    if holder.pid != os.getpid():
        return False
    return any(
        getattr(s, "run_id", None) == holder.run_id and not getattr(s, "busy", False) for s in live_sessions()
    )


def _refusal(repo: Path, holder: TreeHolder | None, *, replaying: bool, waiting: bool) -> str:
    who = holder.describe() if holder is not None else "another live run"
    text = f"{repo} is in use by {who}"
    if holder is not None and holder.pid == os.getpid():
        close = "waiting would never end: " if waiting else ""
        return f"{text}, open in this process; {close}close its session first (sess.close())"
    if replaying:
        return (
            f"{text}; wait for it with wait=True (fsm-runner replay --wait), or replay once it has finished"
        )
    return (
        f"{text}; wait for it with wait=True (fsm-runner run --wait), or run in a private copy of the tree "
        "with isolate=True (fsm-runner run --isolate)"
    )


def _private_copy(repo: Path, run_id: str, exclude: Iterable[Path]) -> Path:
    """Copy ``repo`` (uncommitted and untracked files included) into a new temp dir, leaving out its lock
    file, ``exclude`` and anything that is not a file, directory or symlink (sockets, fifos)."""
    skip = {(repo / TREE_LOCK_REL).resolve(), *(Path(p).resolve() for p in exclude)}

    def ignore(folder: str, names: list[str]) -> list[str]:
        left_out = []
        for name in names:
            path = Path(folder, name)
            try:
                mode = path.lstat().st_mode
            except OSError:
                left_out.append(name)
                continue
            if path in skip or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                left_out.append(name)
        return left_out

    try:
        dest = Path(tempfile.mkdtemp(prefix=private_copy_name(repo, run_id))).resolve()
    except OSError as exc:
        raise TargetError(
            f"cannot make a private copy of {repo}: {exc.strerror or exc}; set TMPDIR"
        ) from None
    try:
        shutil.copytree(repo, dest, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    except (OSError, shutil.Error) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise TargetError(
            f"cannot make a private copy of {repo} in {dest.parent}: {exc}; free space there or set TMPDIR"
        ) from None
    return dest
