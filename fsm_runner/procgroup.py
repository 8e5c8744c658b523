"""Process-group helpers: is anything of a command still running, and stop all of it.

Every command runs in its own process group, so "everything the command started" is "every process in that
group". Zombies are ignored: a reparented child that the container's init never reaps is dead even though
``kill(-pgid, 0)`` still finds it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")
_POLL_S = 0.02
_DEAD_STATES = frozenset({"Z", "X", "x"})


def _scan_proc(pgid: int) -> bool | None:
    """True/False from /proc, or None when /proc cannot be read (not Linux)."""
    try:
        entries = os.listdir(_PROC)
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited while we were looking
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) < 3:
            continue
        if int(fields[2]) == pgid and fields[0].decode("ascii", "replace") not in _DEAD_STATES:
            return True
    return False


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None when it does not exist.

    A pid and its start time together name one process for the life of the machine, so a recorded group can
    be told apart from an unrelated one that later got the same number.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_same_group(pgid: int, leader_start: int | None) -> bool:
    """True when group ``pgid`` is alive and is still the group whose leader started at ``leader_start``.

    A group whose leader has exited but whose members live on keeps its number reserved (the kernel never
    hands out a pid that is in use as a group id), so it is the recorded group too.
    """
    if pgid <= 1 or not group_alive(pgid):
        return False
    started = process_start_time(pgid)
    return started is None or leader_start is None or started == leader_start


def group_alive(pgid: int) -> bool:
    """Return True while a live (non-zombie) process belongs to process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False  # no member at all, not even a zombie
    except PermissionError:
        pass  # exists, owned by someone else: let /proc decide
    scanned = _scan_proc(pgid)
    return True if scanned is None else scanned


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to the group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def kill_group(pgid: int, *, grace: float = 2.0) -> None:
    """Stop every process in group ``pgid``: SIGTERM, then SIGKILL after ``grace`` seconds.

    Returns once the group is gone (or after a short wait following SIGKILL). Refuses to signal the caller's
    own group or pgid <= 1, which would take the runner (or the whole system) down with it.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to kill process group {pgid}: it is not a command's own group")
    if not group_alive(pgid):
        return
    if not _signal_group(pgid, signal.SIGTERM):
        return
    _signal_group(pgid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
    if grace > 0 and _wait_gone(pgid, grace):
        return
    if not _signal_group(pgid, signal.SIGKILL):
        return
    _wait_gone(pgid, 1.0)
