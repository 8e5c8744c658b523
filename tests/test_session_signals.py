"""Teardown is guaranteed when a session is interrupted mid-phase."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsm_runner.evidence.journal import read_journal
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid, wait_for_file
from tests.helpers import target_files as files

DRIVER = textwrap.dedent(
    """
    import sys, fsm_runner
    sess = fsm_runner.setup(sys.argv[1])
    print(sess.run_dir, flush=True)
    sess.rollout(llm="m")
    """
)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "interrupted")])
def test_signal_mid_rollout_tears_down_and_journals_why(
    make_target: TargetFactory, tmp_path: Path, sig: signal.Signals, status: str
) -> None:
    slow = files.PIPELINE.replace("- python3 rollout.py", "- touch .aider_fsm/rolling && sleep 60")
    repo = make_target(pipeline=slow)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(repo)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_dir = Path(proc.stdout.readline().strip())
    wait_for_file(repo / ".aider_fsm" / "rolling", proc)
    pid = service_pid(repo)
    assert pid is not None and pid_alive(pid)
    proc.send_signal(sig)
    assert proc.wait(timeout=20) != 0
    assert not pid_alive(pid)
    read = read_journal(run_dir / "journal.jsonl")
    assert read.problem is None, read.problem
    interrupt = next(r for r in read.records if r.trigger == "interrupt")
    assert interrupt.source == "rollout" and interrupt.status == status
    assert signal.Signals(sig).name in interrupt.reason
    assert read.records[-1].trigger == "cleanup" and read.records[-1].status == status
    assert json.loads((run_dir / "run.json").read_text())["status"] == status
    assert procs_in(repo) == [], "a process of the interrupted run is still running"
