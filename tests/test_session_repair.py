"""The repair loop driven for real: agent scripts fix, vandalise, or fail to fix a target."""

from __future__ import annotations

import sys
from pathlib import Path

import fsm_runner
from fsm_runner.evidence.journal import read_journal
from fsm_runner.evidence.records import TransitionRecord
from tests.conftest import TargetFactory
from tests.helpers import target_files as files

FIXER = f"""
import os, sys
repo = sys.argv[1]
open(os.path.join(repo, ".aider_fsm", "scoring.py"), "w").write({files.SCORING_GOOD!r})
"""

VANDAL = FIXER + """
open(os.path.join(repo, "pipeline.yml"), "a").write("# agent was here\\n")
open(os.path.join(repo, "evaluate.py"), "a").write("# agent was here\\n")
open(os.path.join(repo, "new_outside.txt"), "w").write("x")
"""

NOOP = "print('looked at it, changed nothing')"


def agent_cmd(tmp_path: Path, source: str) -> list[str]:
    script = tmp_path / "agent.py"
    script.write_text(source)
    return [sys.executable, str(script), "{repo}"]


def evaluate_records(run_dir: Path) -> list[TransitionRecord]:
    read = read_journal(run_dir / "journal.jsonl")
    assert read.problem is None, read.problem
    return [r for r in read.records if r.source == "evaluate" and r.trigger not in ("redeploy", "recheck_health")]


def test_agent_fixes_evaluation_on_second_attempt(make_target: TargetFactory, tmp_path: Path) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    with fsm_runner.setup(repo, repair_agent=agent_cmd(tmp_path, FIXER)) as sess:
        sess.rollout(llm="m")
        result = sess.evaluate(repair_iters=2)
    assert result.ok, result.error
    assert result.repairs_used == 1 and result.metrics is not None and result.metrics["score"] == 1.0
    evals = evaluate_records(sess.run_dir)
    assert [(r.trigger, r.dest) for r in evals] == [("phase_done", "repair"), ("phase_done", "benchmark")]
    repair_dir = sess.run_dir / "repair_01"
    for name in ("request.json", "prompt.md", "provenance.json"):
        assert (repair_dir / name).is_file(), name
    assert "has_required_keys" in (repair_dir / "prompt.md").read_text()


def test_agent_edits_outside_the_allowed_area_are_reverted(make_target: TargetFactory, tmp_path: Path) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    pipeline_before = (repo / "pipeline.yml").read_bytes()
    evaluate_before = (repo / "evaluate.py").read_bytes()
    with fsm_runner.setup(repo, repair_agent=agent_cmd(tmp_path, VANDAL)) as sess:
        sess.rollout(llm="m")
        result = sess.evaluate(repair_iters=1)
    assert result.ok, result.error
    assert (repo / "pipeline.yml").read_bytes() == pipeline_before
    assert (repo / "evaluate.py").read_bytes() == evaluate_before
    assert not (repo / "new_outside.txt").exists()
    provenance = (sess.run_dir / "repair_01" / "provenance.json").read_text()
    assert "new_outside.txt" in provenance and "evaluate.py" in provenance


def test_agent_that_never_fixes_exhausts_the_budget(make_target: TargetFactory, tmp_path: Path) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    with fsm_runner.setup(repo, repair_agent=agent_cmd(tmp_path, NOOP)) as sess:
        sess.rollout(llm="m")
        result = sess.evaluate(repair_iters=2)
    assert not result.ok and result.repairs_used == 2
    assert result.error is not None and "repair budget exhausted: 2/2" in result.error.message
    assert len(evaluate_records(sess.run_dir)) == 3
    assert (sess.run_dir / "repair_02").is_dir() and not (sess.run_dir / "repair_03").exists()


def test_zero_repair_iters_never_calls_the_agent(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    calls: list[object] = []
    with fsm_runner.setup(repo, repair_agent=calls.append) as sess:
        sess.rollout(llm="m")
        result = sess.evaluate(repair_iters=0)
    assert not result.ok and calls == [] and result.repairs_used == 0
