"""Repair guardrails under attack: a pipeline path outside the repository, a runner SIGKILLed while its repair
agent edits the contract, and a change the runner cannot undo in a full run.

The agents are small real programs given as ``--repair-cmd``; the runner is a real ``fsm-runner run`` process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import fsm_runner
from fsm_runner.errors import ContractError, ReplayError
from fsm_runner.replays import can_replay, check_replay, replay
from tests.conftest import TargetFactory, pid_alive, procs_in, wait_for_file
from tests.helpers import target_files as files

# -- pipeline_rel stays inside the repository ---------------------------------------------------------------

#: Records that it ran, wherever it is started from.
MARKING_AGENT = "import pathlib, sys\npathlib.Path(sys.argv[1]).write_text('ran')\n"


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_a_pipeline_outside_the_repo_is_refused_at_setup_before_any_agent(
    make_target: TargetFactory, tmp_path: Path, where: str
) -> None:
    repo = make_target()
    outside = tmp_path / "outside.yml"
    rel = str(outside) if where == "absolute" else "../outside.yml"
    (tmp_path / "agent.py").write_text(MARKING_AGENT)
    ran = tmp_path / "ran"
    agent = [sys.executable, str(tmp_path / "agent.py"), str(ran)]
    with pytest.raises(ContractError) as info:
        fsm_runner.setup(repo, pipeline_rel=rel, repair_agent=agent)
    assert info.value.key == "pipeline_rel" and "must be a path inside the repository" in str(info.value)
    assert not ran.exists() and not outside.exists()
    assert sorted(p.name for p in (repo / ".aider_fsm").iterdir()) == ["bootstrap.yml", "scoring.py"]

    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", ".", "--pipeline", rel, "--repair-cmd", " ".join(agent)],
        cwd=repo, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: pipeline_rel: the pipeline file"), done.stderr
    assert not ran.exists()


@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside.yml"])
def test_a_run_whose_recorded_pipeline_is_outside_the_repo_is_not_replayed(
    make_target: TargetFactory, rel: str
) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    with fsm_runner.setup(repo) as sess:
        sess.rollout(llm="m")
        assert not sess.evaluate().ok
    run_json = sess.run_dir / "run.json"
    run = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**run, "pipeline_rel": rel}))
    ok, reason = can_replay(sess.run_dir)
    assert not ok and "must be a path inside the repository" in reason
    with pytest.raises(ReplayError, match="must be a path inside the repository"):
        replay(sess.run_dir)


# -- a runner killed while its agent edits the contract ------------------------------------------------------

#: The agent's cheat: an evaluation that reports a perfect score, run from the allowed area.
CHEAT = (
    "import json, pathlib\npathlib.Path('.aider_fsm/cheated').touch()\n"
    "json.dump({'ok': True, 'score': 1.0}, open('.aider_fsm/metrics.json', 'w'))\n"
)
TAMPERED_PIPELINE = files.PIPELINE.replace("- python3 evaluate.py", "- python3 .aider_fsm/cheat.py")
TAMPERED_BOOTSTRAP = files.BOOTSTRAP.replace("from-bootstrap", "from-agent")
SECRET = "sk-live-0123456789abcdef"


def editing_agent(also: str = "") -> str:
    return textwrap.dedent(
        f"""
        import os, pathlib, time
        p = pathlib.Path
        p('.aider_fsm/cheat.py').write_text({CHEAT!r})
        p('pipeline.yml').write_text({TAMPERED_PIPELINE!r})
        p('.aider_fsm/bootstrap.yml').write_text({TAMPERED_BOOTSTRAP!r})
        """
    ) + also + "p('.aider_fsm/agent.pid').write_text(str(os.getpid()))\ntime.sleep(60)\n"


def run_killed_in_repair(repo: Path, agent_body: str) -> tuple[Path, int]:
    """Start a run whose evaluation fails, SIGKILL the runner while the agent sleeps after its edits."""
    (repo / "agent.py").write_text(agent_body)
    runner = subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", "run", ".", "--llm", "m", "--json",
         "--repair-cmd", f"{sys.executable} {repo / 'agent.py'}"],
        cwd=repo, stdout=subprocess.PIPE, text=True,
    )
    try:
        wait_for_file(repo / ".aider_fsm" / "agent.pid", runner, timeout=60)
    finally:
        os.kill(runner.pid, signal.SIGKILL)
        runner.communicate(timeout=10)
    (run_dir,) = (repo / ".aider_fsm" / "artifacts").iterdir()
    return run_dir, int((repo / ".aider_fsm" / "agent.pid").read_text())


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_replay_after_a_kill_mid_repair_runs_with_the_contract_from_before_the_repair(
    make_target: TargetFactory,
) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    pipeline, bootstrap = (repo / "pipeline.yml").read_bytes(), (repo / ".aider_fsm/bootstrap.yml").read_bytes()
    try:
        run_dir, agent = run_killed_in_repair(repo, editing_agent())
        assert pid_alive(agent) and (repo / "pipeline.yml").read_text() == TAMPERED_PIPELINE
        report = check_replay(run_dir)
        assert not report.repair_refused and "puts back pipeline.yml, .aider_fsm/bootstrap.yml" in report.repair_note
        assert any(line.startswith("repair: the runner was killed") for line in report.lines())

        (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)  # the fix, in the allowed area
        result = replay(run_dir)
        assert result.ok, result.error
        assert not pid_alive(agent)
        assert (repo / "pipeline.yml").read_bytes() == pipeline
        assert (repo / ".aider_fsm/bootstrap.yml").read_bytes() == bootstrap
        assert not (repo / ".aider_fsm" / "cheated").exists(), "the agent's evaluation ran"
        assert json.loads((repo / ".aider_fsm/envs/evaluate.json").read_text())["BOOT_FLAG"] == "from-bootstrap"
        prov = json.loads((run_dir / "repair_01" / "provenance.json").read_text())
        assert prov["interrupted"] is True and prov["restored"] == ["pipeline.yml", ".aider_fsm/bootstrap.yml"]
        seen = events(run_dir)
        undone = next(i for i, e in enumerate(seen) if e["event"] == "replay.repair_undone")
        ended = next(i for i, e in enumerate(seen) if e["event"] == "leftovers.ended")
        started = [i for i, e in enumerate(seen) if e["event"] == "command.start" and e.get("redrive") == 1]
        assert ended < undone < started[0]
        run = json.loads((run_dir / "run.json").read_text())
        assert run["contract_hashes"] == [run["contract_sha256"]]  # the agent's pipeline was never accepted
        assert procs_in(repo) == []
    finally:
        for pid in procs_in(repo):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("case", ["evaluate.py edited", "masked bootstrap"])
def test_replay_after_a_kill_mid_repair_refuses_naming_what_it_cannot_put_back(
    make_target: TargetFactory, case: str
) -> None:
    if case == "masked bootstrap":
        # The run dir's copy of bootstrap.yml has the secret masked: it cannot be put back byte for byte.
        repo = make_target(
            scoring=files.SCORING_BROKEN, bootstrap=files.BOOTSTRAP + f'  SERVICE_API_KEY: "{SECRET}"\n'
        )
        named, also = ".aider_fsm/bootstrap.yml", ""
    else:
        repo = make_target(scoring=files.SCORING_BROKEN)
        named, also = "evaluate.py (modified)", "p('evaluate.py').write_text('print(1)')\n"
    pipeline, evaluate = (repo / "pipeline.yml").read_bytes(), (repo / "evaluate.py").read_bytes()
    try:
        run_dir, agent = run_killed_in_repair(repo, editing_agent(also))
        records = (run_dir / "journal.jsonl").read_text()
        report = check_replay(run_dir)
        assert report.repair_refused and not report.ok and named in report.repair_note
        with pytest.raises(ReplayError, match="replay refuses until") as info:
            replay(run_dir)
        assert named in str(info.value)
        assert not pid_alive(agent), "the agent outlived a refused replay"
        assert (repo / "pipeline.yml").read_bytes() == pipeline  # what could be put back, was
        assert (run_dir / "journal.jsonl").read_text() == records  # nothing ran
        assert not (run_dir / "repair_01" / "provenance.json").exists()
        assert not any(SECRET in p.read_text() for p in (run_dir / "contract").iterdir())
        if case == "evaluate.py edited":
            (repo / "evaluate.py").write_bytes(evaluate)
            (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
            result = replay(run_dir)
            assert result.ok, result.error
        assert procs_in(repo) == []
    finally:
        for pid in procs_in(repo):
            os.kill(pid, signal.SIGKILL)


# -- a change the runner cannot undo ends the run -------------------------------------------------------------

#: Edits a helper the evaluation imports, then hands its directory to another user, read-only.
LOCKING_AGENT = textwrap.dedent(
    """
    import os, pathlib
    pathlib.Path('lib/helper.py').write_text('CHEAT = True\\n')
    os.chown('lib', 65534, 65534)
    os.chmod('lib', 0o555)
    """
)


def test_a_change_the_runner_cannot_undo_fails_the_run_with_a_repair_error(make_target: TargetFactory) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the runner without root's file rights")
    repo = make_target(scoring=files.SCORING_BROKEN)
    (repo / "lib").mkdir()
    (repo / "lib" / "helper.py").write_text("CHEAT = False\n")
    (repo / "agent.py").write_text(LOCKING_AGENT)
    try:
        done = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", sys.executable, "-m",
             "fsm_runner", "run", ".", "--llm", "m", "--json", "--repair-cmd", f"{sys.executable} agent.py"],
            cwd=repo, capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 1, done.stderr
        result = json.loads(done.stdout)
        assert not result["ok"], result
        error = result["error"]
        assert error["kind"] == "repair" and error["phase"] == "repair", error
        assert "could not undo it: lib/helper.py (modified)" in error["message"], error
        assert error["evidence"].endswith("repair_01/provenance.json")
        (run_dir,) = (repo / ".aider_fsm" / "artifacts").iterdir()
        records = [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]
        assert [(r["source"], r["dest"]) for r in records if r["source"] == "repair"] == [("repair", "failed")]
        prov = json.loads((run_dir / "repair_01" / "provenance.json").read_text())
        assert [c["path"] for c in prov["unreverted"]] == ["lib/helper.py"]
        assert procs_in(repo) == []
    finally:
        os.chmod(repo / "lib", 0o755)
        for pid in procs_in(repo):
            os.kill(pid, signal.SIGKILL)
