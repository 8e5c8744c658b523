"""Ctrl-C and SIGTERM to ``fsm-runner run``: the message names the run dir and the replay command, and a second
signal that cuts ``teardown_cmds`` short is noted in the journal and on screen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsm_runner.evidence.journal import read_journal
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid, wait_for_file
from tests.helpers import target_files as files

HOLD_ROLLOUT = files.PIPELINE.replace(
    "    - python3 rollout.py", "    - touch .aider_fsm/rolling && sleep 30\n    - python3 rollout.py"
)
SLOW_TEARDOWN = HOLD_ROLLOUT.replace(
    "teardown_cmds: python3 stop.py",
    "teardown_cmds: touch .aider_fsm/tearing && sleep 30 && python3 stop.py && touch .aider_fsm/torn",
)


def _start(repo: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--llm", "m"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_dir(repo: Path) -> Path:
    (run_dir,) = sorted((repo / ".aider_fsm" / "artifacts").iterdir())
    return run_dir


def _finish(proc: subprocess.Popen[str], repo: Path) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in procs_in(repo):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_interrupt_message_names_the_run_dir_and_the_replay_command(
    make_target: TargetFactory, sig: signal.Signals
) -> None:
    repo = make_target(pipeline=HOLD_ROLLOUT)
    proc = _start(repo)
    try:
        wait_for_file(repo / ".aider_fsm" / "rolling", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        _finish(proc, repo)
    run_dir = _run_dir(repo)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted: received {sig.name}\nrun dir  {run_dir}\nnext     fsm-runner replay {run_dir}\n" in err
    assert "cut short" not in err  # the teardown ran to its end
    assert err.count("tearing down what the run started; Ctrl-C again cuts it short\n") == 1, err
    dry = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "replay", str(run_dir), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr  # the command the message gives is accepted


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_during_teardown_is_noted_in_the_journal_and_on_screen(
    make_target: TargetFactory, second: signal.Signals
) -> None:
    repo = make_target(pipeline=SLOW_TEARDOWN)
    proc = _start(repo)
    try:
        wait_for_file(repo / ".aider_fsm" / "rolling", proc)
        service = service_pid(repo)
        proc.send_signal(signal.SIGINT)
        wait_for_file(repo / ".aider_fsm" / "tearing", proc)
        wait_for_file(_run_dir(repo) / "teardown" / "cmd01_try01.json", proc)  # the command is on record
        started = time.monotonic()
        proc.send_signal(second)
        _, err = proc.communicate(timeout=30)
    finally:
        _finish(proc, repo)
    assert time.monotonic() - started < 15, "the second signal did not cut the teardown short"
    run_dir = _run_dir(repo)
    assert proc.returncode == 130, err
    assert not (repo / ".aider_fsm" / "torn").exists()
    records = read_journal(run_dir / "journal.jsonl").records
    cleanup = records[-1]
    assert (cleanup.trigger, cleanup.source, cleanup.dest) == ("cleanup", "failed", "failed")
    assert cleanup.outcome is not None and cleanup.outcome.status == "failed"
    error = cleanup.outcome.error
    assert error is not None and error.kind == "interrupted" and error.phase == "teardown"
    assert error.message.startswith(f"teardown cut short by {second.name}: deploy.teardown_cmds did not finish")
    assert "may still run" in error.message and cleanup.reason == error.message
    assert error.evidence == "teardown" and (run_dir / "teardown" / "cmd01_try01.stdout").is_file()
    assert f"run dir  {run_dir}\n" in err and f"next     fsm-runner replay {run_dir}\n" in err
    assert f"{error.message}; see {run_dir / 'teardown'}\n" in err
    assert service is not None and not pid_alive(service)  # the run's own processes were still ended
    notice = "tearing down what the run started; Ctrl-C again cuts it short\n"
    assert err.count(notice) == 1 and err.index(notice) < err.index("interrupted: "), err
    (command,) = cleanup.outcome.commands  # the teardown command the signal cut
    assert (command.index, command.attempt, command.result) == (1, 1, "teardown/cmd01_try01.json")
