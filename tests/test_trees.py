"""One live run per local tree: a second run is refused, waits (--wait) or works in a private copy (--isolate)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.evidence.layout import TREE_LOCK_REL
from tests.conftest import TargetFactory, procs_in, wait_for_file
from tests.helpers import target_files as files

#: The evaluation of model-A holds until .aider_fsm/go exists, so a test can act while run A is live.
GATE = """\
import os, pathlib, time
if os.environ.get("AIDER_LLM_MODEL") == "model-A":
    while not pathlib.Path(".aider_fsm/go").exists():
        pathlib.Path(".aider_fsm/holding").touch()
        time.sleep(0.02)
"""

#: Metrics that say which model the run evaluated.
SCORING_LLM = """\
import os
def score(samples, run_id):
    return {"ok": True, "score": 1.0, "run_id": run_id, "llm": os.environ.get("AIDER_LLM_MODEL")}
"""

PIPELINE = files.PIPELINE.replace("    - python3 stage.py evaluate\n", "    - python3 stage.py evaluate\n    - python3 gate.py\n")


def gated_target(make_target: TargetFactory) -> Path:
    assert "gate.py" in PIPELINE
    repo = make_target(pipeline=PIPELINE, scoring=SCORING_LLM)
    (repo / "gate.py").write_text(GATE)
    return repo


def cli(*args: str, cwd: Path, stderr_path: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w") if stderr_path else subprocess.PIPE,
        text=True,
    )


def first_event_ts(run_dir: Path) -> float:
    return float(json.loads((run_dir / "events.jsonl").read_text().splitlines()[0])["ts"])


def last_event_ts(run_dir: Path) -> float:
    return float(json.loads((run_dir / "events.jsonl").read_text().splitlines()[-1])["ts"])


def private_copies(run_id: str) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"fsm-runner-*-{run_id}-*"))


def test_a_second_run_is_refused_isolated_or_waits(make_target: TargetFactory, tmp_path: Path) -> None:
    repo = gated_target(make_target)
    first = cli("run", ".", "--llm", "model-A", "--json", cwd=repo)
    waiter = None
    try:
        wait_for_file(repo / ".aider_fsm" / "holding", first)
        holder = json.loads((repo / TREE_LOCK_REL).read_text())
        assert holder["pid"] == first.pid

        refused = subprocess.run(
            [sys.executable, "-m", "fsm_runner", "run", ".", "--llm", "model-B"],
            cwd=repo, capture_output=True, text=True, timeout=60,
        )
        assert refused.returncode == 2, refused.stderr
        message = refused.stderr
        for part in (holder["run_id"], f"pid {first.pid}", holder["started"], holder["run_dir"], "--wait", "--isolate"):
            assert part in message, (part, message)
        assert len(list((repo / ".aider_fsm" / "artifacts").iterdir())) == 1, "the refused run left a run dir"

        isolated = subprocess.run(
            [sys.executable, "-m", "fsm_runner", "run", ".", "--llm", "model-B", "--isolate", "--json"],
            cwd=repo, capture_output=True, text=True, timeout=120,
        )
        assert isolated.returncode == 0, isolated.stderr
        b = json.loads(isolated.stdout)
        assert b["metrics"]["llm"] == "model-B" and b["metrics"]["run_id"] == b["run_id"]
        assert Path(b["run_dir"]).parent == repo / ".aider_fsm" / "artifacts"  # evidence with the tree
        assert not (repo / ".aider_fsm" / "metrics.json").exists(), "the isolated run wrote into the tree"
        b_run = json.loads((Path(b["run_dir"]) / "run.json").read_text())
        assert b_run["target"]["isolated_from"] == str(repo) and b_run["target"]["repo_root"] != str(repo)
        assert not private_copies(b["run_id"]), "the private copy outlived the session"

        stderr_file = tmp_path / "waiter.stderr"
        waiter = cli("run", ".", "--llm", "model-C", "--wait", "--json", cwd=repo, stderr_path=stderr_file)
        deadline = time.monotonic() + 30
        while "waiting for it to finish" not in stderr_file.read_text():
            assert waiter.poll() is None, stderr_file.read_text()
            assert time.monotonic() < deadline, "the waiting run did not say it waits"
            time.sleep(0.02)
        assert holder["run_id"] in stderr_file.read_text()
        assert waiter.poll() is None
        (repo / ".aider_fsm" / "go").touch()

        out_a, _ = first.communicate(timeout=120)
        out_c, _ = waiter.communicate(timeout=120)
        assert first.returncode == 0 and waiter.returncode == 0, stderr_file.read_text()
        a, c = json.loads(out_a), json.loads(out_c)
        assert a["metrics"]["llm"] == "model-A" and c["metrics"]["llm"] == "model-C"
        assert first_event_ts(Path(c["run_dir"])) >= last_event_ts(Path(a["run_dir"])), "--wait did not wait"
        waited = [json.loads(line) for line in (Path(c["run_dir"]) / "events.jsonl").read_text().splitlines()]
        assert [e["for"]["run_id"] for e in waited if e["event"] == "tree.waited"] == [a["run_id"]]
    finally:
        for proc in (first, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not procs_in(repo)


def test_wait_and_isolate_together_are_a_usage_error(make_target: TargetFactory) -> None:
    repo = make_target()
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--wait", "--isolate"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "not allowed with" in done.stderr
    with pytest.raises(fsm_runner.UsageError, match="not both"):
        fsm_runner.setup(repo, wait=True, isolate=True)


def test_a_session_of_this_process_is_named_and_never_waited_for(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as first:
        for wait in (False, True):
            with pytest.raises(fsm_runner.UsageError) as info:
                fsm_runner.setup(repo, wait=wait)
            message = str(info.value)
            assert first.run_id in message and "open in this process" in message and "sess.close()" in message
            assert ("waiting would never end" in message) == wait
        assert len(list(first.run_dir.parent.iterdir())) == 1
    with fsm_runner.setup(repo) as second:  # closed: the tree is free again
        assert second.run_id != first.run_id


def test_isolated_copy_has_uncommitted_and_untracked_files_but_not_the_runs(make_target: TargetFactory) -> None:
    repo = make_target()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    with fsm_runner.setup(repo) as earlier:
        pass
    (repo / "stage.py").write_text(files.STAGE + "\nprint('edited, not committed')\n")
    (repo / "untracked.txt").write_text("not in git\n")
    with fsm_runner.setup(repo) as live, fsm_runner.setup(repo, isolate=True) as iso:
        copy = iso.repo_root
        assert copy != repo and copy.is_dir() and live.repo_root == repo
        assert (copy / "untracked.txt").read_text() == "not in git\n"
        assert "edited, not committed" in (copy / "stage.py").read_text()
        assert (copy / ".git").is_dir()
        assert not (copy / ".aider_fsm" / "artifacts").exists(), "the runs were copied"
        assert not (copy / TREE_LOCK_REL).exists()
        assert iso.run_dir.parent == earlier.run_dir.parent  # evidence goes to the original tree's runs
        result = iso.evaluate(llm="m")
        assert result.ok, result.error
        stdout = (iso.run_dir / "tests" / "cmd01_try01.json").read_text()
        assert json.loads(stdout)["cwd"] == str(copy)
        assert (copy / ".aider_fsm" / "envs" / "tests.json").exists()
        assert not (repo / ".aider_fsm" / "envs").exists()
    assert not copy.exists()


HOLDER = """\
import sys, time, fsm_runner
sess = fsm_runner.setup(sys.argv[1])
print(sess.run_id, flush=True)
time.sleep(60)
"""


def test_a_killed_holder_never_blocks_the_tree(make_target: TargetFactory) -> None:
    repo = make_target()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(repo)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    with pytest.raises(fsm_runner.UsageError, match=run_id):
        fsm_runner.setup(repo)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    with fsm_runner.setup(repo) as sess:
        assert json.loads((repo / TREE_LOCK_REL).read_text())["run_id"] == sess.run_id
