"""evaluate: compute the score; the metrics file it leaves is what the has_required_keys guard checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsm_runner.engine import guards
from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from tests.conftest import procs_in
from tests.helpers.phases import SERVICE_FILES, PhaseContexts, deploy_yaml, run_phase, service_url

HEAD = "version: 1\n"
METRICS_REL = "out/metrics.json"


def evaluation(cmds: str = "mkdir -p out && cp metrics.src out/metrics.json", *, metrics_path: str | None = METRICS_REL,
               keys: str = "[ok, score]") -> str:
    text = f"evaluation:\n  run_cmds: {json.dumps(cmds)}\n  required_keys: {keys}\n"
    return text + (f"  metrics_path: {metrics_path}\n" if metrics_path else "")


def with_metrics(metrics: object) -> dict[str, str]:
    """The metrics the evaluation command copies into place."""
    return {"metrics.src": metrics if isinstance(metrics, str) else json.dumps(metrics)}


def test_no_evaluation_is_a_recorded_skip_when_metrics_are_optional(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "evaluate", HEAD, require_metrics=False)
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "pipeline.yml has no evaluation commands"
    assert run.stage_dir is None


def test_no_evaluation_is_a_contract_error_when_metrics_are_required(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "evaluate", HEAD)
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "contract"
    assert run.outcome.error.message.startswith("metrics are required but pipeline.yml has no evaluation.run_cmds")
    assert run.outcome.error.evidence == str(run.repo / "pipeline.yml")
    assert run.summary()["error"]["kind"] == "contract"


@pytest.mark.parametrize("require_metrics", [True, False])
def test_an_evaluation_without_metrics_path(make_ctx: PhaseContexts, require_metrics: bool) -> None:
    pipeline = HEAD + evaluation("touch evaluated", metrics_path=None)
    run = run_phase(make_ctx, "evaluate", pipeline, require_metrics=require_metrics)
    if require_metrics:
        assert run.outcome.status == FAILED and run.outcome.error is not None
        assert run.outcome.error.kind == "contract"
        assert run.outcome.error.message.startswith("evaluation.metrics_path is not set but metrics are required")
        assert run.outcome.error.evidence == str(run.repo / "pipeline.yml")
        assert run.outcome.commands == () and not (run.repo / "evaluated").exists()
    else:
        assert run.outcome.status == OK and run.outcome.data == {}
        assert (run.repo / "evaluated").exists()
        assert guards.has_required_keys(run.ctx)  # nothing declared, nothing to check


def test_metrics_are_reported_and_copied_into_the_run_dir(make_ctx: PhaseContexts) -> None:
    metrics = {"ok": True, "score": 0.75, "details": {"n": 4}}
    run = run_phase(make_ctx, "evaluate", HEAD + evaluation(), files=with_metrics(metrics))
    assert run.outcome.status == OK and run.outcome.error is None
    assert run.outcome.data == {
        "metrics": metrics,
        "metrics_path": str(run.repo / METRICS_REL),
        "metrics_copy": "round_1/metrics.json",
    }
    assert json.loads((run.ctx.run_dir / "evaluate.metrics.json").read_text()) == metrics
    assert json.loads((run.ctx.run_dir / "round_1" / "metrics.json").read_text()) == metrics
    assert run.summary()["data"]["metrics"] == metrics
    assert guards.has_required_keys(run.ctx)


@pytest.mark.parametrize(
    "metrics, keys, problem, copied",
    [
        ({"ok": True}, "[ok, score]", "missing required keys: score", True),
        ({"ok": True, "eval": {}}, "[ok, eval.score]", "missing required keys: eval.score", True),
        ({"ok": False, "score": 0.1}, "[ok, score]", "ok must be true, got false", True),
        ("{not json", "[ok]", "invalid JSON at line 1 column 2: Expecting property name enclosed in double quotes", False),
        ([1, 2], "[ok]", "expected a JSON object, got array", False),
        (
            {"ok": False, "score": 0.1, "error": "judge timed out"},
            "[score]",
            'ok must be true, got false; the metrics file says (error): "judge timed out"',
            True,
        ),
        ({"ok": True, "score": "0.9"}, "[ok, score]", 'score: expected a number, got str "0.9"', True),
        ({"ok": True, "score": None}, "[ok, score]", "score: expected a value, got null", True),
        (
            {"ok": True, "score": 0.5, "n": 7.5},
            "[ok, score, {n: integer}]",
            "n: expected an integer, got float 7.5",
            True,
        ),
        ({"ok": "yes"}, "[{ok: boolean}]", 'ok: expected a boolean, got str "yes"; ok must be true, got "yes"', True),
    ],
    ids=[
        "missing-key",
        "missing-dotted-key",
        "not-ok",
        "not-json",
        "not-an-object",
        "not-ok-unrequired-with-error",
        "string-score",
        "null-score",
        "typed-integer",
        "typed-boolean",
    ],
)
def test_the_phase_reports_what_it_found_and_the_guard_refuses_it(
    make_ctx: PhaseContexts, metrics: object, keys: str, problem: str, copied: bool
) -> None:
    run = run_phase(make_ctx, "evaluate", HEAD + evaluation(keys=keys), files=with_metrics(metrics))
    assert run.outcome.status == OK  # the commands passed; deciding on the metrics is the guard's job
    assert run.outcome.data["metrics"] == (metrics if copied else None)
    assert (run.ctx.run_dir / "evaluate.metrics.json").exists() is copied
    assert not guards.has_required_keys(run.ctx)
    message, evidence = guards.explain("has_required_keys", run.ctx)
    assert message == f"guard has_required_keys failed: {problem}"
    assert evidence == str(run.repo / METRICS_REL)


@pytest.mark.parametrize("cmd", ["echo wrote nothing", "echo broke; exit 3"])
def test_earlier_metrics_are_set_aside_reported_and_never_pass(make_ctx: PhaseContexts, cmd: str) -> None:
    stale = json.dumps({"ok": True, "score": 1.0})
    run = run_phase(make_ctx, "evaluate", HEAD + evaluation(cmd), files={METRICS_REL: stale})
    assert (run.evidence / "previous.metrics.json").read_text() == stale
    assert not (run.repo / METRICS_REL).exists()
    # The move is reported where a person looks (the outcome in the journal, events.jsonl), failed or not.
    moved = [{"path": METRICS_REL, "moved_to": "evaluate/previous.metrics.json"}]
    assert run.outcome.data["set_aside"] == moved and run.summary()["data"]["set_aside"] == moved
    events = [json.loads(line) for line in (run.ctx.run_dir / "events.jsonl").read_text().splitlines()]
    (event,) = [e for e in events if e["event"] == "output.set_aside"]
    assert (event["phase"], event["path"], event["moved_to"]) == ("evaluate", METRICS_REL, moved[0]["moved_to"])
    if run.outcome.status == FAILED:
        return
    assert run.outcome.data["metrics"] is None
    assert not (run.ctx.run_dir / "evaluate.metrics.json").exists()
    message, _ = guards.explain("has_required_keys", run.ctx)
    assert message == f"guard has_required_keys failed: file not found: {run.repo / METRICS_REL}"


def test_a_set_aside_output_is_masked_and_private(make_ctx: PhaseContexts) -> None:
    stale = json.dumps({"ok": True, "score": 1.0, "note": "key hunter2-secret"})
    ctx = make_ctx(HEAD + evaluation("echo wrote nothing"), files={METRICS_REL: stale}, secrets={"MY_KEY": "hunter2-secret"})
    (ctx.repo_root / METRICS_REL).chmod(0o644)
    run = run_phase(ctx, "evaluate")
    kept = run.evidence / "previous.metrics.json"
    assert kept.read_text() == stale.replace("hunter2-secret", "***")
    assert kept.stat().st_mode & 0o777 == 0o600


def test_a_stage_that_links_the_metrics_dir_out_of_the_repo_is_never_read_through(
    make_ctx: PhaseContexts, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text(json.dumps({"ok": True, "score": 1.0}))
    run = run_phase(make_ctx, "evaluate", HEAD + evaluation(f"rm -rf out && ln -s {outside} out"))
    assert run.outcome.status == OK and run.outcome.data["metrics"] is None  # nothing was read out there
    assert not guards.has_required_keys(run.ctx)
    message, evidence = guards.explain("has_required_keys", run.ctx)
    assert message.startswith(f"guard has_required_keys failed: {METRICS_REL}: the symbolic link out -> {outside}")
    assert "leads outside" in message and evidence == str(run.repo / METRICS_REL)
    assert not (run.ctx.run_dir / "evaluate.metrics.json").exists()


def test_a_leftover_link_out_of_the_repo_is_not_set_aside(make_ctx: PhaseContexts, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "metrics.json").write_text("someone else's file\n")
    ctx = make_ctx(HEAD + evaluation("touch evaluated"))
    (ctx.repo_root / "out").symlink_to(outside)
    run = run_phase(ctx, "evaluate")
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "output"
    assert run.outcome.error.message.startswith(f"{METRICS_REL}: the symbolic link out -> {outside} leads outside")
    assert (outside / "metrics.json").read_text() == "someone else's file\n"
    assert not (run.repo / "evaluated").exists() and not list(run.evidence.glob("previous.*"))


def test_a_failing_evaluation_reports_the_command_and_no_metrics(make_ctx: PhaseContexts) -> None:
    cmd = "python3 -c 'import sys; sys.exit(\"scorer crashed: division by zero\")'"
    run = run_phase(make_ctx, "evaluate", HEAD + evaluation(cmd))
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "command"
    assert run.outcome.error.message.endswith("\n  | scorer crashed: division by zero")
    assert run.outcome.data == {}
    assert not (run.ctx.run_dir / "evaluate.metrics.json").exists()


def test_secrets_never_reach_the_metrics_copy(make_ctx: PhaseContexts) -> None:
    secret = "sk-live-0123456789"
    metrics = {"ok": True, "score": 1.0, "endpoint": f"https://api/?k={secret}", "api_key": "other-value"}
    run = run_phase(make_ctx, "evaluate", HEAD + evaluation(), files=with_metrics(metrics),
                    secrets={"OPENAI_API_KEY": secret})
    copy = json.loads((run.ctx.run_dir / "evaluate.metrics.json").read_text())
    assert copy["endpoint"] == "https://api/?k=***" and copy["api_key"] == "***"
    assert secret not in (run.evidence / "summary.json").read_text()


def test_evaluate_scores_the_samples_of_a_rollout_against_the_service(make_ctx: PhaseContexts) -> None:
    pipeline = (
        HEAD
        + deploy_yaml()
        + "rollout:\n  run_cmds: python3 rollout.py\n"
        + evaluation("python3 evaluate.py", metrics_path=".aider_fsm/metrics.json")
    )
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES, env_overrides={"AIDER_EVAL_LIMIT": "3"})
    ctx = deploy.ctx
    try:
        service_url(deploy.repo)
        assert run_phase(ctx, "rollout").outcome.data["sample_count"] == 3
        run = run_phase(ctx, "evaluate")
        assert run.outcome.status == OK, run.outcome.error
        assert run.outcome.data["metrics"] == {"ok": True, "score": 1.0, "run_id": ctx.run_id, "llms": [""]}
        assert guards.has_required_keys(ctx)
    finally:
        run_phase(ctx, "teardown")
    assert procs_in(deploy.repo) == []
