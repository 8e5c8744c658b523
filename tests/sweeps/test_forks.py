"""Cells forked from the preloaded server: real server, real cells, real runs and services; no mocks."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm_runner.sweeps.cells import CellProcess, CellResult, CellRun, CellSpec
from fsm_runner.sweeps.executors import LocalExecutor
from fsm_runner.sweeps.forks import CellForker, ForkedCell
from tests.conftest import pid_alive, procs_under, write_target
from tests.helpers import target_files as files
from tests.sweeps.conftest import Workspace, assert_nothing_running

#: Marks the moment the run is inside a slow command (the file is written in the run's copy of the target).
SLOW = r"""
import time
open(".aider_fsm/slow.mark", "w").close()
time.sleep(30)
"""
#: The tests phase is slow: nothing deployed yet.
SLOW_TESTS = files.PIPELINE.replace("cmds: python3 stage.py tests", "cmds: python3 slow.py")
#: The rollout is slow: the service is deployed and serving.
SLOW_ROLLOUT = files.PIPELINE.replace("    - python3 stage.py rollout\n", "    - python3 slow.py\n")
#: What differs between two runs of the same cell.
VARYING = {"run_id", "run_dir", "started_at", "duration_s"}


@pytest.fixture
def forker(tmp_path: Path) -> Iterator[CellForker]:
    (tmp_path / "cells").mkdir()
    forker = CellForker()
    yield forker
    forker.close()


def _slow_target(root: Path, pipeline: str) -> Path:
    assert pipeline != files.PIPELINE
    tree = write_target(root / "slow_target", pipeline=pipeline)
    (tree / "slow.py").write_text(SLOW)
    return tree


def _wait_for(pattern: str, under: Path, cell: CellRun, timeout: float = 60.0) -> Path:
    deadline = time.monotonic() + timeout
    while not (found := sorted(under.rglob(pattern))):
        assert cell.poll() is None, f"the cell ended before {pattern} appeared: {cell.poll()}"
        assert time.monotonic() < deadline, f"{pattern} did not appear under {under} within {timeout}s"
        time.sleep(0.05)
    return found[0]


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()


def _servers_of_this_process() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"fsm_runner.sweeps.forks" in cmdline and ppid == os.getpid():
            found.append(int(entry.name))
    return found


def _comparable(row: CellResult) -> str:
    """The row without what differs from run to run: its id (also in the name of the run's private copy,
    which metrics may name) and its times."""
    assert row.run_id is not None
    data = {k: v for k, v in row.to_json().items() if k not in VARYING}
    data["metrics"] = {k: v for k, v in (row.metrics or {}).items() if k != "ts"}
    return re.sub(re.escape(row.run_id) + r'[^/"]*', "RUN", json.dumps(data, sort_keys=True))


def test_a_forked_cell_gives_the_row_a_new_interpreter_gives(
    workspace: Workspace, forker: CellForker, tmp_path: Path
) -> None:
    spec = CellSpec(target=str(workspace.arith), llm="exact")
    forked = ForkedCell(spec, tmp_path / "cells", "forked", forker).wait(120)
    fresh = CellProcess(spec, tmp_path / "cells", "fresh").wait(120)
    assert forked is not None and fresh is not None
    assert forked.ok and forked.score == 1.0, forked.error
    assert _comparable(forked) == _comparable(fresh)
    assert forked.run_id != fresh.run_id
    assert_nothing_running(tmp_path)


def test_a_forked_cell_leads_its_session_in_the_callers_directory_and_environment(
    workspace: Workspace, forker: CellForker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server starts with the first cell, in this environment; the second cell must not see it.
    monkeypatch.setenv("FSM_FORKS_GONE", "1")
    first = ForkedCell(
        CellSpec(target=str(tmp_path / "missing"), llm="exact"), tmp_path / "cells", "first", forker
    )
    assert first.wait(60) is not None
    here, elsewhere = tmp_path / "here", tmp_path / "tmp2"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.delenv("FSM_FORKS_GONE")
    monkeypatch.setenv("FSM_FORKS_PROBE", "given")
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    tree = _slow_target(workspace.root, SLOW_TESTS)
    (here / "cells").mkdir()
    cell = ForkedCell(CellSpec(target=str(tree), llm="exact"), Path("cells"), "second", forker)
    try:
        # The run's private copy is made under the TMPDIR the cell was given, not the server's.
        _wait_for("slow.mark", elsewhere, cell)
        _state, _ppid, pgrp, session = _stat_fields(cell.pid)[:4]
        assert int(pgrp) == int(session) == cell.pid, "a forked cell leads a session of its own"
        assert Path(os.readlink(f"/proc/{cell.pid}/cwd")) == here
        # The cell's environment as its commands inherit it (a process's own /proc environ is the one it
        # was started with, which for a fork is the server's).
        (command,) = procs_under(elsewhere)
        environ = Path(f"/proc/{command}/environ").read_bytes().split(b"\0")
        assert b"FSM_FORKS_PROBE=given" in environ
        assert not any(e.startswith(b"FSM_FORKS_GONE=") for e in environ)
    finally:
        row = cell.stop(grace=30)
    assert not row.ok
    assert_nothing_running(tmp_path)


@pytest.mark.parametrize("kind", [CellProcess, ForkedCell])
@pytest.mark.parametrize("pipeline", [SLOW_TESTS, SLOW_ROLLOUT], ids=["in_tests", "deployed"])
def test_stop_tears_the_run_down_and_leaves_nothing(
    workspace: Workspace, forker: CellForker, tmp_path: Path, pipeline: str, kind: type[CellRun]
) -> None:
    tree = _slow_target(workspace.root, pipeline)
    spec = CellSpec(target=str(tree), llm="exact")
    cells = tmp_path / "cells"
    cell = ForkedCell(spec, cells, "cell", forker) if kind is ForkedCell else CellProcess(spec, cells, "cell")
    mark = _wait_for("slow.mark", workspace.tmp, cell)
    svc = mark.parent / "svc.pid"
    service = int(svc.read_text()) if pipeline is SLOW_ROLLOUT else None
    assert service is None or pid_alive(service)
    start = time.monotonic()
    row = cell.stop(grace=30)
    assert time.monotonic() - start < 20, "the run tore itself down on SIGTERM, it was not killed"
    assert not row.ok and row.error is not None
    # The runner's SIGTERM handling tears the run down; the cell still writes its row, naming the run.
    assert row.error.startswith("interrupted (received SIGTERM)")
    assert row.run_dir is not None and row.run_dir in row.error
    assert "Traceback" not in cell.log_path.read_text()
    if service is not None:
        assert not pid_alive(service)
        teardown = sorted((tree / ".aider_fsm" / "artifacts").glob("*/teardown"))
        assert teardown, "the deployed service was torn down by the run, not only killed"
    assert_nothing_running(tmp_path)


@pytest.mark.parametrize("kind", [CellProcess, ForkedCell])
def test_a_cell_stopped_without_grace_is_killed_with_everything_its_run_started(
    workspace: Workspace, forker: CellForker, tmp_path: Path, kind: type[CellRun]
) -> None:
    """The run's command ignores SIGTERM and leads a session of its own: killing the cell's group would leave
    it running. The cell's mark (in every command's environment) finds it."""
    tree = _slow_target(workspace.root, SLOW_TESTS)
    (tree / "slow.py").write_text("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLOW)
    spec = CellSpec(target=str(tree), llm="exact")
    cells = tmp_path / "cells"
    cell = ForkedCell(spec, cells, "cell", forker) if kind is ForkedCell else CellProcess(spec, cells, "cell")
    _wait_for("slow.mark", workspace.tmp, cell)
    commands = procs_under(workspace.tmp)
    assert commands and all(os.getsid(pid) != cell.pid for pid in commands), "outside the cell's session"
    for pid in commands:
        assert cell.mark.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    row = cell.stop(grace=0)
    assert not row.ok and row.error is not None
    _assert_gone(commands, "the run's command outlived its killed cell")
    assert_nothing_running(tmp_path)


def _assert_gone(pids: list[int], why: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(pid_alive(pid) for pid in pids), why


def test_a_cell_killed_by_a_signal_gives_a_failed_row_naming_it(
    workspace: Workspace, forker: CellForker, tmp_path: Path
) -> None:
    tree = _slow_target(workspace.root, SLOW_TESTS)
    cell = ForkedCell(CellSpec(target=str(tree), llm="exact"), tmp_path / "cells", "cell", forker)
    _wait_for("slow.mark", workspace.tmp, cell)
    os.kill(cell.pid, signal.SIGKILL)
    row = cell.wait(30)
    assert row is not None and not row.ok and row.error is not None
    assert "killed by signal 9" in row.error and str(cell.log_path) in row.error
    commands = procs_under(workspace.tmp)  # the run's own command outlives a cell killed outright
    assert commands
    assert cell.stop() == row
    _assert_gone(commands, "stopping the ended cell did not end what its run left running")
    assert_nothing_running(tmp_path)


#: Leaves a process in a session of its own behind (the run's teardown never sees it).
ESCAPING = (
    "import subprocess\n"
    "subprocess.Popen(['setsid', 'sleep', '300'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,"
    " stderr=subprocess.DEVNULL)\n"
)
#: A caller that starts one cell (forked by a server, or a new interpreter), says its pid, and waits.
CALLER = """\
import sys, time
from pathlib import Path
from fsm_runner.sweeps.cells import CellProcess, CellSpec
from fsm_runner.sweeps.forks import CellForker, ForkedCell
spec, where = CellSpec(target=sys.argv[1], llm="exact"), Path(sys.argv[2])
if sys.argv[3] == "forked":
    cell = ForkedCell(spec, where, "cell", CellForker())
else:
    cell = CellProcess(spec, where, "cell")
print(cell.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["forked", "interpreter"])
@pytest.mark.parametrize("pipeline", [SLOW_TESTS, SLOW_ROLLOUT], ids=["in_tests", "deployed"])
def test_cells_whose_caller_is_killed_tear_their_runs_down(
    workspace: Workspace, tmp_path: Path, pipeline: str, kind: str
) -> None:
    """The sweep's process is killed outright (OOM killer, a scheduler): its cells, and the services their
    runs deployed, do not run on as orphans. A forked cell is stopped by its server; a new interpreter
    sees its stdin end. Each run is torn down and the row says why; what the run started in a session of its
    own (out of reach of the teardown) goes too."""
    tree = _slow_target(workspace.root, pipeline)
    (tree / "slow.py").write_text(ESCAPING + SLOW)
    (tmp_path / "cells").mkdir()
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER, str(tree), str(tmp_path / "cells"), kind],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert caller.stdout is not None
        pid = int(caller.stdout.readline())
        deadline = time.monotonic() + 60
        while not sorted(workspace.tmp.rglob("slow.mark")):
            assert caller.poll() is None and pid_alive(pid), "the cell ended before its slow command ran"
            assert time.monotonic() < deadline, "the cell's slow command did not start within 60s"
            time.sleep(0.05)
        started = procs_under(workspace.tmp)
        assert len(started) >= 2, "the slow command and what it left in a session of its own"
        caller.kill()
    finally:
        caller.kill()
        caller.wait()
        if caller.stdout is not None:
            caller.stdout.close()
    try:
        _assert_gone([pid, *started], "the cell of a killed caller ran on", timeout=40)
    except AssertionError:
        for left in [pid, *started]:  # nothing leaks into the next test
            with contextlib.suppress(ProcessLookupError):
                os.kill(left, signal.SIGKILL)
        raise
    row = json.loads((tmp_path / "cells" / "cell.result.json").read_text())
    assert row["ok"] is False and row["error"].startswith("interrupted (received SIGTERM)"), row["error"]
    if pipeline is SLOW_ROLLOUT:
        teardown = sorted((tree / ".aider_fsm" / "artifacts").glob("*/teardown"))
        assert teardown, "the deployed service was torn down by the run, not only killed"
    assert_nothing_running(tmp_path)


def test_a_cell_outlives_a_dead_server_and_its_end_is_still_seen(
    workspace: Workspace, forker: CellForker, tmp_path: Path
) -> None:
    tree = _slow_target(workspace.root, SLOW_TESTS)
    cell = ForkedCell(CellSpec(target=str(tree), llm="exact"), tmp_path / "cells", "cell", forker)
    _wait_for("slow.mark", workspace.tmp, cell)
    (server,) = _servers_of_this_process()
    os.kill(server, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server in _servers_of_this_process():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert cell.wait(0.2) is None and pid_alive(cell.pid)
    row = cell.stop(grace=30)
    # Its end is seen without the server that forked it: the row it wrote on SIGTERM.
    assert not row.ok and row.error is not None and row.error.startswith("interrupted (received SIGTERM)")
    assert_nothing_running(tmp_path)
    # The next cell gets a new server.
    again = ForkedCell(
        CellSpec(target=str(workspace.arith), llm="exact"), tmp_path / "cells", "again", forker
    )
    assert (row := again.wait(120)) is not None and row.ok, row


def test_closing_the_executor_ends_the_server(workspace: Workspace, tmp_path: Path) -> None:
    executor = LocalExecutor(concurrency=2)
    assert _servers_of_this_process() == []  # started with the first cell, not before
    handles = [
        executor.start(CellSpec(target=str(workspace.arith), llm=llm), tmp_path / "c", llm)
        for llm in ("exact", "sloppy")
    ]
    assert all(isinstance(h.process, ForkedCell) for h in handles)
    servers = _servers_of_this_process()
    assert len(servers) == 1, "one server per executor"
    # Its working directory is / and its command line names no path of the caller's: scans for a sweep's
    # processes under a directory never count it.
    assert os.readlink(f"/proc/{servers[0]}/cwd") == "/"
    assert servers[0] not in procs_under(tmp_path)
    deadline = time.monotonic() + 120
    rows = [h.poll() for h in handles]
    while None in rows:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        rows = [h.poll() for h in handles]
    assert [r.score for r in rows if r is not None] == [1.0, 0.75]
    executor.close()
    assert _servers_of_this_process() == []
    assert_nothing_running(tmp_path)


def test_without_a_server_cells_run_as_new_interpreters(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An interpreter that cannot run the server (it exits at once) but runs everything else.
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(
        f'#!/bin/sh\ncase "$*" in *fsm_runner.sweeps.forks*) exit 3;; esac\nexec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr("fsm_runner.sweeps.forks._WARNED", False)
    executor = LocalExecutor(concurrency=2)
    try:
        with pytest.warns(RuntimeWarning, match="new interpreter") as warned:
            # The first cell was sent to the server, which died: it starts as a new interpreter instead.
            first = executor.start(CellSpec(target=str(workspace.arith), llm="exact"), tmp_path / "c", "a")
            first_row = first.process.wait(120)
            second = executor.start(CellSpec(target=str(workspace.arith), llm="sloppy"), tmp_path / "c", "b")
            second_row = second.process.wait(120)
        assert len(warned) == 1
        assert isinstance(second.process, CellProcess), "a server that failed is not asked again"
        assert [r.score for r in (first_row, second_row) if r is not None] == [1.0, 0.75]
    finally:
        executor.close()
    assert _servers_of_this_process() == []
    assert_nothing_running(tmp_path)
