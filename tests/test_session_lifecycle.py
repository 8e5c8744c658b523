"""Session life cycle edge cases: closing in any state, signals between calls, re-deploys, stale outputs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.evidence.journal import read_journal
from fsm_runner.replays import can_replay, replay
from fsm_runner.targets import ResolvedTarget
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid, wait_for_file
from tests.helpers import target_files as files


def triggers(run_dir: Path) -> list[tuple[str, str, str]]:
    read = read_journal(run_dir / "journal.jsonl")
    assert read.problem is None, read.problem
    return [(r.trigger, r.source, r.dest) for r in read.records]


@pytest.mark.parametrize("through", ["deploy_setup", "health", "rollout", "verify", "teardown"])
def test_close_after_advance_tears_down_from_any_phase(make_target: TargetFactory, through: str) -> None:
    repo = make_target()
    sess = fsm_runner.setup(repo)
    result = sess.advance(through, llm="m")
    assert isinstance(result, fsm_runner.EvaluationResult)
    assert result.ok and result.phase == through and result.error is None, result.error
    assert result.phases[-1].phase == through
    pid = service_pid(repo)
    sess.close()
    assert pid is None or not pid_alive(pid)
    run = json.loads((sess.run_dir / "run.json").read_text())
    finished = through == "teardown"  # advancing through teardown completes the run
    assert run["status"] == ("ok" if finished else "closed") and run["deployed"] is False
    ok, reason = can_replay(sess.run_dir)
    assert not ok and ("finished successfully" if finished else "closed before the pipeline finished") in reason


def test_advance_that_fails_before_its_phase_is_not_ok(make_target: TargetFactory) -> None:
    repo = make_target(pipeline=files.PIPELINE.replace("cmds: python3 stage.py tests", "cmds: exit 3"))
    with fsm_runner.setup(repo) as sess:
        result = sess.advance("health", llm="m")
    assert not result.ok and result.phase == "tests" and sess.state == "failed"
    assert result.error is not None and result.error.phase == "tests" and result.metrics is None


BETWEEN_CALLS = textwrap.dedent(
    """
    import sys, time, fsm_runner
    sess = fsm_runner.setup(sys.argv[1])
    sess.rollout(llm="m")
    print(sess.run_dir, flush=True)
    time.sleep(60)  # a training step
    """
)


def test_a_failing_teardown_does_not_hide_why_the_run_failed(tmp_path: Path) -> None:
    """The run failed in evaluate; a teardown that fails too is recorded, but the run stays an evaluate
    failure, replayable from there."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pipeline.yml").write_text(
        "version: 1\n"
        "deploy:\n  setup_cmds: 'sleep 30 &'\n  teardown_cmds: 'echo cannot stop; false'\n"
        "evaluation:\n  run_cmds: 'echo scorer crashed >&2; exit 3'\n  metrics_path: m.json\n"
    )
    with fsm_runner.setup(repo) as sess:
        result = sess.evaluate()
    assert not result.ok and result.phase == "evaluate"
    assert result.error is not None and "exit code 3" in result.error.message
    cleanup = [r for r in read_journal(result.run_dir / "journal.jsonl").records if r.trigger == "cleanup"]
    assert len(cleanup) == 1 and cleanup[0].outcome is not None and cleanup[0].outcome.status == "failed"
    assert cleanup[0].error is not None and cleanup[0].error.phase == "evaluate"
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["failed_phase"] == "evaluate" and run["last_error"]["phase"] == "evaluate"
    assert can_replay(result.run_dir) == (True, "continues at evaluate (redrive 1)")
    assert procs_in(repo) == []


def test_sigterm_between_calls_tears_down(make_target: TargetFactory) -> None:
    repo = make_target()
    proc = subprocess.Popen([sys.executable, "-c", BETWEEN_CALLS, str(repo)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_dir = Path(proc.stdout.readline().strip())
    pid = service_pid(repo)
    assert pid is not None and pid_alive(pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == -signal.SIGTERM
    assert not pid_alive(pid) and not procs_in(repo)
    assert json.loads((run_dir / "run.json").read_text())["deployed"] is False


def test_a_repaired_deploy_runs_again(make_target: TargetFactory, tmp_path: Path) -> None:
    pipeline = files.PIPELINE.replace("    - python3 stage.py deploy\n", "    - test -f .aider_fsm/deploy_ok\n")
    repo = make_target(pipeline=pipeline)
    with fsm_runner.setup(repo, repair_agent=lambda req: (req.repo / ".aider_fsm" / "deploy_ok").touch()) as sess:
        result = sess.rollout(llm="m")
    assert result.ok, result.error
    deploys = [t for t in triggers(sess.run_dir) if t[1] == "deploy_setup"]
    assert deploys == [("phase_failed", "deploy_setup", "repair"), ("phase_done", "deploy_setup", "health")]


def test_metrics_left_by_an_earlier_run_do_not_pass(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        assert sess.evaluate(llm="m").ok
    (repo / "evaluate.py").write_text("print('forgot to write metrics')\n")
    with fsm_runner.setup(repo) as sess:
        result = sess.evaluate(llm="m")
    assert not result.ok and result.error is not None
    assert "metrics.json" in result.error.message and result.error.kind == "guard"
    assert (sess.run_dir / "evaluate" / "previous.metrics.json").is_file()


def test_secrets_from_bootstrap_and_stage_env_never_reach_evidence(make_target: TargetFactory) -> None:
    bootstrap = files.BOOTSTRAP + '  HF_TOKEN: "sekrit-boot-7431"\n'
    pipeline = files.PIPELINE.replace(
        "tests:\n  cmds: python3 stage.py tests\n",
        "tests:\n  cmds: echo $HF_TOKEN $STAGE_API_KEY\n  env:\n    STAGE_API_KEY: sekrit-stage-9182\n",
    )
    repo = make_target(pipeline=pipeline, bootstrap=bootstrap)
    with fsm_runner.setup(repo) as sess:
        assert sess.evaluate(llm="m").ok
    assert (sess.run_dir / "tests" / "cmd01_try01.stdout").read_text().strip() == "*** ***"
    for path in sess.run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"sekrit-boot-7431" not in data and b"sekrit-stage-9182" not in data, path


@pytest.mark.parametrize(
    "call, message",
    [
        ("rollout", "require_samples is set but pipeline.yml has no rollout.run_cmds"),
        ("evaluate", "metrics are required but pipeline.yml has no evaluation.run_cmds"),
    ],
)
def test_required_outputs_without_a_section_fail(make_target: TargetFactory, call: str, message: str) -> None:
    text = files.PIPELINE
    cut = "rollout:\n" if call == "rollout" else "evaluation:\n"
    start = text.index(cut)
    end = text.index("\n", text.index("required_keys", start) if call == "evaluate" else text.index("rollout.py", start))
    repo = make_target(pipeline=text[:start] + text[end + 1 :])
    with fsm_runner.setup(repo) as sess:
        result = sess.rollout(llm="m", require_samples=True) if call == "rollout" else sess.evaluate(llm="m")
    assert not result.ok and result.error is not None and message in result.error.message


def test_a_bootstrap_file_fixed_by_repair_is_read_again(make_target: TargetFactory) -> None:
    repo = make_target(bootstrap="version: 1\ncmds: exit 3\n")

    def fix(request: fsm_runner.RepairRequest) -> None:
        (request.repo / ".aider_fsm" / "bootstrap.yml").write_text(files.BOOTSTRAP)

    with fsm_runner.setup(repo, repair_agent=fix) as sess:
        assert sess.rollout(llm="m").ok
    assert ("retry", "repair", "bootstrap") in triggers(sess.run_dir)


def test_existing_evidence_dirs_are_never_overwritten(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        (sess.run_dir / "tests").mkdir()
        assert sess.rollout(llm="m").ok
    assert (sess.run_dir / "tests.2" / "cmd01_try01.stdout").is_file()
    assert not any((sess.run_dir / "tests").iterdir())


def test_credentials_in_a_target_url_are_not_recorded(tmp_path: Path) -> None:
    target = ResolvedTarget("https://me:tok3n@example.org/b.git", tmp_path, "git", url="https://me:tok3n@example.org/b.git")
    data = json.dumps(target.to_json())
    assert "tok3n" not in data and "me:" not in data  # the whole user-info part is masked
    assert target.to_json()["spec"] == target.to_json()["url"] == "https://***@example.org/b.git"


def test_replay_names_secret_overrides_it_needs_again(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    with fsm_runner.setup(repo, env_overrides={"MY_API_KEY": "sekrit-override-55"}) as sess:
        sess.rollout(llm="m")
        assert not sess.evaluate().ok
    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    with pytest.raises(fsm_runner.ReplayError, match="MY_API_KEY"):
        replay(sess.run_dir)
    assert replay(sess.run_dir, env_overrides={"MY_API_KEY": "sekrit-override-55"}).ok


def test_dry_run_of_a_finished_run_is_not_replayable(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        assert sess.evaluate(llm="m").ok
    report = replay(sess.run_dir, dry_run=True)
    assert not report.ok and all(step.accepted for step in report.steps)
    assert "finished successfully" in report.lines()[-2]


KILLED_IN_REPAIR = textwrap.dedent(
    """
    import sys, time, pathlib, fsm_runner
    def agent(request):
        (request.repo / ".aider_fsm" / "repairing").touch()
        time.sleep(60)
    sess = fsm_runner.setup(sys.argv[1], repair_agent=agent)
    print(sess.run_dir, flush=True)
    sess.rollout(llm="m")
    sess.evaluate(repair_iters=1)
    """
)


def test_replay_of_a_run_killed_during_repair_redrives_the_failed_phase(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_IN_REPAIR, str(repo)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_dir = Path(proc.stdout.readline().strip())
    wait_for_file(repo / ".aider_fsm" / "repairing", proc)
    proc.kill()
    proc.wait(timeout=10)
    assert triggers(run_dir)[-1][2] == "repair"
    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    result = replay(run_dir)
    assert result.ok, result.error
    new = [t for t in triggers(run_dir) if t[0] == "redrive"]
    assert new == [("redrive", "failed", "evaluate")]
    assert not procs_in(repo)
