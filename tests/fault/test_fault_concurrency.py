"""Two runs of one repository at once (each in a private copy of the tree: a second live run of a tree is
refused otherwise), and replay of a run that is still live."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fsm_runner
from fsm_runner.evidence.journal import read_journal
from fsm_runner.replays import can_replay, replay
from tests.conftest import TargetFactory, procs_in, service_pid
from tests.helpers import target_files as files

# Each stage sleeps so the two runs overlap.
PIPELINE = """\
version: 1
tests:
  cmds:
    - sleep 0.3
    - echo "tests of $AIDER_FSM_RUN_ID"
evaluation:
  run_cmds:
    - sleep 0.3
    - python3 metrics.py
  metrics_path: .aider_fsm/metrics.json
  required_keys: [ok, score]
"""

# Written under a per-run name, then renamed.
METRICS = """\
import json, os
run_id = os.environ["AIDER_FSM_RUN_ID"]
json.dump({"ok": True, "score": 1.0, "run_id": run_id}, open(".aider_fsm/metrics." + run_id, "w"))
os.replace(".aider_fsm/metrics." + run_id, ".aider_fsm/metrics.json")
"""

CHILD = textwrap.dedent(
    """
    import json, sys, fsm_runner
    with fsm_runner.setup(sys.argv[1], isolate=True) as sess:
        result = sess.evaluate()
    print(json.dumps({"ok": result.ok, "run_dir": str(sess.run_dir)}))
    """
)


def _in_threads(repo: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        try:
            barrier.wait()
            with fsm_runner.setup(repo, isolate=True) as sess:
                result = sess.evaluate()
            results.append({"ok": result.ok, "run_dir": str(sess.run_dir)})
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def _in_processes(repo: Path) -> list[dict[str, Any]]:
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(repo)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    return [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_two_runs_at_once_keep_their_evidence_apart(tmp_path: Path, how: str) -> None:
    repo = tmp_path / "repo"
    (repo / ".aider_fsm").mkdir(parents=True)
    (repo / "pipeline.yml").write_text(PIPELINE)
    (repo / "metrics.py").write_text(METRICS)
    results = _in_threads(repo) if how == "threads" else _in_processes(repo)
    assert [r["ok"] for r in results] == [True, True], results
    run_dirs = [Path(r["run_dir"]) for r in results]
    assert run_dirs[0] != run_dirs[1]
    assert sorted(p for p in (repo / ".aider_fsm" / "artifacts").iterdir()) == sorted(run_dirs)
    spans = []
    for run_dir in run_dirs:
        read = read_journal(run_dir / "journal.jsonl")
        assert read.problem is None and not read.torn
        assert [r.seq for r in read.records] == list(range(1, len(read.records) + 1))
        assert read.records[-1].dest == "done"
        run = json.loads((run_dir / "run.json").read_text())
        assert run["run_id"] == run_dir.name and run["status"] == "ok"
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        assert {e["run_id"] for e in events} == {run_dir.name}, "events of the other run leaked in"
        stdout = (run_dir / "tests" / "cmd02_try01.stdout").read_text()
        assert stdout == f"tests of {run_dir.name}\n"
        stamps = [float(e["ts"]) for e in events]
        spans.append((min(stamps), max(stamps)))
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a, f"the two runs did not overlap: {spans}"


HOLD = "test -f .aider_fsm/go || { touch .aider_fsm/holding; sleep 30; }"
LIVE = textwrap.dedent(
    """
    import sys, fsm_runner
    sess = fsm_runner.setup(sys.argv[1])
    print(sess.run_dir, flush=True)
    sess.rollout(llm="m")
    sess.evaluate()
    sess.close()
    """
)


def test_replay_of_a_live_run_is_refused_until_its_runner_is_gone(make_target: TargetFactory) -> None:
    repo = make_target(pipeline=files.PIPELINE.replace("cmds: python3 stage.py tests", f"cmds: '{HOLD}'"))
    proc = subprocess.Popen([sys.executable, "-c", LIVE, str(repo)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_dir = Path(proc.stdout.readline().strip())
        deadline = time.monotonic() + 30
        while not (repo / ".aider_fsm" / "holding").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        ok, reason = can_replay(run_dir)
        assert not ok and "still in progress" in reason and f"pid {proc.pid}" in reason
        with pytest.raises(fsm_runner.ReplayError, match="still in progress"):
            replay(run_dir)
        cli = subprocess.run(
            [sys.executable, "-m", "fsm_runner", "replay", str(run_dir)], capture_output=True, text=True
        )
        assert cli.returncode == 1 and "still in progress" in cli.stderr, cli.stderr
        before = read_journal(run_dir / "journal.jsonl").records
        proc.kill()  # the kernel drops the lock with the process
        proc.wait(timeout=10)
        assert read_journal(run_dir / "journal.jsonl").records == before, "a refused replay wrote records"
        (repo / ".aider_fsm" / "go").touch()
        assert can_replay(run_dir) == (True, "continues at tests (redrive 1)")
        result = replay(run_dir)
        assert result.ok, result.error
        assert procs_in(repo) == [] and service_pid(repo) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
