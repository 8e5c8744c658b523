"""What dead runs left behind: found from their evidence, ended only when they are dead, and a private copy
removed only when it is one."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.engine.leftovers import end_dead_runs, private_copy_name
from fsm_runner.evidence.events import run_logger
from fsm_runner.execution.process import process_start_time
from fsm_runner.targets import resolve_target
from tests.conftest import TargetFactory, pid_alive, service_pid

KILLED_WHILE_ISOLATED = textwrap.dedent(
    """
    import os, signal, sys, fsm_runner
    sess = fsm_runner.setup(sys.argv[1], isolate=True)
    assert sess.rollout(llm="m").ok
    print(sess.repo_root, sess.run_dir, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_dead_isolated_runs_copy_and_service_are_ended_by_the_next_setup(
    make_target: TargetFactory,
) -> None:
    repo = make_target()
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WHILE_ISOLATED, str(repo)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    copy, run_dir = (Path(p) for p in done.stdout.split())
    service = service_pid(copy)
    assert copy.is_dir() and service is not None and pid_alive(service)
    with fsm_runner.setup(repo) as sess:
        assert not copy.exists() and not pid_alive(service)
        (ended,) = json.loads((sess.run_dir / "run.json").read_text())["outputs"]["clone"]["ended_leftovers"]
        assert ended["run_id"] == run_dir.name and ended["removed_copy"] == str(copy)
        assert len(ended["deploy_pgids"]) == 1


def _dead_run(repo: Path, **target: str) -> Path:
    """A finished run rewritten to look like a run killed mid-pipeline, with ``target`` fields changed."""
    with fsm_runner.setup(repo) as sess:
        pass
    state = json.loads((sess.run_dir / "run.json").read_text())
    state["status"] = "running"
    state["target"].update(target)
    (sess.run_dir / "run.json").write_text(json.dumps(state))
    return sess.run_dir


def test_only_a_private_copy_by_name_and_place_is_ever_removed(
    make_target: TargetFactory, tmp_path: Path
) -> None:
    repo = make_target()
    elsewhere = tmp_path / "not-a-copy"
    elsewhere.mkdir()
    run_dir = _dead_run(repo, repo_root=str(elsewhere), isolated_from=str(repo))
    log, sink = run_logger(tmp_path, "probe")
    assert end_dead_runs(run_dir.parent, log=log, target=resolve_target(repo)) == []
    assert elsewhere.is_dir(), "a directory that is not a private copy was removed"
    copy = Path(tempfile.mkdtemp(prefix=private_copy_name(repo, run_dir.name))).resolve()
    (copy / "kept.txt").write_text("x")
    state = json.loads((run_dir / "run.json").read_text())
    state["target"]["repo_root"] = str(copy)
    (run_dir / "run.json").write_text(json.dumps(state))
    (ended,) = end_dead_runs(run_dir.parent, log=log, target=resolve_target(repo))
    assert ended.run_id == run_dir.name and ended.removed_copy == str(copy) and not copy.exists()
    sink.close()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["removed_copy"] for e in events if e["event"] == "leftovers.ended"] == [str(copy)]


def test_a_recorded_group_is_ended_only_with_its_leaders_start_time(
    make_target: TargetFactory, tmp_path: Path
) -> None:
    """A pgid alone (a hand-edited or truncated run.json) could name any process group by now."""
    repo = make_target()
    run_dir = _dead_run(repo)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state = json.loads((run_dir / "run.json").read_text())
        state["deploy_pgids"] = [bystander.pid]
        state["deploy_leaders"] = {}
        (run_dir / "run.json").write_text(json.dumps(state))
        log, sink = run_logger(tmp_path, "probe")
        assert end_dead_runs(run_dir.parent, log=log, target=resolve_target(repo)) == []
        assert bystander.poll() is None, "a group with no recorded leader was ended"
        state["deploy_leaders"] = {str(bystander.pid): process_start_time(bystander.pid)}
        (run_dir / "run.json").write_text(json.dumps(state))
        (ended,) = end_dead_runs(run_dir.parent, log=log, target=resolve_target(repo))
        assert ended.deploy_pgids == (bystander.pid,)
        assert bystander.wait(timeout=10) == -signal.SIGTERM
        sink.close()
    finally:
        bystander.kill()
        bystander.wait()


LIVE_ELSEWHERE = textwrap.dedent(
    """
    import sys, fsm_runner
    sess = fsm_runner.setup(sys.argv[1], isolate=sys.argv[2] == "isolate")
    assert sess.rollout(llm="m").ok
    print(sess.repo_root, flush=True)
    sys.stdin.read()
    sess.close()
    """
)


@pytest.mark.parametrize("mode", ["in-place", "isolate"])
def test_a_copy_of_a_tree_never_ends_what_the_originals_live_run_runs(
    make_target: TargetFactory, tmp_path: Path, mode: str
) -> None:
    """``cp -r`` copies the live run's run dir too, with a lock file that nobody holds in the copy."""
    repo = make_target()
    child = subprocess.Popen(
        [sys.executable, "-c", LIVE_ELSEWHERE, str(repo), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        works_in = Path(child.stdout.readline().strip())
        service = service_pid(works_in)
        assert service is not None and pid_alive(service)
        copy = tmp_path / "copy"
        shutil.copytree(repo, copy, symlinks=True)
        with fsm_runner.setup(copy) as sess:
            events = (sess.run_dir / "events.jsonl").read_text()
        assert "leftovers.ended" not in events
        assert pid_alive(service) and works_in.is_dir()
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=60)
    assert child.returncode == 0 and not pid_alive(service)


#: An evaluation that writes records naming a group it never started (the victim's, from VICTIM_PID), then
#: fails: the next setup reads the dead run's attempt files.
FORGING_EVALUATE = """\
import json, os, sys
victim = int(os.environ["VICTIM_PID"])
out = os.environ["AIDER_FSM_ARTIFACTS_DIR"]
json.dump({"cmd": "x", "pgid": victim, "leader_start": None, "running": True}, open(out + "/cmd98_try01.json", "w"))
json.dump({"cmd": "x", "pgid": victim, "running": False}, open(out + "/cmd99_try01.json", "w"))
sys.exit(1)
"""


def test_a_group_a_dead_runs_records_name_is_never_ended_unless_the_run_started_it(
    make_target: TargetFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempt files are in dirs the run's commands can write: a forged one must not make the next setup
    signal another process group of this user's."""
    repo = make_target()
    (repo / "evaluate.py").write_text(FORGING_EVALUATE)
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        monkeypatch.setenv("VICTIM_PID", str(victim.pid))
        with fsm_runner.setup(repo) as sess:
            assert not sess.evaluate(llm="m").ok
        forged = sorted(sess.run_dir.glob("evaluate/cmd9*_try01.json"))
        assert len(forged) == 2, "the forged records are there for the next setup to read"
        with fsm_runner.setup(repo) as again:
            lines = (again.run_dir / "events.jsonl").read_text().splitlines()
        ended = [e for e in map(json.loads, lines) if e["event"] == "leftovers.ended"]
        assert victim.poll() is None, "a group the dead run never started was signalled"
        assert all(victim.pid not in e["command_pgids"] for e in ended)
    finally:
        victim.kill()
        victim.wait()
