"""SIGINT and SIGTERM to ``fsm-runner run`` while a phase is running: teardown per policy, journal, exit code.

The phase is held by a command that touches a marker and sleeps; the test waits for the marker, signals the
CLI process (only the runner: its commands live in their own process groups), and checks what is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsm_runner.evidence.journal import read_journal
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid
from tests.helpers import target_files as files

HOLD = "touch .aider_fsm/holding && sleep 30"
TEARDOWN = "teardown_cmds: python3 stop.py && touch .aider_fsm/teardown_ran"


def _held(phase: str) -> str:
    """The fixture pipeline with ``phase`` held after it started (and after the service is up)."""
    pipeline = files.PIPELINE.replace("teardown_cmds: python3 stop.py", TEARDOWN)
    if phase == "deploy_setup":
        old = "    - python3 svc.py > .aider_fsm/svc.log 2>&1 &\n"
        return pipeline.replace(old, f"{old}    - {HOLD}\n")
    if phase == "health":
        return pipeline.replace("health_cmds: python3 probe.py", f"health_cmds: [python3 probe.py, '{HOLD}']")
    if phase == "rollout":
        return pipeline.replace("    - python3 rollout.py\n", f"    - {HOLD}\n    - python3 rollout.py\n")
    assert phase == "evaluate"
    return pipeline.replace("    - python3 evaluate.py\n", f"    - {HOLD}\n    - python3 evaluate.py\n")


def _run_dir(repo: Path) -> Path:
    dirs = sorted((repo / ".aider_fsm" / "artifacts").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the runner exited with {proc.returncode} before {path.name} appeared:\n{err}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _reap(repo: Path) -> None:
    """Kill whatever a failure left behind, so it does not leak into other tests."""
    for pid in procs_in(repo):
        os.kill(pid, signal.SIGKILL)


PHASES = ("deploy_setup", "health", "rollout", "evaluate")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", PHASES)
def test_signal_during_phase_tears_down_and_exits_128_plus_signum(
    make_target: TargetFactory, phase: str, sig: signal.Signals
) -> None:
    repo = make_target(pipeline=_held(phase))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--llm", "m"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(repo / ".aider_fsm" / "holding", proc)
        _wait_for(repo / ".aider_fsm" / "svc.pid", proc)  # the service may still be starting (deploy)
        service = service_pid(repo)
        assert service is not None and pid_alive(service)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        _check_interrupted(repo, phase, sig, proc.returncode, err, service)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _reap(repo)


def _check_interrupted(
    repo: Path, phase: str, sig: signal.Signals, code: int, err: str, service: int
) -> None:
    assert code == 128 + sig, err
    assert f"received {sig.name}" in err
    run_dir = _run_dir(repo)
    records = read_journal(run_dir / "journal.jsonl").records
    interrupt = next(r for r in records if r.trigger == "interrupt")
    assert interrupt.source == phase
    assert records[-1].status == "interrupted"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert not pid_alive(service), "the service outlived the interrupted run"
    assert (repo / ".aider_fsm" / "teardown_ran").exists(), "teardown_cmds did not run (policy: always)"
    assert procs_in(repo) == [], "a process of the interrupted run is still running"
