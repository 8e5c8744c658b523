"""Outputs belong to the run and the round that wrote them: real targets, real rollouts, real git repos."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fsm_runner
from fsm_runner.evidence.journal import read_journal
from fsm_runner.evidence.records import TransitionRecord
from fsm_runner.evidence.store import read_run
from fsm_runner.replays import replay
from tests.conftest import TargetFactory
from tests.helpers import target_files as files

NO_ROLLOUT = files.PIPELINE.replace("rollout:\n  run_cmds:\n    - python3 stage.py rollout\n    - python3 rollout.py\n", "")


def journal(run_dir: Path) -> list[TransitionRecord]:
    read = read_journal(run_dir / "journal.jsonl")
    assert read.problem is None, read.problem
    return list(read.records)


def ran(run_dir: Path, phase: str) -> list[str]:
    """The triggers of the journal records that left ``phase``, in order."""
    return [r.trigger for r in journal(run_dir) if r.source == phase and r.trigger != "restart"]


def events(run_dir: Path, name: str) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def sample_llms(path: Path) -> set[str]:
    return {json.loads(line)["meta"]["llm"] for line in path.read_text().splitlines() if line.strip()}


def git(repo: Path, *args: str) -> None:
    ident = ("-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false")
    subprocess.run(["git", *ident, *args], cwd=repo, check=True, capture_output=True)


# -- the evaluation scores this run's own rollout ------------------------------------------------------------


def test_evaluate_with_a_model_scores_its_own_samples_not_an_earlier_runs(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as earlier:
        assert earlier.rollout(llm="a").ok
    assert sample_llms(repo / ".aider_fsm" / "samples.jsonl") == {"a"}  # left in the repo for the next run

    with fsm_runner.setup(repo) as sess:
        result = sess.evaluate(llm="b")
    assert result.ok, result.error
    assert result.metrics is not None and result.metrics["llms"] == ["b"] and result.round == 1
    assert ran(sess.run_dir, "rollout") == ["phase_done"]
    assert "rollout" in [p.phase for p in result.phases]
    # The earlier run's outputs went into this run's evidence, and the moves were reported.
    aside = sess.run_dir / "rollout"
    assert sample_llms(aside / "previous.samples.jsonl") == {"a"}
    assert (aside / "previous.rollout.json").is_file()
    moved = {(e["path"], e["moved_to"]) for e in events(sess.run_dir, "output.set_aside")}
    assert moved == {
        (".aider_fsm/rollout.json", "rollout/previous.rollout.json"),
        (".aider_fsm/samples.jsonl", "rollout/previous.samples.jsonl"),
    }
    done = next(r for r in journal(sess.run_dir) if r.source == "rollout")
    assert done.outcome is not None
    assert {m["path"] for m in done.outcome.data["set_aside"]} == {p for p, _ in moved}


def test_evaluate_with_no_model_known_says_how_to_give_one(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as earlier:  # another run's model is not this session's
        assert earlier.rollout(llm="a").ok
    with fsm_runner.setup(repo) as sess:
        records = len(journal(sess.run_dir))
        with pytest.raises(fsm_runner.UsageError) as info:
            sess.evaluate()
        assert "pass evaluate(llm=...) or call rollout(llm=...) first" in str(info.value)
        assert len(journal(sess.run_dir)) == records and sess.state == "bootstrap"
        result = sess.evaluate(llm="b")  # the session is still usable
    assert result.ok and result.metrics is not None and result.metrics["llms"] == ["b"]


@pytest.mark.parametrize("llm", [None, "a"])
def test_evaluate_right_after_rollout_continues_the_round(make_target: TargetFactory, llm: str | None) -> None:
    with fsm_runner.setup(make_target()) as sess:
        assert sess.rollout(llm="a").ok
        result = sess.evaluate(llm=llm)
    assert result.ok, result.error
    assert [p.phase for p in result.phases] == ["evaluate", "benchmark", "verify", "teardown"]
    assert ran(sess.run_dir, "rollout") == ["phase_done"] and result.round == 1
    assert result.metrics is not None and result.metrics["llms"] == ["a"]


def test_evaluate_with_another_model_than_the_rollouts_starts_a_round(make_target: TargetFactory) -> None:
    with fsm_runner.setup(make_target()) as sess:
        assert sess.rollout(llm="a").round == 1
        result = sess.evaluate(llm="b")
    assert result.ok and result.round == 2
    assert result.metrics is not None and result.metrics["llms"] == ["b"]
    first, second = read_run(sess.run_dir).rounds
    assert (first.llm, first.status, first.metrics) == ("a", "closed", None)  # rolled out, never evaluated
    assert (second.llm, second.status, second.score) == ("b", "ok", 1.0)


def test_evaluate_on_a_pipeline_without_rollout_just_evaluates(make_target: TargetFactory) -> None:
    with fsm_runner.setup(make_target(pipeline=NO_ROLLOUT)) as sess:
        result = sess.evaluate()
    assert result.ok, result.error
    skip = next(r for r in journal(sess.run_dir) if r.source == "rollout")
    assert skip.trigger == "phase_skipped" and skip.reason == "pipeline.yml has no rollout commands"
    assert result.metrics is not None and result.metrics["llms"] == []


# -- rounds ----------------------------------------------------------------------------------------------------


CHECKPOINTS = ("ckpt-1", "ckpt-2", "ckpt-3")


def test_a_session_keeps_every_rounds_samples_metrics_and_record(make_target: TargetFactory) -> None:
    with fsm_runner.setup(make_target()) as sess:
        results = [sess.evaluate(llm=llm, env_overrides={"AIDER_EVAL_LIMIT": str(n)})
                   for n, llm in enumerate(CHECKPOINTS, start=2)]
    assert [(r.ok, r.round) for r in results] == [(True, 1), (True, 2), (True, 3)]
    assert [r.to_json()["round"] for r in results] == [1, 2, 3]
    assert [r.metrics["llms"] for r in results if r.metrics] == [[llm] for llm in CHECKPOINTS]

    rounds = read_run(sess.run_dir).rounds
    assert [(r.round, r.llm, r.status, r.mode) for r in rounds] == [
        (n, llm, "ok", "smoke") for n, llm in enumerate(CHECKPOINTS, start=1)
    ]
    for record, count in zip(rounds, (2, 3, 4), strict=True):
        n, llm = record.round, record.llm
        assert record.samples == f"round_{n}/samples.jsonl" and record.sample_count == count
        samples = sess.run_dir / record.samples
        assert sample_llms(samples) == {llm} and len(samples.read_text().splitlines()) == count
        assert json.loads((sess.run_dir / f"round_{n}" / "metrics.json").read_text()) == record.metrics
        assert record.metrics is not None and record.metrics["llms"] == [llm] and record.score == 1.0
        assert json.loads((sess.run_dir / f"round_{n}" / "benchmark.json").read_text()) == record.benchmark
        assert json.loads((sess.run_dir / f"round_{n}" / "rollout.json").read_text())["counts"]["samples"] == count
        assert record.started <= (record.finished or "")
    assert rounds[0].phases[:3] == ("clone", "bootstrap", "tests")
    for record in rounds[1:]:  # once-per-session phases are skipped, so they are not listed
        assert record.phases == ("deploy_setup", "health", "rollout", "evaluate", "benchmark", "verify", "teardown")
    # The journal says which round each transition belongs to.
    assert {r.round for r in journal(sess.run_dir)} == {1, 2, 3}


def test_a_rollout_left_unevaluated_is_a_closed_round(make_target: TargetFactory) -> None:
    with fsm_runner.setup(make_target()) as sess:
        assert sess.rollout(llm="a").ok
        assert sess.rollout(llm="b").round == 2
    first, second = read_run(sess.run_dir).rounds
    assert (first.status, first.samples, first.finished is not None) == ("closed", "round_1/samples.jsonl", True)
    assert (second.llm, second.status) == ("b", "closed")
    assert sample_llms(sess.run_dir / "round_1" / "samples.jsonl") == {"a"}
    assert sample_llms(sess.run_dir / "round_2" / "samples.jsonl") == {"b"}


def test_replay_of_a_failed_round_continues_that_round(make_target: TargetFactory) -> None:
    repo = make_target()
    scoring = repo / ".aider_fsm" / "scoring.py"
    with fsm_runner.setup(repo) as sess:
        assert sess.evaluate(llm="a").ok
        scoring.write_text(files.SCORING_BROKEN)
        failed = sess.evaluate(llm="b")
    assert not failed.ok and failed.round == 2 and failed.phase == "evaluate"
    first, second = read_run(sess.run_dir).rounds
    assert (second.round, second.llm, second.status, second.metrics) == (2, "b", "failed", None)

    scoring.write_text(files.SCORING_GOOD)
    result = replay(sess.run_dir)
    assert result.ok, result.error
    assert result.round == 2 and result.metrics is not None and result.metrics["llms"] == ["b"]
    again, continued = read_run(sess.run_dir).rounds
    assert again == first
    assert (continued.round, continued.llm, continued.status, continued.score) == (2, "b", "ok", 1.0)
    assert continued.started == second.started and continued.samples == "round_2/samples.jsonl"
    # Each phase is listed once, in the order it first ran in the round (the failed run's cleanup teardown).
    assert continued.phases == ("deploy_setup", "health", "rollout", "evaluate", "teardown", "benchmark", "verify")
    assert json.loads((sess.run_dir / "round_2" / "metrics.json").read_text())["llms"] == ["b"]
    assert json.loads((sess.run_dir / "round_1" / "metrics.json").read_text())["llms"] == ["a"]


# -- committed outputs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "key"),
    [
        (".aider_fsm/metrics.json", "evaluation.metrics_path"),
        (".aider_fsm/bench.json", "benchmark.metrics_path"),
        (".aider_fsm/rollout.json", "rollout.run_cmds"),
    ],
)
def test_a_committed_output_is_a_contract_error_at_setup(make_target: TargetFactory, rel: str, key: str) -> None:
    repo = make_target()
    (repo / rel).write_text('{"ok": true, "score": 1.0}')
    git(repo, "init", "-q")
    git(repo, "add", "pipeline.yml", rel)
    git(repo, "commit", "-q", "-m", "results")
    with pytest.raises(fsm_runner.ContractError) as info:
        fsm_runner.setup(repo)
    assert info.value.key == key and info.value.path == "pipeline.yml"
    message = str(info.value)
    assert message.startswith(f"pipeline.yml: {key}: {rel} is committed to git")
    assert f"git rm --cached {rel}" in message
    assert (repo / rel).read_text() == '{"ok": true, "score": 1.0}'  # nothing was moved
    assert not (repo / ".aider_fsm" / "artifacts").exists()  # and no run was started
    checked = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "validate", str(repo)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 2 and f"{rel} is committed to git" in checked.stdout


def test_samples_a_leftover_rollout_names_may_not_be_committed(make_target: TargetFactory) -> None:
    repo = make_target()
    (repo / "data").mkdir()
    (repo / "data" / "fixed.jsonl").write_text('{"prompt": "q", "completion": "a", "reward": 1}\n')
    (repo / ".aider_fsm" / "rollout.json").write_text('{"paths": {"samples_jsonl": "data/fixed.jsonl"}}')
    git(repo, "init", "-q")
    git(repo, "add", "data/fixed.jsonl")
    git(repo, "commit", "-q", "-m", "fixtures")
    with pytest.raises(fsm_runner.ContractError) as info:
        fsm_runner.setup(repo)
    assert (info.value.path, info.value.key) == (".aider_fsm/rollout.json", "paths.samples_jsonl")
    assert "data/fixed.jsonl is committed to git" in str(info.value)
    assert "delete the leftover .aider_fsm/rollout.json" in str(info.value)


def test_an_untracked_leftover_in_a_git_tree_is_moved_and_reported(make_target: TargetFactory) -> None:
    repo = make_target()
    git(repo, "init", "-q")
    git(repo, "add", "pipeline.yml")
    git(repo, "commit", "-q", "-m", "contract")
    stale = '{"ok": true, "score": 0.125, "llms": ["stale"]}'
    (repo / ".aider_fsm" / "metrics.json").write_text(stale)
    with fsm_runner.setup(repo) as sess:
        result = sess.evaluate(llm="m")
    assert result.ok and result.metrics is not None and result.metrics["llms"] == ["m"]
    assert (sess.run_dir / "evaluate" / "previous.metrics.json").read_text() == stale
    (event,) = events(sess.run_dir, "output.set_aside")
    assert (event["phase"], event["path"], event["moved_to"]) == (
        "evaluate", ".aider_fsm/metrics.json", "evaluate/previous.metrics.json"
    )
    done = next(r for r in journal(sess.run_dir) if r.source == "evaluate")
    assert done.outcome is not None
    assert done.outcome.data["set_aside"] == [
        {"path": ".aider_fsm/metrics.json", "moved_to": "evaluate/previous.metrics.json"}
    ]
    assert re.fullmatch(r"round_1/metrics\.json", done.outcome.data["metrics_copy"])
