"""Lock files: a run's (held by the process that runs it, probed by everything that asks "is it live?")
and a local tree's (held by the one live run that works in that tree, for its whole session).

``flock`` locks vanish with their process, so a run killed with SIGKILL is never reported live, and a
recycled pid cannot fool the probe (the pid in the file is only read to name the holder).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from attrs import define

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.atomic import EVIDENCE_MODE
from fsm_runner.evidence.layout import LOCK

#: Waits between attempts to take a lock that a reader may be probing (None: give up); about half a second in
#: all, so a prober descheduled on a busy machine while it holds the lock for a moment cannot make this fail.
_RETRY_DELAYS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, None)
#: Waits while the lock is held but the process it names has exited: a child it was starting holds it from
#: fork until exec; about two seconds in all, for a busy machine.
_ORPHAN_DELAYS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, None)


def hold_lock(run_dir: Path) -> IO[str]:
    """Take the run's lock for this process (the pid is written into the file for readers).

    A reader's probe (:func:`lock_holder`) holds the lock for a moment; a few short retries step around it.
    """
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_APPEND, EVIDENCE_MODE)
        handle = os.fdopen(fd, "a+")
    except OSError as exc:
        raise EvidenceError(f"cannot open the run's lock {run_dir / LOCK}: {exc.strerror or exc}") from None
    for delay in _RETRY_DELAYS:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if delay is None:
                handle.close()
                raise UsageError(f"{run_dir} is in use by another live run") from None
            time.sleep(delay)
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def release_lock(handle: IO[str]) -> None:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def lock_pid(run_dir: Path) -> int | None:
    """The pid the run's lock file names (the last process that held it), whether or not it still does.

    A run dir copied with ``cp -r`` carries a lock file nobody holds, naming the live runner of the original.
    """
    try:
        text = (run_dir / LOCK).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) < 12 else None


def lock_holder(run_dir: Path, *, wait: bool = False) -> str | None:
    """``"pid N"`` while a live process holds the run's lock, else None. Never takes the lock for long.

    A runner killed while it starts a command leaves the lock with that child for a moment (from fork to
    exec the child shares the runner's open files). With ``wait`` (before taking a run over: replay), while
    the process the file names is not running here the probe waits about two seconds for that to pass;
    a lock still held then is another process's (a child that never ran a new program, or a runner on
    another machine that shares the directory).
    """
    delays = iter(_ORPHAN_DELAYS if wait else (None,))
    while True:
        owner = _probe(run_dir)
        if owner is None:
            return None
        if not owner.isdigit():
            return "another process"
        if _alive(int(owner)):
            return f"pid {owner}"
        delay = next(delays)
        if delay is None:
            return f"a process other than pid {owner}, which is not running here"
        time.sleep(delay)


def _probe(run_dir: Path) -> str | None:
    """What the lock file says (maybe nothing) while someone holds the lock; None when nobody does."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None  # no lock file (or none we can read): nothing proves the run is live
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 64).decode("ascii", "replace").strip()
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's, or not a pid we can ask about: taken as the holder
    return True


# -- a local tree's lock -------------------------------------------------------------------------------------


@define(frozen=True)
class TreeHolder:
    """The run that holds a tree, as its process wrote it into the tree's lock file."""

    run_id: str
    pid: int
    started: str
    run_dir: str = ""

    def describe(self) -> str:
        where = f", run dir {self.run_dir}" if self.run_dir else ""
        return f"run {self.run_id} (pid {self.pid}, started {self.started}{where})"

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "pid": self.pid, "started": self.started, "run_dir": self.run_dir}


def _read_holder(handle: IO[str]) -> TreeHolder | None:
    """The holder named in the file; None for an empty or damaged file (a holder may be writing it)."""
    handle.seek(0)
    try:
        data = json.loads(handle.read(4096))
        run_dir = str(data.get("run_dir", ""))
        return TreeHolder(str(data["run_id"]), int(data["pid"]), str(data["started"]), run_dir)
    except (ValueError, KeyError, TypeError):
        return None


def _write_holder(handle: IO[str], holder: TreeHolder) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps(holder.to_json()))
    handle.flush()


def hold_tree_lock(
    path: Path, holder: TreeHolder, *, on_busy: Callable[[TreeHolder | None], None]
) -> tuple[IO[str], TreeHolder | None]:
    """Take a tree's lock for ``holder``; return the handle and the previous holder the file named.

    When another live process holds it, ``on_busy`` is called with that holder (None while it is still
    writing its name): raising refuses, returning waits until the lock is free. The previous holder is a
    run that ended, or that died without ending (its leftovers may still be running).
    """
    try:
        path.parent.mkdir(exist_ok=True)  # never the tree itself: a tree that is gone stays gone
        if path.parent.is_symlink():
            raise OSError(errno.ELOOP, f"{path.parent.name} is a symbolic link")
        # A link in its place (committed to the repository, say) would make the runner write elsewhere.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        handle = os.fdopen(fd, "a+")
    except OSError as exc:
        link = (
            " (a symbolic link; remove it, the runner makes the file itself)"
            if exc.errno == errno.ELOOP
            else ""
        )
        raise EvidenceError(f"cannot open the tree's lock {path}: {exc.strerror or exc}{link}") from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = None
            for delay in _RETRY_DELAYS:  # the holder writes its name right after it took the lock
                current = _read_holder(handle)
                if current is not None or delay is None:
                    break
                time.sleep(delay)
            on_busy(current)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        previous = _read_holder(handle)
        _write_holder(handle, holder)
    except BaseException:
        handle.close()
        raise
    return handle, previous


def rename_tree_holder(handle: IO[str], holder: TreeHolder) -> None:
    """Rewrite the held lock's holder (setup learns the run dir after it took the lock)."""
    _write_holder(handle, holder)
