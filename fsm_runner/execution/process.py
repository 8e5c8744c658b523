"""The one way the runner starts and stops processes: each child leads a process group of its own, so
"everything it started" is "every process in that group", and stopping it stops all of them.

Stage commands (:mod:`fsm_runner.execution.commands`), the command repair agent, git and Graphviz all go
through :func:`spawn_group` / :func:`run_captured` and :func:`kill_group`. Zombies count as gone: a
reparented child that the container's init never reaps is dead even though ``kill(-pgid, 0)`` finds it.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import IO

from attrs import define

from fsm_runner.evidence.atomic import EVIDENCE_MODE
from fsm_runner.execution.interrupts import check_stop, waiting_on

_PROC = Path("/proc")
_POLL_S = 0.02
_PUMP_CHUNK = 1 << 16
_MAX_POLL_MS = 2**31 - 1  # poll() takes a C int; longer timeouts loop
_DEAD_STATES = frozenset({"Z", "X", "x"})
#: How long :func:`kill_tree` keeps sweeping for processes that carry a mark (a fork loop makes new ones).
_SWEEP_S = 5.0


def _processes() -> Iterator[tuple[int, list[bytes], bool]]:
    """Each process in /proc: its pid, the fields of its ``stat`` after the name (``state ppid pgrp session
    ...``) and whether it is dead (a zombie). Raises OSError when /proc cannot be read (not Linux)."""
    for entry in os.listdir(_PROC):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited while we were looking
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 4:
            yield int(entry), fields, fields[0].decode("ascii", "replace") in _DEAD_STATES


def live_processes() -> Iterator[tuple[int, list[bytes]]]:
    """Each live (not zombie) process in /proc: its pid and its ``stat`` fields after the name. Raises
    OSError when /proc cannot be read (not Linux)."""
    return ((pid, fields) for pid, fields, dead in _processes() if not dead)


def exit_codes_of_groups(pgids: Collection[int]) -> list[int]:
    """How the exited members of groups ``pgids`` ended, as far as the system still knows: the exit codes
    (negative: killed by that signal) of members nobody has reaped yet. A container whose init never reaps
    keeps every one; elsewhere a reaped process leaves nothing, and the list is empty."""
    codes: list[int] = []
    try:
        for _pid, fields, dead in _processes():
            # ``exit_code`` (field 52 of stat, Linux >= 3.5) is the wait status a reaper would get.
            if not dead or len(fields) < 50:
                continue
            try:
                pgrp, status = int(fields[2]), int(fields[49])
            except ValueError:
                continue
            if pgrp in pgids:
                codes.append(-(status & 0x7F) if status & 0x7F else status >> 8)
    except OSError:
        pass  # no /proc: nothing known
    return codes


def processes_with_env(entries: Collection[bytes]) -> list[int]:
    """Live processes whose environment holds every one of ``entries`` (``b"NAME=value"``): what a command
    started with them left running, whatever process group or session it moved to since (a daemon that
    forks away from its group keeps the environment it inherited). Empty when /proc cannot be read."""
    found: list[int] = []
    try:
        procs = list(live_processes())
    except OSError:
        return found
    for pid, _fields in procs:
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = set(fh.read().split(b"\0"))
        except OSError:
            continue  # another user's process, or gone
        if all(entry in environ for entry in entries):
            found.append(pid)
    return found


def groups_with_env(pgids: Collection[int], entries: Collection[bytes]) -> list[int]:
    """Those of ``pgids`` with a live member whose environment holds every one of ``entries``: a group a
    process of ours started, not one a record merely names (a record may be forged). Empty without /proc."""
    try:
        group_of = {pid: int(fields[2]) for pid, fields in live_processes()}
    except OSError:
        return []
    marked = {group_of[pid] for pid in processes_with_env(entries) if pid in group_of}
    return [pgid for pgid in pgids if pgid in marked]


def _scan_proc(pgid: int) -> bool | None:
    """True/False from /proc, or None when /proc cannot be read (not Linux)."""
    try:
        return any(int(fields[2]) == pgid for _, fields in live_processes())
    except OSError:
        return None


def process_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie is gone: it only waits for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        if _PROC.is_dir():
            return False
        try:  # no /proc: the kernel's answer, zombies included
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    fields = stat[stat.rfind(b")") + 2 :].split()
    return not fields or fields[0].decode("ascii", "replace") not in _DEAD_STATES


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


def running_group(doc: object) -> int | None:
    """The group a record of a started process names (``pgid``, ``leader_start``, ``"running": true``),
    when that group is still the one recorded and alive; else None.

    A runner that dies while it waits for a command or an agent leaves such a record behind: this is how a
    later process finds what it left running.
    """
    if not isinstance(doc, dict) or doc.get("running") is not True:
        return None
    pgid, start = doc.get("pgid"), doc.get("leader_start")
    if isinstance(pgid, bool) or not isinstance(pgid, int) or not (start is None or type(start) is int):
        return None
    return pgid if is_same_group(pgid, start) else None


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


def kill_tree(pid: int | None, mark: str | None = None) -> None:
    """SIGKILL process ``pid`` with every process descended from it, and every live process whose environment
    holds ``mark`` (``NAME=value``): what a sweep cell's run started when the cell has to be killed.

    The run's commands lead sessions of their own, so neither the cell's group nor its session holds them;
    the tree is read while ``pid`` still lives (it must not have been reaped: its number could be reused),
    and the mark finds what was re-parented before that. What a marked process forks while it is being
    killed carries the mark too: the mark is swept again until nothing carries it (``_SWEEP_S`` at most).
    Never signals the caller or its ancestors.
    """
    if pid is not None and pid <= 1:
        raise ValueError(f"refusing to kill the process tree of {pid}")
    spared = {0, 1, os.getpid()}
    doomed: list[int] = []
    try:
        procs = list(live_processes())
    except OSError:
        procs = []  # no /proc: only ``pid`` itself is known
    parent = {p: int(fields[1]) for p, fields in procs}
    here = os.getpid()
    while here in parent and here not in (0, 1):
        spared.add(here)
        here = parent[here]
    if pid is not None:
        children: dict[int, list[int]] = {}
        for child, ppid in parent.items():
            children.setdefault(ppid, []).append(child)
        doomed.append(pid)
        for member in doomed:  # grows as it is read: breadth first down the tree
            doomed.extend(children.get(member, ()))
    deadline = time.monotonic() + _SWEEP_S
    while True:
        if mark:
            doomed.extend(processes_with_env([mark.encode()]))
        targets = [victim for victim in dict.fromkeys(doomed) if victim not in spared]
        if not targets or not mark or time.monotonic() >= deadline:
            break
        for victim in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGKILL)
        doomed = []
        time.sleep(_POLL_S)
    for victim in targets:  # without a mark, or when the sweeps ran out of time: one last signal
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)


def new_evidence_file(path: Path) -> IO[bytes]:
    """A new, empty file at ``path`` for a command's output, never one a command prepared there.

    A sandboxed command may write its own evidence directory: a link it plants at the name of a later
    attempt's output must not make this process write through it. What is there is removed, and the file
    is created exclusively without following links (a link planted in between makes this fail, not follow).
    It is opened for appending: when the output is capped (cut in place) while a process the command left
    behind still writes, that process writes at the new end, not at its old offset past a hole of NULs.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(path, flags, EVIDENCE_MODE), "ab")


def _pump(src: IO[bytes], dst_path: Path, echo_fd: int) -> None:
    """Copy a pipe to an evidence file and to the runner's terminal (interactive commands only)."""
    with src, os.fdopen(os.open(dst_path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW), "ab") as dst:
        while chunk := os.read(src.fileno(), _PUMP_CHUNK):
            dst.write(chunk)
            dst.flush()
            with contextlib.suppress(OSError):
                os.write(echo_fd, chunk)


def spawn_group(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    stdout_path: Path,
    stderr_path: Path | None,
    interactive: bool = False,
    pass_fds: Sequence[int] = (),
) -> tuple[subprocess.Popen[bytes], list[threading.Thread]]:
    """Start ``argv`` as the leader of a new process group, its output going to files (``stderr_path=None``:
    both streams into ``stdout_path``); also return the threads that tee it to the terminal when
    ``interactive`` (join them once the command is done). ``pass_fds`` stay open in the child (the
    namespaces a sandboxed command joins)."""
    check_stop()  # this thread is being stopped: start nothing new
    if not interactive:
        with contextlib.ExitStack() as files:
            out = files.enter_context(new_evidence_file(stdout_path))
            err = files.enter_context(new_evidence_file(stderr_path)) if stderr_path is not None else out
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                pass_fds=tuple(pass_fds),
            )
        return proc, []
    # A human is watching: inherit stdin, and tee the output to the terminal and the evidence files.
    assert stderr_path is not None, "interactive commands keep stdout and stderr apart"
    new_evidence_file(stdout_path).close()
    new_evidence_file(stderr_path).close()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, stdout_path, 1), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, stderr_path, 2), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    return proc, pumps


@define(frozen=True)
class Captured:
    """A short helper program's result (git, Graphviz): its exit code and both outputs, in memory."""

    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


def run_captured(
    argv: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> Captured:
    """Run a helper program in its own group with its output captured; on timeout or an interrupt the whole
    group is killed (a helper's own children included). Raises :class:`OSError` when it cannot start."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        with waiting_on(proc.pid):
            out, err = proc.communicate(stdin, timeout=timeout)
    except BaseException as exc:
        kill_group(proc.pid, grace=0)
        out, err = proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            return Captured(proc.returncode, out, err, timed_out=True)
        raise
    check_stop()  # another thread ended the helper to stop this one
    return Captured(proc.returncode, out, err)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """Wait for the child to exit; False on timeout.

    ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms, which adds latency to every short command. On
    Linux a pidfd becomes readable the moment the child exits, so waiting costs no polling at all.
    """
    if timeout is None:
        proc.wait()
        return True
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: fall back to the polling wait
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll(min(_MAX_POLL_MS, max(0, math.ceil((deadline - time.monotonic()) * 1000)))):
            if time.monotonic() >= deadline:
                return False
    finally:
        os.close(pidfd)
    proc.wait()
    return True


def wait_or_stop(proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """:func:`wait_exit` that a stop request for this thread also ends: another thread ends the child's
    group, the wait returns and :class:`~fsm_runner.execution.interrupts.Interrupted` is raised here (the
    caller's ``except BaseException`` reaps the group)."""
    with waiting_on(proc.pid):
        finished = wait_exit(proc, timeout)
    check_stop()
    return finished


def stop_and_reap(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Kill the command's whole group and reap its leader."""
    kill_group(proc.pid, grace=grace)
    try:
        proc.wait(timeout=max(grace, 1.0))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
