"""The run lock: held once, excludes other processes, and probed without being taken by lock_holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fsm_runner.errors import UsageError
from fsm_runner.evidence.layout import LOCK
from fsm_runner.evidence.lock import hold_lock, lock_holder, release_lock
from tests.evidence.conftest import LockHolders


def test_a_run_dir_can_be_held_once(tmp_path: Path) -> None:
    handle = hold_lock(tmp_path)
    try:
        assert (tmp_path / LOCK).read_text() == str(os.getpid())
        with pytest.raises(UsageError) as info:
            hold_lock(tmp_path)
        assert str(tmp_path) in str(info.value) and "in use" in str(info.value)
    finally:
        release_lock(handle)
    assert handle.closed


def test_release_then_acquire_again(tmp_path: Path) -> None:
    for _ in range(3):
        release_lock(hold_lock(tmp_path))
    handle = hold_lock(tmp_path)
    assert (tmp_path / LOCK).read_text() == str(os.getpid())  # rewritten, not appended
    release_lock(handle)


def test_the_lock_excludes_other_processes(tmp_path: Path) -> None:
    probe = (
        "import fcntl, sys\n"
        f"h = open({str(tmp_path / LOCK)!r}, 'a+')\n"
        "try:\n    fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(7)\n"
    )
    handle = hold_lock(tmp_path)
    try:
        assert subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 7
    finally:
        release_lock(handle)
    assert subprocess.run([sys.executable, "-c", probe], timeout=30).returncode == 0


def test_different_run_dirs_do_not_conflict(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = hold_lock(tmp_path / "a"), hold_lock(tmp_path / "b")
    assert (lock_holder(tmp_path / "a"), lock_holder(tmp_path / "b")) == (f"pid {os.getpid()}",) * 2
    release_lock(a)
    release_lock(b)


# -- lock_holder -------------------------------------------------------------------------------------------


def test_no_lock_file_means_no_holder(tmp_path: Path) -> None:
    assert lock_holder(tmp_path) is None
    assert lock_holder(tmp_path / "missing") is None
    assert not (tmp_path / LOCK).exists()  # probing does not create the file


def test_a_lock_file_nobody_holds_has_no_holder(tmp_path: Path) -> None:
    release_lock(hold_lock(tmp_path))
    assert (tmp_path / LOCK).read_text() == str(os.getpid())  # a pid is left behind, but nobody holds it
    assert lock_holder(tmp_path) is None


def test_the_holder_is_named_while_it_lives_and_forgotten_once_killed(
    tmp_path: Path, holders: LockHolders
) -> None:
    assert lock_holder(tmp_path) is None
    proc = holders.start(tmp_path)
    assert lock_holder(tmp_path) == f"pid {proc.pid}"
    assert lock_holder(tmp_path) == f"pid {proc.pid}"  # probing did not steal or break the lock
    with pytest.raises(UsageError, match="in use"):
        hold_lock(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / LOCK).read_text() == str(proc.pid)  # the stale pid is still in the file
    assert lock_holder(tmp_path) is None
    release_lock(hold_lock(tmp_path))  # and the run dir can be taken again


def test_a_holder_that_wrote_no_pid_is_still_reported(tmp_path: Path, holders: LockHolders) -> None:
    holders.start(tmp_path / LOCK, bare=True)
    assert lock_holder(tmp_path) == "another process"


def test_a_readers_probe_never_makes_taking_the_lock_fail(tmp_path: Path) -> None:
    """``runs`` probes every run's lock; a run or replay taking it at that moment must still get it."""
    (tmp_path / LOCK).write_text("")
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            lock_holder(tmp_path)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(300):
            release_lock(hold_lock(tmp_path))
    finally:
        stop.set()
        prober.join()
