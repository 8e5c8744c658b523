"""SIGKILL of the runner at random points of a full run, then replay.

A child Python process drives setup -> rollout -> evaluate on the fixture target (with ``sleep 0.2`` steps
so the run lasts about two seconds) and is killed after a delay drawn from ``random.Random(1234)``. Whatever
the point, the evidence must stay readable, and replay must either finish the run or say clearly why there
is nothing to replay; either way no process of the killed run may survive.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.evidence.journal import read_journal
from fsm_runner.replays import can_replay, replay
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid
from tests.helpers import target_files as files

DRIVER = textwrap.dedent(
    """
    import sys, fsm_runner
    sess = fsm_runner.setup(sys.argv[1])
    sess.rollout(llm="m")
    sess.evaluate()
    sess.close()
    """
)


def _slow_pipeline() -> str:
    pipeline = files.PIPELINE.replace(
        "cmds: python3 stage.py tests", "cmds:\n    - python3 stage.py tests\n    - sleep 0.2"
    )
    for old, new in (
        ("  timeout_seconds: 20\n", "  timeout_seconds: 5\n"),
        ("    - python3 stage.py deploy\n", "    - python3 stage.py deploy\n    - sleep 0.2\n"),
        ("    - python3 rollout.py\n", "    - python3 rollout.py\n    - sleep 0.2\n"),
        ("    - python3 evaluate.py\n", "    - sleep 0.2\n    - python3 evaluate.py\n"),
    ):
        assert old in pipeline
        pipeline = pipeline.replace(old, new)
    return pipeline


SLOW = _slow_pipeline()
RUN_SECONDS = 2.0  # a full run of SLOW takes about 1.6 s; later points land after it finished
_RNG = random.Random(1234)
POINTS = sorted(round(_RNG.uniform(0.0, RUN_SECONDS), 3) for _ in range(12))
#: Reasons can_replay may give when the kill came before the first journal record or after the run ended.
CLEAR_REASONS = ("no journal.jsonl", "has no records", "no run.json", "finished successfully")


def _run_dirs(repo: Path) -> list[Path]:
    root = repo / ".aider_fsm" / "artifacts"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _reap(repo: Path) -> None:
    for pid in procs_in(repo):
        os.kill(pid, signal.SIGKILL)


def _wait_until_holding(repo: Path, stage: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until a command of ``stage`` holds (it touched .aider_fsm/holding) and the runner has marked its
    attempt as running, so that a kill lands while the runner is waiting for that command."""
    deadline = time.monotonic() + timeout
    while True:
        if (repo / ".aider_fsm" / "holding").exists():
            for path in repo.glob(f".aider_fsm/artifacts/*/{stage}/cmd*_try*.json"):
                try:
                    doc = json.loads(path.read_text())
                except (OSError, ValueError):  # being replaced right now
                    continue
                if doc.get("running") is True and "holding" in doc.get("cmd", ""):
                    return
        assert proc.poll() is None, f"the runner exited with {proc.returncode} before {stage} held"
        assert time.monotonic() < deadline, f"no holding command of {stage} within {timeout}s"
        time.sleep(0.02)


def _kill_after(repo: Path, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(repo)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    time.sleep(delay)
    proc.kill()
    proc.wait(timeout=10)
    assert proc.stderr is not None
    proc.stderr.close()


@pytest.mark.parametrize("delay", POINTS, ids=[f"{p:.3f}s" for p in POINTS])
def test_sigkill_then_replay_completes_or_explains(
    make_target: TargetFactory, delay: float, record_property: pytest.RecordProperty
) -> None:
    repo = make_target(pipeline=SLOW)
    try:
        _kill_after(repo, delay)
        verdict = _check_after_kill(repo)
        record_property("verdict", verdict)
        assert procs_in(repo) == [], f"processes of the killed run survived ({verdict})"
        pid = service_pid(repo)
        assert pid is None or not pid_alive(pid), f"the service survived ({verdict})"
    finally:
        _reap(repo)


def _check_after_kill(repo: Path) -> str:
    """Check the evidence, replay when possible; returns what happened, for the report."""
    dirs = _run_dirs(repo)
    assert len(dirs) <= 1, dirs
    if not dirs:
        return "killed before the run directory existed"
    run_dir = dirs[0]
    journal = run_dir / "journal.jsonl"
    read = read_journal(journal) if journal.exists() else None
    if read is not None:
        assert read.problem is None or read.torn, read.problem
    run_json = run_dir / "run.json"
    if run_json.exists():
        run = json.loads(run_json.read_text())  # atomic writes: never half a document
        assert run["run_id"] == run_dir.name
    ok, reason = can_replay(run_dir)
    records = read.records if read is not None else ()
    if not ok:
        finished = bool(records) and records[-1].dest == "done"
        early = not records or not run_json.exists()
        torn = read is not None and read.torn
        assert finished or early or torn, f"replay refused mid-run: {reason}"
        assert torn or any(clear in reason for clear in CLEAR_REASONS), reason
        return f"not replayable: {reason}" + (" (torn last line)" if torn else "")
    result = replay(run_dir)
    assert isinstance(result, fsm_runner.EvaluationResult)
    assert result.ok, result.error
    after = read_journal(journal)
    assert after.problem is None and after.records[-1].dest == "done"
    assert json.loads(run_json.read_text())["status"] == "ok"
    return f"replayed from seq {len(records)}" + (" (torn last line)" if read and read.torn else "")


@pytest.mark.parametrize("how", ["killed", "failed"])
def test_replay_resuming_at_health_deploys_again(make_target: TargetFactory, how: str) -> None:
    """A run stopped in health (SIGKILL mid-health, or health failed) must be replayable once fixed."""
    gate = "test -f .aider_fsm/go || { touch .aider_fsm/holding; sleep 30; }"
    if how == "failed":
        gate = "test -f .aider_fsm/go"
    pipeline = files.PIPELINE.replace(
        "health_cmds: python3 probe.py", f"health_cmds: ['{gate}', python3 probe.py]"
    )
    repo = make_target(pipeline=pipeline.replace("timeout_seconds: 20", "timeout_seconds: 3"))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(repo)], stderr=subprocess.DEVNULL)
    try:
        if how == "killed":
            _wait_until_holding(repo, "health", proc)
            proc.kill()
        proc.wait(timeout=30)
        run_dir = _run_dirs(repo)[0]
        assert read_journal(run_dir / "journal.jsonl").records[-1].dest == (
            "health" if how == "killed" else "failed"
        )
        (repo / ".aider_fsm" / "go").touch()
        assert can_replay(run_dir)[0]
        result = replay(run_dir)
        assert result.ok, result.error
        assert procs_in(repo) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _reap(repo)


def test_sigkill_inside_deploy_after_the_service_started_replay_ends_it(make_target: TargetFactory) -> None:
    hold = "test -f .aider_fsm/go || { touch .aider_fsm/holding; sleep 30; }"
    svc = "    - python3 svc.py > .aider_fsm/svc.log 2>&1 &\n"
    repo = make_target(pipeline=files.PIPELINE.replace(svc, f"{svc}    - {hold}\n"))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(repo)], stderr=subprocess.DEVNULL)
    try:
        _wait_until_holding(repo, "deploy_setup", proc)
        deadline = time.monotonic() + 30
        while not service_pid(repo):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        old = service_pid(repo)
        assert old is not None
        proc.kill()
        proc.wait(timeout=10)
        (repo / ".aider_fsm" / "go").touch()
        result = replay(_run_dirs(repo)[0])
        assert result.ok, result.error
        assert not pid_alive(old), "replay left the killed run's service running"
        assert procs_in(repo) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _reap(repo)
