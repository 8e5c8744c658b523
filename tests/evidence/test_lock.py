"""The run lock and the tree lock: held once, exclude other processes, and vanish with their holder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import pytest

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.layout import LOCK
from fsm_runner.evidence.lock import (
    TreeHolder,
    hold_lock,
    hold_tree_lock,
    lock_holder,
    release_lock,
    rename_tree_holder,
)
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


# -- a tree's lock ------------------------------------------------------------------------------------------


def _refuse(current: TreeHolder | None) -> None:
    raise UsageError(f"busy: {current.describe() if current else 'unnamed'}")


def test_the_tree_lock_names_its_holder_and_the_one_before(tmp_path: Path) -> None:
    lock = tmp_path / "repo" / ".aider_fsm" / "tree.lock"
    first = TreeHolder("run-1", os.getpid(), "2026-01-01T00:00:00Z", "/runs/run-1")
    with pytest.raises(EvidenceError, match="cannot open the tree's lock"):
        hold_tree_lock(lock, first, on_busy=_refuse)
    assert not (tmp_path / "repo").exists(), "a tree that is gone was made again"
    (tmp_path / "repo").mkdir()
    handle, previous = hold_tree_lock(lock, first, on_busy=_refuse)
    assert previous is None and json.loads(lock.read_text()) == first.to_json()
    second = TreeHolder("run-2", os.getpid(), "2026-01-01T00:00:01Z")
    with pytest.raises(
        UsageError, match=r"busy: run run-1 \(pid \d+, started 2026-01-01T00:00:00Z, run dir /runs/run-1\)"
    ):
        hold_tree_lock(lock, second, on_busy=_refuse)
    rename_tree_holder(handle, attrs.evolve(first, run_dir="/elsewhere/run-1"))
    release_lock(handle)
    handle, previous = hold_tree_lock(lock, second, on_busy=_refuse)
    assert previous == attrs.evolve(first, run_dir="/elsewhere/run-1")
    assert json.loads(lock.read_text())["run_id"] == "run-2"
    release_lock(handle)


TREE_HOLDER = """
import os, sys, time
from pathlib import Path
from fsm_runner.evidence.lock import TreeHolder, hold_tree_lock
handle, _ = hold_tree_lock(Path(sys.argv[1]), TreeHolder("child", os.getpid(), "now"), on_busy=print)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.parametrize("how", ["killed", "exits"])
def test_waiting_for_a_tree_ends_when_its_holder_is_gone(tmp_path: Path, how: str) -> None:
    lock = tmp_path / "tree.lock"
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE_HOLDER, str(lock), "60" if how == "killed" else "0.5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        seen: list[TreeHolder | None] = []
        if how == "killed":
            threading.Timer(0.3, proc.kill).start()
        handle, previous = hold_tree_lock(lock, TreeHolder("me", os.getpid(), "later"), on_busy=seen.append)
        assert [h.run_id if h else None for h in seen] == ["child"]
        assert previous is not None and previous.pid == proc.pid
        release_lock(handle)
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.parametrize("linked", ["lock", "parent"])
def test_a_tree_lock_behind_a_symlink_is_refused_and_its_target_untouched(
    tmp_path: Path, linked: str
) -> None:
    """A repository could commit the link: taking the lock must never write where it points."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "tree.lock").write_text("keep\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    if linked == "lock":
        (tree / ".aider_fsm").mkdir()
        (tree / ".aider_fsm" / "tree.lock").symlink_to(victim / "tree.lock")
    else:
        (tree / ".aider_fsm").symlink_to(victim)
    with pytest.raises(EvidenceError, match="symbolic link"):
        hold_tree_lock(
            tree / ".aider_fsm" / "tree.lock", TreeHolder("r1", os.getpid(), "now"), on_busy=_refuse
        )
    assert (victim / "tree.lock").read_text() == "keep\n"


#: A runner that takes the lock, forks a child that shares it for ``argv[2]`` seconds (as a command does from
#: fork to exec), and is gone at once.
FORKING_HOLDER = """\
import os, sys, time
from pathlib import Path
from fsm_runner.evidence.lock import hold_lock
handle = hold_lock(Path(sys.argv[1]))  # kept open: the child shares it
child = os.fork()
if child == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    time.sleep(float(sys.argv[2]))
    os._exit(0)
print(child, flush=True)
os._exit(0)
"""


OTHER = "a process other than pid {pid}, which is not running here"


@pytest.mark.parametrize(
    ("seconds", "wait", "expected"),
    [(0.3, True, None), (30.0, True, OTHER), (30.0, False, OTHER)],
    ids=["for-a-moment", "for-long", "no-wait"],
)
def test_a_lock_left_with_a_child_of_an_exited_holder(
    tmp_path: Path, seconds: float, wait: bool, expected: str | None
) -> None:
    """The runner was killed while it started a command: the child holds the lock from fork to exec. Replay
    (``wait``) waits that moment out; a child that keeps it longer is named as what it is. Listings do not
    wait."""
    proc = subprocess.run(
        [sys.executable, "-c", FORKING_HOLDER, str(tmp_path), str(seconds)], capture_output=True, text=True
    )
    child = int(proc.stdout)
    pid = int((tmp_path / LOCK).read_text())
    try:
        started = time.monotonic()
        assert lock_holder(tmp_path, wait=wait) == (expected.format(pid=pid) if expected else None)
        assert wait or time.monotonic() - started < 0.5, "a listing waited"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
