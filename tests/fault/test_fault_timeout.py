"""Timeouts hold even when a grandchild ignores SIGTERM and keeps the command's stdout open."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.commands import run_command
from fsm_runner.execution.policy import SecurityPolicy

TIMEOUT = 1.0
GRACE = 1.0
SLACK = 0.5  # process start, the SIGKILL and reaping

# The grandchild ignores SIGTERM (an ignored signal stays ignored across exec) and inherits stdout/stderr.
STUBBORN = "(trap '' TERM; echo $BASHPID > grandchild.pid; echo started; exec sleep 30) & wait"
# The same, but it also leaves the command's process group, so no group signal can reach it: the runner
# cannot end it (a documented limit of process-group cleanup), but must not wait for it either.
ESCAPED = "setsid bash -c \"trap '' TERM; echo \\$\\$ > grandchild.pid; echo started; exec sleep 30\" & wait"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


CASES = [
    pytest.param(STUBBORN, False, id="ignores-SIGTERM-to-files"),
    pytest.param(STUBBORN, True, id="ignores-SIGTERM-tee-to-terminal"),
    pytest.param(ESCAPED, False, id="left-the-group-to-files"),
    pytest.param(ESCAPED, True, id="left-the-group-tee-to-terminal"),
]


@pytest.mark.parametrize("cmd, interactive", CASES)
def test_timeout_returns_within_grace(tmp_path: Path, cmd: str, interactive: bool) -> None:
    env = {"PATH": os.environ["PATH"]}
    pid_file = tmp_path / "grandchild.pid"
    start = time.monotonic()
    result = run_command(
        cmd,
        cwd=tmp_path,
        env=env,
        out_dir=tmp_path / "evidence",
        name="cmd01_try01",
        timeout=TIMEOUT,
        policy=SecurityPolicy(),
        redactor=Redactor.from_env(env),
        interactive=interactive,
        kill_grace=GRACE,
    )
    elapsed = time.monotonic() - start
    grandchild = int(pid_file.read_text()) if pid_file.exists() else None
    try:
        assert result.timed_out and not result.ok
        assert result.outcome() == "timed out after 1s"
        assert elapsed < TIMEOUT + GRACE + SLACK, f"run_command took {elapsed:.2f}s"
        assert grandchild is not None, "the grandchild never started"
        assert "started" in Path(result.stdout_path or "").read_text()
        if cmd == STUBBORN:
            assert not _alive(grandchild), "the SIGTERM-ignoring grandchild survived the timeout"
    finally:
        if grandchild is not None and _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
