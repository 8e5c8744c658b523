"""A run's lock file: held by the process that runs it, probed by everything that asks "is it live?".

``flock`` locks vanish with their process, so a run killed with SIGKILL is never reported live, and a
recycled pid cannot fool the probe (the pid in the file is only read to name the holder).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import IO

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.layout import LOCK

#: Waits between attempts to take a lock that a reader may be probing (None: give up).
_RETRY_DELAYS = (0.005, 0.01, 0.02, 0.05, None)


def hold_lock(run_dir: Path) -> IO[str]:
    """Take the run's lock for this process (the pid is written into the file for readers).

    A reader's probe (:func:`lock_holder`) holds the lock for a moment; a few short retries step around it.
    """
    try:
        handle = (run_dir / LOCK).open("a+")
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


def lock_holder(run_dir: Path) -> str | None:
    """``"pid N"`` while a live process holds the run's lock, else None. Never takes the lock for long."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY)
    except OSError:
        return None  # no lock file (or none we can read): nothing proves the run is live
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 64).decode("ascii", "replace").strip()
            return f"pid {owner}" if owner.isdigit() else "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
