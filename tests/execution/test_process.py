"""Process groups: starting a command as a group leader, telling live groups from dead or reused ones,
stopping a whole group, and running short helper programs with their output captured."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import pytest

from fsm_runner.execution.process import (
    Captured,
    exit_codes_of_groups,
    group_alive,
    is_same_group,
    kill_group,
    kill_tree,
    process_alive,
    process_start_time,
    processes_with_env,
    run_captured,
    running_group,
    spawn_group,
    stop_and_reap,
    wait_exit,
)
from tests.conftest import pid_alive
from tests.execution.conftest import pgrp_members

PATH_ONLY = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def wait_for_text(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"{path.name} was not written within {timeout}s"
        time.sleep(0.01)
    return path.read_text()


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


# -- telling groups apart ----------------------------------------------------------------------------------


def test_group_alive_ignores_zombies() -> None:
    """A dead but unreaped member still answers kill(-pgid, 0); it must not count as alive."""
    proc = subprocess.Popen(["true"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, 0)  # the kernel still knows the group ...
        assert not group_alive(proc.pid)  # ... but nothing in it is alive
    finally:
        proc.wait()
    assert not group_alive(proc.pid)


@pytest.mark.parametrize(("cmd", "code"), [("exit 3", 3), ("exit 0", 0), ("kill -TERM $$", -15)])
def test_exit_codes_of_groups_reads_unreaped_members(cmd: str, code: int) -> None:
    proc = subprocess.Popen(["bash", "-c", cmd], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while not exit_codes_of_groups({proc.pid}):
            assert time.monotonic() < deadline, "the child never showed up as an unreaped member"
            time.sleep(0.01)
        assert exit_codes_of_groups({proc.pid}) == [code]
        assert exit_codes_of_groups({proc.pid + 100_000}) == []
    finally:
        proc.wait()
    assert exit_codes_of_groups({proc.pid}) == []  # reaped: nothing is known any more


def test_processes_with_env_finds_a_process_by_what_it_inherited(tmp_path: Path) -> None:
    mark = f"FSM_TEST_MARK={os.getpid()}-{time.monotonic_ns()}"
    env = {**PATH_ONLY, "FSM_TEST_MARK": mark.split("=", 1)[1], "OTHER": "x"}
    # The sleeper leaves its parent's group and session, as a daemon does.
    proc = subprocess.Popen(["setsid", "sleep", "30"], env=env)
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in processes_with_env([mark.encode()]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert processes_with_env([mark.encode(), b"OTHER=x"]) == [proc.pid]
        assert processes_with_env([mark.encode(), b"OTHER=y"]) == []
    finally:
        proc.kill()
        proc.wait()
    assert processes_with_env([mark.encode()]) == []


def test_a_group_outlives_its_leader_while_a_member_lives(tmp_path: Path, pgids: list[int]) -> None:
    leader = subprocess.Popen(
        ["bash", "-c", f"sleep 1000 & echo $! > {tmp_path / 'member'}"], start_new_session=True
    )
    pgids.append(leader.pid)
    leader.wait(timeout=10)
    member = int(wait_for_text(tmp_path / "member"))
    assert group_alive(leader.pid) and pgrp_members(leader.pid) == [member]
    assert process_start_time(leader.pid) is None  # the leader is gone ...
    assert is_same_group(leader.pid, 12345)  # ... so the start time cannot rule the group out
    kill_group(leader.pid, grace=1.0)
    assert not group_alive(leader.pid) and not pid_alive(member)


def test_is_same_group_tells_a_reused_group_id_apart(pgids: list[int]) -> None:
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    pgids.append(proc.pid)
    try:
        start = process_start_time(proc.pid)
        assert isinstance(start, int)
        assert is_same_group(proc.pid, start) and is_same_group(proc.pid, None)
        assert not is_same_group(proc.pid, start + 1)  # same number, different process
    finally:
        kill_group(proc.pid, grace=0.5)
        proc.wait()
    assert not is_same_group(proc.pid, start)
    assert process_start_time(proc.pid) is None


@pytest.mark.parametrize("pgid", [0, 1, -5])
def test_no_real_group_below_two(pgid: int) -> None:
    assert not is_same_group(pgid, None)


# -- stopping groups -------------------------------------------------------------------------------------


def test_kill_group_refuses_the_callers_own_group() -> None:
    with pytest.raises(ValueError, match="refusing"):
        kill_group(os.getpgrp())
    with pytest.raises(ValueError, match="refusing"):
        kill_group(1)


def test_kill_group_on_a_gone_group_is_a_no_op() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    kill_group(proc.pid, grace=0.1)  # must not raise
    assert not group_alive(proc.pid)


@pytest.mark.parametrize("ignores_term", [False, True])
def test_kill_group_stops_every_member(tmp_path: Path, pgids: list[int], ignores_term: bool) -> None:
    trap = "trap '' TERM; " if ignores_term else ""
    script = f"{trap}sleep 1000 & sleep 1000 & echo ready > {tmp_path / 'ready'}; wait"
    proc = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    pgids.append(proc.pid)
    wait_for_text(tmp_path / "ready")
    members = pgrp_members(proc.pid)
    assert len(members) == 3
    start = time.monotonic()
    kill_group(proc.pid, grace=0.3)
    elapsed = time.monotonic() - start
    proc.wait(timeout=5)
    assert pgrp_members(proc.pid) == [] and not any(pid_alive(pid) for pid in members)
    # a TERM-ignoring group needs SIGKILL after the grace period; a polite one goes at once
    assert (elapsed >= 0.3) is ignores_term and elapsed < 2


def test_kill_group_wakes_a_stopped_group(pgids: list[int]) -> None:
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    pgids.append(proc.pid)
    os.kill(proc.pid, signal.SIGSTOP)
    kill_group(proc.pid, grace=2.0)
    assert proc.wait(timeout=5) == -signal.SIGTERM  # SIGCONT let it act on SIGTERM, no SIGKILL needed


def test_stop_and_reap_kills_the_group_and_reaps_the_leader(tmp_path: Path, pgids: list[int]) -> None:
    proc, pumps = spawn_group(["bash", "-c", "sleep 1000 & wait"], tmp_path, PATH_ONLY, tmp_path / "o", None)
    pgids.append(proc.pid)
    assert pumps == []
    assert not wait_exit(proc, 0.2)
    stop_and_reap(proc, grace=0.5)
    assert proc.returncode is not None and pgrp_members(proc.pid) == []


# -- spawn_group -----------------------------------------------------------------------------------------


def test_spawn_group_leads_a_new_group_with_output_in_files(tmp_path: Path) -> None:
    script = "echo out; echo err >&2; cat; echo pwd=$PWD home=${HOME:-unset}"
    proc, pumps = spawn_group(["bash", "-c", script], tmp_path, PATH_ONLY, tmp_path / "o", tmp_path / "e")
    assert wait_exit(proc, 10) and pumps == []
    assert os.getpgid(os.getpid()) != proc.pid
    assert proc.returncode == 0
    assert (tmp_path / "o").read_text() == f"out\npwd={tmp_path} home=unset\n"  # stdin was empty, env exact
    assert (tmp_path / "e").read_text() == "err\n"


def test_spawn_group_without_a_stderr_file_merges_the_streams(tmp_path: Path) -> None:
    proc, _ = spawn_group(
        ["bash", "-c", "echo one; echo two >&2; echo three"], tmp_path, PATH_ONLY, tmp_path / "both", None
    )
    assert wait_exit(proc, 10) and proc.returncode == 0
    assert (tmp_path / "both").read_text() == "one\ntwo\nthree\n"


def test_spawn_group_interactive_tees_to_files_and_passes_stdin(tmp_path: Path) -> None:
    script = f"""
import sys
from pathlib import Path
from fsm_runner.execution.process import spawn_group, wait_exit
root = Path({str(tmp_path)!r})
proc, pumps = spawn_group(["bash", "-c", "read -r x; echo got:$x; echo warn >&2"], root, {PATH_ONLY!r},
                          root / "o", root / "e", interactive=True)
wait_exit(proc, 10)
for pump in pumps:
    pump.join(10)
print("EXIT", proc.returncode, len(pumps))
"""
    out = subprocess.run([sys.executable, "-c", script], input="hello\n", capture_output=True, text=True,
                         timeout=30)  # fmt: skip
    assert "got:hello" in out.stdout and "EXIT 0 2" in out.stdout, out.stderr  # shown to the human ...
    assert "warn" in out.stderr
    assert (tmp_path / "o").read_text() == "got:hello\n"  # ... and recorded
    assert (tmp_path / "e").read_text() == "warn\n"


def test_wait_exit_reports_a_timeout_then_the_exit(tmp_path: Path, pgids: list[int]) -> None:
    proc, _ = spawn_group(["sleep", "0.3"], tmp_path, PATH_ONLY, tmp_path / "o", None)
    pgids.append(proc.pid)
    assert wait_exit(proc, 0.05) is False and proc.returncode is None
    assert wait_exit(proc, 10) is True and proc.returncode == 0
    assert wait_exit(proc, None) is True


# -- run_captured ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 128])
def test_run_captured_returns_the_exit_code_and_both_outputs(code: int) -> None:
    done = run_captured(["bash", "-c", f"echo out; echo err >&2; exit {code}"], timeout=10)
    assert done == Captured(returncode=code, stdout=b"out\n", stderr=b"err\n", timed_out=False)


def test_run_captured_reports_death_by_signal() -> None:
    done = run_captured(["bash", "-c", "kill -TERM $$"], timeout=10)
    assert (done.returncode, done.timed_out) == (-signal.SIGTERM, False)


def test_run_captured_keeps_binary_output_whole() -> None:
    done = run_captured(["head", "-c", "300000", "/dev/urandom"], timeout=10)
    assert done.returncode == 0 and len(done.stdout) == 300000


@pytest.mark.parametrize("data", [b"", b"line one\nline two\n", bytes(range(256)) * 1000])
def test_run_captured_passes_stdin_bytes(data: bytes) -> None:
    done = run_captured(["cat"], timeout=10, stdin=data)
    assert (done.returncode, done.stdout) == (0, data)


def test_run_captured_without_stdin_gives_an_empty_one() -> None:
    start = time.monotonic()
    done = run_captured(["bash", "-c", "cat; echo rc=$?"], timeout=10)
    assert done.stdout == b"rc=0\n" and time.monotonic() - start < 5  # cat saw EOF, it did not wait


def test_run_captured_uses_cwd_and_exactly_the_env(tmp_path: Path) -> None:
    done = run_captured(["bash", "-c", 'echo "$PWD ${FOO} ${HOME:-unset}"'], timeout=10, cwd=tmp_path,
                        env={**PATH_ONLY, "FOO": "bar"})  # fmt: skip
    assert done.stdout.decode() == f"{tmp_path} bar unset\n"


def test_run_captured_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    # The leader starts a child that starts a grandchild, then all of them wait.
    script = "bash -c 'sleep 1000 & echo grandchild $!; wait' & echo child $!; echo leader $$; wait"
    start = time.monotonic()
    done = run_captured(["bash", "-c", script], timeout=1.0, cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert done.timed_out is True
    assert done.returncode in (-signal.SIGTERM, -signal.SIGKILL)
    pids = dict(line.split() for line in done.stdout.decode().splitlines())
    assert set(pids) == {"leader", "child", "grandchild"}
    assert 1.0 <= elapsed < 4
    for role, pid in pids.items():
        assert wait_dead(int(pid)), f"the {role} {pid} outlived the timeout"
    assert pgrp_members(int(pids["leader"])) == []


def test_run_captured_kills_the_group_when_interrupted(tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Stop

    pid_file = tmp_path / "pids"
    script = f"sleep 1000 & echo $! $$ > {pid_file}; wait"
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Stop):
            run_captured(["bash", "-c", script], timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    member, leader = (int(p) for p in pid_file.read_text().split())
    assert wait_dead(member) and wait_dead(leader)


def test_run_captured_raises_when_the_program_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_captured([str(tmp_path / "no-such-program")], timeout=10)
    with pytest.raises(OSError):
        run_captured(["true"], timeout=10, cwd=tmp_path / "missing")


def test_running_group_reads_only_a_live_group_that_is_still_the_recorded_one() -> None:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        start = process_start_time(proc.pid)
        assert start is not None
        record = {"pgid": proc.pid, "leader_start": start, "running": True}
        assert running_group(record) == proc.pid
        assert running_group({**record, "leader_start": None}) == proc.pid  # an older record without it
        assert running_group({**record, "running": False}) is None
        assert running_group({**record, "leader_start": start + 1}) is None  # the pid was reused
        for bad in (
            {**record, "pgid": True},
            {**record, "pgid": "1"},
            {**record, "leader_start": 1.5},
            [],
            None,
        ):
            assert running_group(bad) is None
    finally:
        proc.kill()
        proc.wait()
    assert running_group(record) is None


#: A cell-like leader: a child in a session of its own (as the runner starts a command), which starts a
#: daemon in a session of its own too; "CHILD DAEMON" pids go to the file named by argv[1].
TREE_LEADER = r"""
import os, subprocess, sys, time
child_code = (
    "import os, subprocess, sys, time\n"
    "daemon = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
    "open(sys.argv[1] + '.part', 'w').write(f'{os.getpid()} {daemon.pid}')\n"
    "os.rename(sys.argv[1] + '.part', sys.argv[1])\n"
    "time.sleep(60)\n"
)
subprocess.Popen([sys.executable, "-c", child_code, sys.argv[1]], start_new_session=True)
time.sleep(60)
"""


def _wait_dead(pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("stray", "marked", "daemon_dies"),
    [(False, False, True), (True, True, True), (True, False, False)],
    ids=["whole-tree", "stray-with-mark", "stray-without-mark"],
)
def test_kill_tree_ends_descendants_in_sessions_of_their_own_and_strays_by_their_mark(
    tmp_path: Path, stray: bool, marked: bool, daemon_dies: bool
) -> None:
    """Descendants die with the leader whatever sessions they lead. A process that left the tree (its
    parent died first, so it was re-parented) is found by the mark in its environment, and only by it."""
    pid_file = tmp_path / "pids"
    name, value = "FSM_TEST_TREE_MARK", os.urandom(8).hex()
    env = {**os.environ, name: value}
    leader = subprocess.Popen(
        [sys.executable, "-c", TREE_LEADER, str(pid_file)], start_new_session=True, env=env
    )
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 10
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the tree did not start"
            time.sleep(0.02)
        child, daemon = (int(p) for p in pid_file.read_text().split())
        pids = [child, daemon]
        assert os.getsid(child) == child and os.getsid(daemon) == daemon
        if stray:
            os.kill(child, signal.SIGKILL)
            _wait_dead([child])
        kill_tree(leader.pid, f"{name}={value}" if marked else None)
        assert leader.wait(5) == -signal.SIGKILL
        _wait_dead([child, daemon])
        assert not process_alive(child)
        assert process_alive(daemon) is not daemon_dies
    finally:
        leader.kill()
        leader.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("pid", [1, 0, -5])
def test_kill_tree_refuses_init_and_what_is_not_a_process(pid: int) -> None:
    with pytest.raises(ValueError, match="refusing"):
        kill_tree(pid)


def test_kill_tree_outlasts_a_marked_fork_loop() -> None:
    """A marked process that keeps forking: what it forks while it is being killed carries the mark too,
    and is swept by the next pass."""
    name, value = "FSM_TEST_FORK_LOOP_MARK", os.urandom(8).hex()
    loop = "while :; do sleep 300 & sleep 0.002; done"
    proc = subprocess.Popen(
        ["setsid", "bash", "-c", loop], env={**os.environ, name: value}, stdout=subprocess.DEVNULL
    )
    mark = f"{name}={value}"
    try:
        deadline = time.monotonic() + 10
        while len(processes_with_env([mark.encode()])) < 150:  # a long scan: the loop forks meanwhile
            assert time.monotonic() < deadline, "the loop did not get going"
            time.sleep(0.02)
        kill_tree(None, mark)
        assert processes_with_env([mark.encode()]) == []
    finally:
        for pid in processes_with_env([mark.encode()]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(5)
