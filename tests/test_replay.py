"""Replay (redrive) of failed and crashed runs, and the reasons a run cannot be replayed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.evidence.journal import read_journal
from fsm_runner.evidence.records import TransitionRecord
from fsm_runner.replays import DryRunReport, can_replay, check_replay, replay
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid, wait_for_file
from tests.helpers import target_files as files


def records(run_dir: Path) -> list[TransitionRecord]:
    read = read_journal(run_dir / "journal.jsonl")
    assert read.problem is None, read.problem
    return list(read.records)


def failed_run(repo: Path) -> Path:
    with fsm_runner.setup(repo) as sess:
        sess.rollout(llm="m")
        assert not sess.evaluate().ok
    return sess.run_dir


def test_replay_after_fix_finishes_the_same_run(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    before = records(run_dir)
    assert can_replay(run_dir) == (True, "continues at evaluate (redrive 1)")
    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    result = replay(run_dir)
    assert isinstance(result, fsm_runner.EvaluationResult)
    assert result.ok, result.error
    assert result.run_id == run_dir.name and result.metrics and result.metrics["score"] == 1.0
    after = records(run_dir)
    assert after[: len(before)] == before
    new = after[len(before):]
    assert [r.seq for r in new] == list(range(len(before) + 1, len(after) + 1))
    assert (new[0].trigger, new[0].source, new[0].dest) == ("redrive", "failed", "evaluate")
    assert all(r.redrive_count == 1 for r in new)
    phases_run = [r.source for r in new if r.trigger == "phase_done"]
    assert "bootstrap" not in phases_run and "tests" not in phases_run
    assert [r.trigger for r in new if r.source == "rollout"] == ["phase_skipped"]
    assert "deploy_setup" in phases_run  # the failed run had torn down; evaluate needs the service again
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "ok" and run["redrive_count"] == 1
    assert not procs_in(repo)
    ok, reason = can_replay(run_dir)
    assert not ok and "finished successfully" in reason


def test_contract_fixed_by_hand_is_accepted_and_both_hashes_recorded(make_target: TargetFactory) -> None:
    broken = files.PIPELINE.replace("required_keys: [ok, score]", "required_keys: [ok, score, accuracy]")
    repo = make_target(pipeline=broken)
    run_dir = failed_run(repo)
    (repo / "pipeline.yml").write_text(files.PIPELINE)
    result = replay(run_dir)
    assert result.ok
    hashes = json.loads((run_dir / "run.json").read_text())["contract_hashes"]
    assert len(hashes) == 2 and hashes[0] != hashes[1]


def contract_copies(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (run_dir / "contract").iterdir()}


def test_the_run_dir_keeps_every_contract_it_ran_with_and_the_dry_run_shows_the_diff(
    make_target: TargetFactory,
) -> None:
    broken = files.PIPELINE.replace("required_keys: [ok, score]", "required_keys: [ok, score, accuracy]")
    repo = make_target(pipeline=broken)
    run_dir = failed_run(repo)
    first = hashlib.sha256(broken.encode()).hexdigest()
    boot = (repo / ".aider_fsm" / "bootstrap.yml").read_bytes()
    assert contract_copies(run_dir) == {
        f"{first}.pipeline.yml": broken.encode(),
        f"{hashlib.sha256(boot).hexdigest()}.bootstrap.yml": boot,
    }
    assert replay(run_dir, dry_run=True).contract_diff == ()

    (repo / "pipeline.yml").write_text(files.PIPELINE)
    report = check_replay(run_dir)
    assert report.contract_changed and report.ok
    diff = list(report.contract_diff)
    assert diff[0] == f"--- pipeline.yml (the run's, sha256 {first[:12]})"
    assert diff[1].startswith("+++ pipeline.yml (now, sha256 ")
    assert "-  required_keys: [ok, score, accuracy]" in diff and "+  required_keys: [ok, score]" in diff
    lines = report.lines()
    start = lines.index("contract: changed since the run (accepted; it validates)")
    assert lines[start + 1 : start + 1 + len(diff)] == [f"  {line}" for line in diff]
    assert report.to_json()["contract_diff"] == diff

    shown = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "replay", run_dir.name, "--dry-run", "--repo", str(repo)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "  -  required_keys: [ok, score, accuracy]\n  +  required_keys: [ok, score]\n" in shown.stdout

    assert replay(run_dir).ok
    second = hashlib.sha256(files.PIPELINE.encode()).hexdigest()
    kept = contract_copies(run_dir)
    assert kept[f"{first}.pipeline.yml"] == broken.encode()
    assert kept[f"{second}.pipeline.yml"] == files.PIPELINE.encode()
    assert len(kept) == 3


def test_secrets_in_the_contract_are_masked_in_its_copy_and_its_diff(make_target: TargetFactory) -> None:
    secret = "sk-live-0123456789abcdef"
    pipeline = files.PIPELINE.replace(
        "evaluation:\n", f"evaluation:\n  env:\n    EVAL_API_KEY: \"{secret}\"\n"
    )
    repo = make_target(pipeline=pipeline, scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    (copy,) = (p for p in (run_dir / "contract").iterdir() if p.name.endswith(".pipeline.yml"))
    assert secret not in copy.read_text() and 'EVAL_API_KEY: "***"' in copy.read_text()
    (repo / "pipeline.yml").write_text(pipeline.replace("max_cmd_seconds: 60", "max_cmd_seconds: 50"))
    report = check_replay(run_dir)
    assert report.contract_diff and not any(secret in line for line in report.lines())


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("no_dir", "no such run directory"),
        ("no_journal", "no journal.jsonl"),
        ("torn", "last line is truncated"),
        ("bad_run_json", r"run\.json: not valid JSON"),
        ("wrong_run_json", r"run\.json: round: expected a whole number, got 'one'"),
        ("bad_line", r"journal\.jsonl:2: .*the journal cannot be trusted for replay"),
    ],
)
def test_unreplayable_runs_give_a_reason(make_target: TargetFactory, tmp_path: Path, damage: str, reason: str) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    if damage == "no_dir":
        run_dir = tmp_path / "nope"
    elif damage == "no_journal":
        (run_dir / "journal.jsonl").unlink()
    elif damage == "torn":
        with (run_dir / "journal.jsonl").open("a") as handle:
            handle.write('{"seq": 99, "trig')
    elif damage == "bad_run_json":
        (run_dir / "run.json").write_text("{")
    elif damage == "wrong_run_json":
        state = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**state, "round": "one"}))
    else:
        lines = (run_dir / "journal.jsonl").read_text().splitlines(keepends=True)
        lines[1] = json.dumps({"seq": 2, "trigger": "phase_done"}) + "\n"
        (run_dir / "journal.jsonl").write_text("".join(lines))
    ok, why = can_replay(run_dir)
    assert not ok and re.search(reason, why), why
    with pytest.raises(fsm_runner.ReplayError, match=reason):
        replay(run_dir)


def test_live_run_is_refused(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        ok, why = can_replay(sess.run_dir)
        assert not ok and "still in progress" in why


def test_dry_run_accepts_a_recorded_run_and_rejects_a_tampered_one(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    report = replay(run_dir, dry_run=True)
    assert isinstance(report, DryRunReport)
    assert report.ok and len(report.steps) == len(records(run_dir))
    assert report.lines()[-1] == "replayable"
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    tampered = json.loads(lines[2])
    tampered["dest"] = "benchmark"
    lines[2] = json.dumps(tampered)
    (run_dir / "journal.jsonl").write_text("\n".join(lines) + "\n")
    report = replay(run_dir, dry_run=True)
    assert not report.ok
    bad = [s for s in report.steps if not s.accepted]
    assert [s.seq for s in bad] == [3, 4] and "now goes to" in bad[0].note
    assert "previous record ended in benchmark" in bad[1].note


CRASHING_DRIVER = textwrap.dedent(
    """
    import sys, fsm_runner
    sess = fsm_runner.setup(sys.argv[1])
    print(sess.run_dir, flush=True)
    sess.rollout(llm="m")
    sess.evaluate()
    """
)


def test_sigkill_mid_evaluation_then_replay_finishes(make_target: TargetFactory) -> None:
    gate = "test -f .aider_fsm/go || { touch .aider_fsm/evaluating; sleep 60; }"
    pipeline = files.PIPELINE.replace("- python3 evaluate.py", f"- {gate}\n    - python3 evaluate.py")
    repo = make_target(pipeline=pipeline)
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_DRIVER, str(repo)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_dir = Path(proc.stdout.readline().strip())
    wait_for_file(repo / ".aider_fsm" / "evaluating", proc)
    old_service = service_pid(repo)
    assert old_service is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert pid_alive(old_service)  # nothing could clean up after SIGKILL
    (repo / ".aider_fsm" / "go").touch()
    result = replay(run_dir)
    assert result.ok, result.error
    assert not pid_alive(old_service)
    new = [r for r in records(run_dir) if r.redrive_count == 1]
    assert [(r.trigger, r.source) for r in new[:2]] == [("redeploy", "evaluate"), ("phase_done", "deploy_setup")]
    assert not procs_in(repo)


def test_secret_overrides_are_asked_for_again_and_the_dry_run_says_so(
    make_target: TargetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BENCH_API_KEY", raising=False)
    repo = make_target(scoring=files.SCORING_BROKEN)
    with fsm_runner.setup(repo, env_overrides={"BENCH_API_KEY": "sk-test-123456789"}) as sess:
        sess.rollout(llm="m")
        assert not sess.evaluate().ok
    report = fsm_runner.check_replay(sess.run_dir)
    assert report.ok and report.secrets_needed == ("BENCH_API_KEY",)
    assert report.lines()[-2] == (
        "replay: set BENCH_API_KEY in the environment or pass it again with --env (not stored)"
    )
    assert report.to_json()["secrets_needed"] == ["BENCH_API_KEY"]
    with pytest.raises(fsm_runner.ReplayError, match="secret overrides that are not stored: BENCH_API_KEY"):
        replay(sess.run_dir)
    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    result = replay(sess.run_dir, env_overrides={"BENCH_API_KEY": "sk-test-123456789"})
    assert result.ok
    monkeypatch.setenv("BENCH_API_KEY", "from-the-environment")
    assert fsm_runner.check_replay(sess.run_dir).secrets_needed == ()


def events(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_replay_in_the_process_that_holds_the_failed_session(make_target: TargetFactory) -> None:
    """The notebook loop: evaluate fails, fix, replay, with the session still open."""
    repo = make_target(scoring=files.SCORING_BROKEN)
    sess = fsm_runner.setup(repo)
    sess.rollout(llm="m")
    e = sess.evaluate()
    assert not e.ok
    ok, reason = can_replay(os.path.relpath(e.run_dir))
    assert ok and reason.startswith("continues at evaluate (redrive 1)") and "this process" in reason
    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    result = fsm_runner.replay(e.run_dir)
    assert result.ok, result.error
    assert result.run_id == e.run_id and result.metrics and result.metrics["score"] == 1.0
    assert [ev["event"] for ev in events(e.run_dir)].count("replay.closed_session") == 1
    with pytest.raises(fsm_runner.UsageError, match="closed"):
        sess.evaluate()
    sess.close()
    assert not procs_in(repo)


def test_a_session_of_this_process_that_did_not_fail_is_not_closed_by_replay(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        assert sess.rollout(llm="m").ok
        ok, reason = can_replay(sess.run_dir)
        assert not ok and "in this process" in reason and "open at evaluate" in reason
        with pytest.raises(fsm_runner.ReplayError, match="in this process"):
            replay(sess.run_dir)
        assert sess.evaluate().ok


def _move_or_copy(how: str, repo: Path) -> Path:
    other = repo.with_name(repo.name + "-" + how)
    if how == "copy":
        subprocess.run(["cp", "-r", str(repo), str(other)], check=True)
    else:
        repo.rename(other)
    return other


@pytest.mark.parametrize("how", ["copy", "move"])
def test_replay_works_in_the_repository_that_holds_the_run_dir(make_target: TargetFactory, how: str) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    before = (repo / ".aider_fsm" / "metrics.json").read_text()
    there = _move_or_copy(how, repo)
    (there / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    dry = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "replay", "latest", "--dry-run"],
        cwd=there, capture_output=True, text=True, timeout=60,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    note = next(line for line in dry.stdout.splitlines() if line.startswith("repo: "))
    assert f"recorded {repo};" in note and f"works in {there}," in note
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "replay", "latest", "--json"],
        cwd=there, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and result["run_id"] == run_dir.name
    replayed = there / ".aider_fsm" / "artifacts" / run_dir.name
    assert Path(result["run_dir"]) == replayed
    cwd = json.loads((replayed / "evaluate.2" / "cmd01_try01.json").read_text())["cwd"]
    assert cwd == str(there)
    assert json.loads((there / ".aider_fsm" / "metrics.json").read_text())["run_id"] == run_dir.name
    assert json.loads((replayed / "run.json").read_text())["target"]["repo_root"] == str(there)
    moved = [ev for ev in events(replayed) if ev["event"] == "replay.repo"]
    assert [(ev["repo"], ev["recorded"]) for ev in moved] == [(str(there), str(repo))]
    if how == "copy":
        assert (repo / ".aider_fsm" / "metrics.json").read_text() == before, "replay ran in the original"
        assert not procs_in(repo)
    assert not procs_in(there)


def test_an_isolated_run_is_replayed_in_the_tree_it_was_copied_from(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    with fsm_runner.setup(repo, isolate=True) as sess:
        copy = sess.repo_root
        assert not sess.evaluate(llm="m").ok
    assert not copy.exists() and sess.run_dir.parent == repo / ".aider_fsm" / "artifacts"
    report = fsm_runner.check_replay(sess.run_dir)
    assert report.ok and report.repo_root == repo
    assert f"worked in {copy}, a private copy of {repo}" in report.repo_note
    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    result = replay(sess.run_dir)
    assert result.ok, result.error
    assert json.loads((repo / ".aider_fsm" / "metrics.json").read_text())["run_id"] == sess.run_id
    target = json.loads((sess.run_dir / "run.json").read_text())["target"]
    assert target["repo_root"] == str(repo) and "isolated_from" not in target


def test_replay_takes_the_tree_and_is_refused_while_another_run_holds_it(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    with fsm_runner.setup(repo) as live:
        with pytest.raises(fsm_runner.UsageError) as info:
            replay(run_dir)
        assert live.run_id in str(info.value) and "open in this process" in str(info.value)
    assert can_replay(run_dir)[0]
