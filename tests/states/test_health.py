"""health: poll the health commands with backoff until they pass or the deploy window runs out."""

from __future__ import annotations

import pytest

from fsm_runner.engine import guards
from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from tests.conftest import procs_in
from tests.helpers.phases import SERVICE_FILES, PhaseContexts, deploy_yaml, run_phase

HEAD = "version: 1\n"


@pytest.mark.parametrize(
    "pipeline",
    [HEAD, HEAD + deploy_yaml(health=None), HEAD + deploy_yaml(health=[])],
    ids=["no-deploy", "no-health", "empty-health"],
)
def test_no_health_commands_is_a_recorded_skip(make_ctx: PhaseContexts, pipeline: str) -> None:
    run = run_phase(make_ctx, "health", pipeline)
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "pipeline.yml has no deploy.health_cmds"
    assert run.stage_dir is None and run.ctx.health_passed_at is None


@pytest.mark.parametrize("delay", ["0", "0.5"])
def test_a_deployed_service_becomes_healthy(make_ctx: PhaseContexts, delay: str) -> None:
    pipeline = HEAD + deploy_yaml(extra=f"  env:\n    SVC_DELAY: '{delay}'\n")
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES)
    ctx = deploy.ctx
    try:
        assert deploy.outcome.ok
        assert not guards.is_healthy(ctx)
        run = run_phase(ctx, "health")
        assert run.outcome.status == OK and run.outcome.error is None
        polls = run.outcome.data["polls"]
        assert polls >= (2 if delay != "0" else 1)  # a service still starting is polled again
        assert (run.evidence / f"cmd01_try{polls:02d}.json").is_file()
        assert (run.evidence / f"cmd01_try{polls:02d}.stdout").read_text() == "healthy\n"
        recorded = run.outcome.commands  # the journal lists the polls: the first three and every failure
        assert recorded and recorded[-1].exit_code == 0 and recorded[-1].attempt == polls
        assert recorded[-1].result == f"health/cmd01_try{polls:02d}.json"
        assert ctx.health_passed_at is not None and ctx.deployed_at is not None
        assert ctx.health_passed_at >= ctx.deployed_at
        assert guards.is_healthy(ctx)
    finally:
        run_phase(ctx, "teardown")
    assert procs_in(deploy.repo) == []


def test_no_service_is_unhealthy_within_the_window(make_ctx: PhaseContexts) -> None:
    pipeline = HEAD + deploy_yaml(setup=None, timeout=1)
    run = run_phase(make_ctx, "health", pipeline, files=SERVICE_FILES)
    outcome = run.outcome
    assert outcome.status == FAILED and outcome.error is not None
    assert outcome.error.kind == "unhealthy" and outcome.error.phase == "health"
    first, *tail = outcome.error.message.splitlines()
    polls = outcome.data["polls"]
    assert polls >= 2
    assert first == f"guard is_healthy: no health command passed within 1.0s ({polls} polls); last output:"
    assert tail and tail[-1].startswith("  | not ready:")
    assert outcome.error.evidence == str(run.evidence / f"cmd01_try{polls:02d}.stderr")
    # The journal lists the first three polls and the last; every poll's files are on disk.
    assert [c.attempt for c in outcome.commands] == [*range(1, min(polls, 3) + 1), *([polls] if polls > 3 else [])]
    assert all((run.evidence / f"cmd01_try{p:02d}.json").is_file() for p in range(1, polls + 1))
    assert all(c.exit_code != 0 for c in outcome.commands)
    assert 0.9 <= outcome.duration_s < 2.5
    assert run.summary()["error"]["kind"] == "unhealthy"
    assert run.ctx.health_passed_at is None and not guards.is_healthy(run.ctx)


def test_every_health_command_must_pass_in_the_same_poll(make_ctx: PhaseContexts) -> None:
    pipeline = HEAD + deploy_yaml(setup=None, health=["touch first-ran", "exit 1"], timeout=0.5)
    run = run_phase(make_ctx, "health", pipeline)
    assert run.outcome.error is not None and run.outcome.error.kind == "unhealthy"
    assert (run.repo / "first-ran").exists()
    assert (run.evidence / "cmd02_try01.json").is_file()


def test_a_blocked_health_command_fails_at_once(make_ctx: PhaseContexts) -> None:
    pipeline = "version: 1\nsecurity:\n  denylist: ['curl']\n" + deploy_yaml(setup=None, health="curl http://127.0.0.1:9/")
    run = run_phase(make_ctx, "health", pipeline)
    assert run.outcome.error is not None and run.outcome.error.kind == "unhealthy"
    assert run.outcome.error.message.startswith("health command blocked: ")
    assert run.outcome.data == {"polls": 1}
    assert run.outcome.duration_s < 0.5


def test_the_health_window_is_capped_by_max_cmd_seconds(make_ctx: PhaseContexts) -> None:
    pipeline = "version: 1\nsecurity:\n  max_cmd_seconds: 0.5\n" + deploy_yaml(setup=None, health="exit 1", timeout=30)
    run = run_phase(make_ctx, "health", pipeline)
    assert run.outcome.error is not None
    assert "within 0.5s" in run.outcome.error.message
    assert run.outcome.duration_s < 1.5
