"""Each guard against real files and context values, and what ``explain`` says when it does not hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.engine import guards as g
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.engine.phase import RepairReport
from fsm_runner.engine.topology import GUARD_NAMES, NOT_REPAIRABLE, PHASES, retry_guard
from tests.helpers.context import ContextFactory, contexts

EVAL = (
    "evaluation:\n  run_cmds: 'true'\n  metrics_path: out/metrics.json\n  required_keys: [ok, eval.score]\n"
)
BENCH = "benchmark:\n  run_cmds: 'true'\n  metrics_path: out/bench.json\n  required_keys: [n]\n"
PIPELINE = "version: 1\n" + EVAL + BENCH
ROLLOUT_REL = ".aider_fsm/rollout.json"


class UnusedRepairer:
    """A configured repairer; the guards only ask whether one is there, never call it."""

    def repair(self, ctx: RunContext, work_dir: Path, failure: ErrorInfo) -> RepairReport:
        raise AssertionError("a guard must not run a repair")


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[ContextFactory]:
    with contexts(tmp_path) as factory:
        yield factory


def sample(completion: str = "a", **extra: Any) -> str:
    return json.dumps({"prompt": "q", "completion": completion, "reward": 1.0, **extra})


def rollout_files(samples: list[str] | None, **rollout: Any) -> dict[str, str]:
    files = {ROLLOUT_REL: json.dumps({"paths": {"samples_jsonl": ".aider_fsm/s.jsonl"}, **rollout})}
    if samples is not None:
        files[".aider_fsm/s.jsonl"] = "".join(line + "\n" for line in samples)
    return files


# -- is_healthy ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "passed_at, deployed_at, expected",
    [
        (None, None, False),
        (None, 5.0, False),
        (5.0, None, True),
        (5.0, 3.0, True),
        (5.0, 5.0, True),
        (3.0, 5.0, False),  # a success from before the current deployment does not count
    ],
)
def test_is_healthy_needs_a_success_within_the_current_deployment(
    make_ctx: ContextFactory, passed_at: float | None, deployed_at: float | None, expected: bool
) -> None:
    ctx = make_ctx(health_passed_at=passed_at, deployed_at=deployed_at)
    assert g.is_healthy(ctx) is expected
    message, evidence = g.explain("is_healthy", ctx)
    assert message.startswith("guard is_healthy failed") and evidence is None


# -- has_required_keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phase, files, expected, problem",
    [
        ("evaluate", {"out/metrics.json": '{"ok": true, "eval": {"score": 0.5}}'}, True, None),
        (
            "evaluate",
            {"out/metrics.json": '{"ok": false, "eval": {"score": 0.5}}'},
            False,
            "ok must be true, got false",
        ),
        (
            "evaluate",
            {"out/metrics.json": '{"ok": true, "eval": {}}'},
            False,
            "missing required keys: eval.score",
        ),
        ("evaluate", {"out/metrics.json": "[1, 2]"}, False, "expected a JSON object, got array"),
        ("evaluate", {"out/metrics.json": "{oops"}, False, "invalid JSON"),
        ("evaluate", {}, False, "file not found"),
        ("benchmark", {"out/bench.json": '{"n": 3}'}, True, None),
        ("benchmark", {"out/metrics.json": '{"ok": true, "eval": {"score": 1}}'}, False, "file not found"),
    ],
)
def test_has_required_keys_reads_the_metrics_of_the_current_phase(
    make_ctx: ContextFactory, phase: str, files: dict[str, str], expected: bool, problem: str | None
) -> None:
    ctx = make_ctx(PIPELINE, files=files, phase=phase)
    assert g.has_required_keys(ctx) is expected
    if problem is not None:
        message, evidence = g.explain("has_required_keys", ctx)
        assert message.startswith("guard has_required_keys failed: ") and problem in message
        rel = "out/bench.json" if phase == "benchmark" else "out/metrics.json"
        assert evidence == str(ctx.repo_root / rel)


@pytest.mark.parametrize("phase", ["evaluate", "benchmark", "verify"])
def test_without_a_metrics_path_the_guard_holds(make_ctx: ContextFactory, phase: str) -> None:
    # A required-but-undeclared metrics file is refused by the evaluate phase before its commands run.
    ctx = make_ctx("version: 1\nevaluation:\n  run_cmds: 'true'\n", phase=phase, require_metrics=True)
    assert g.has_required_keys(ctx) is True


# -- samples_valid ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "require, files, expected, problem",
    [
        (False, {}, True, None),
        (True, {}, False, "file not found"),
        (True, rollout_files([sample(), sample("b")]), True, None),
        (False, rollout_files(None), True, None),  # samples are only read when required
        (True, rollout_files(None), False, "samples file not found"),
        (True, rollout_files([sample(" "), sample("")]), False, "completions are blank"),
        (True, rollout_files([sample(), '{"prompt": "q"}']), False, ":2: completion: missing"),
        (
            True,
            rollout_files([sample()], counts={"errors": 1}),
            False,
            "counts.errors (1) >= number of samples (1)",
        ),
        (False, {ROLLOUT_REL: "[]"}, False, "expected a JSON object"),
    ],
)
def test_samples_valid_follows_the_rollout_files(
    make_ctx: ContextFactory, require: bool, files: dict[str, str], expected: bool, problem: str | None
) -> None:
    ctx = make_ctx(files=files, require_samples=require)
    assert g.samples_valid(ctx) is expected
    if problem is not None:
        message, evidence = g.explain("samples_valid", ctx)
        assert message.startswith("guard samples_valid failed: ") and problem in message
        samples = ctx.repo_root / ".aider_fsm/s.jsonl"
        if ROLLOUT_REL in files and files[ROLLOUT_REL] != "[]":
            assert evidence == str(samples)
        else:
            assert evidence == str(ctx.repo_root / ROLLOUT_REL)


# -- can_repair and contract_intact ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "configured, used, iters, expected, reason",
    [
        (False, 0, 3, False, "no repair agent is configured"),
        (True, 0, 3, True, None),
        (True, 2, 3, True, None),
        (True, 3, 3, False, "repair budget exhausted (3/3 repairs used)"),
        (True, 0, 0, False, "repair budget exhausted (0/0 repairs used)"),
    ],
)
def test_can_repair_needs_a_repairer_and_budget(
    make_ctx: ContextFactory, configured: bool, used: int, iters: int, expected: bool, reason: str | None
) -> None:
    repairer = UnusedRepairer() if configured else None
    ctx = make_ctx(repairer=repairer, repairs_used=used, repair_iters=iters)
    assert g.can_repair(ctx) is expected
    if reason is not None:
        assert g.explain("can_repair", ctx) == (reason, None)


@pytest.mark.parametrize("change", ["none", "edit", "delete", "same_bytes"])
def test_contract_intact_compares_the_pipeline_bytes(make_ctx: ContextFactory, change: str) -> None:
    ctx = make_ctx()
    original = ctx.pipeline_path.read_bytes()
    if change == "edit":
        ctx.pipeline_path.write_text("version: 1\ntests:\n  cmds: 'true'\n")
    elif change == "delete":
        ctx.pipeline_path.unlink()
    elif change == "same_bytes":
        ctx.pipeline_path.write_bytes(original)  # rewritten but identical: still intact
    intact = change in ("none", "same_bytes")
    assert g.contract_intact(ctx) is intact
    if not intact:
        message, evidence = g.explain("contract_intact", ctx)
        assert message.startswith("guard contract_intact failed: pipeline.yml changed")
        assert ctx.contract_sha256[:12] in message
        assert ("missing" in message) is (change == "delete")
        assert evidence == str(ctx.pipeline_path)


# -- registry --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [p for p in PHASES if p not in NOT_REPAIRABLE])
def test_failed_in_guards_match_only_their_phase(make_ctx: ContextFactory, phase: str) -> None:
    ctx = make_ctx(failed_phase=phase)
    guard = g.GUARDS[retry_guard(phase)]
    assert guard.__name__ == retry_guard(phase)
    assert guard(ctx) is True
    others = [retry_guard(p) for p in PHASES if p not in NOT_REPAIRABLE and p != phase]
    assert not any(g.GUARDS[name](ctx) for name in others)


def test_every_machine_guard_is_defined_and_returns_a_bool(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    assert set(GUARD_NAMES) == set(g.GUARDS)
    for name in GUARD_NAMES:
        assert isinstance(g.GUARDS[name](ctx), bool), name


def test_explain_of_a_guard_without_details_still_names_it(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    assert g.explain("failed_in_tests", ctx) == ("guard failed_in_tests failed", None)


def test_guards_do_not_change_the_context_or_the_repo(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(PIPELINE, files=rollout_files([sample()]), require_samples=True, phase="evaluate")
    before = (ctx.to_json(), sorted(p.name for p in ctx.repo_root.rglob("*")))
    for name in GUARD_NAMES:
        g.GUARDS[name](ctx)
        g.explain(name, ctx)
    after = (ctx.to_json(), sorted(p.name for p in ctx.repo_root.rglob("*")))
    before[0].pop("updated")
    after[0].pop("updated")
    assert before == after
