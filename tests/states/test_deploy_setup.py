"""deploy_setup: start the service under test and record what it leaves running, for teardown."""

from __future__ import annotations

import json
import urllib.request

import pytest

from fsm_runner.engine.deployment import deployment_alive
from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from fsm_runner.evidence.layout import RUN_JSON, RUNTIME_ENV_REL
from tests.conftest import pid_alive, procs_in, service_pid
from tests.helpers.phases import (
    SERVICE_FILES,
    SERVICE_PID,
    START_SERVICE,
    PhaseContexts,
    deploy_yaml,
    run_phase,
    service_url,
)

HEAD = "version: 1\n"


@pytest.mark.parametrize(
    "pipeline",
    [HEAD, HEAD + deploy_yaml(setup=None), HEAD + deploy_yaml(setup=[])],
    ids=["no-deploy", "health-only", "empty-setup"],
)
def test_no_setup_commands_is_a_recorded_skip(make_ctx: PhaseContexts, pipeline: str) -> None:
    run = run_phase(make_ctx, "deploy_setup", pipeline, llm="m")
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "pipeline.yml has no deploy commands"
    assert run.stage_dir is None
    assert run.ctx.deployed is False and run.ctx.deployed_llm is None


def test_the_service_starts_in_the_background_and_is_recorded(make_ctx: PhaseContexts) -> None:
    setup = ['echo "$AIDER_LLM_MODEL" > .aider_fsm/deployed_llm.txt', START_SERVICE]
    run = run_phase(make_ctx, "deploy_setup", HEAD + deploy_yaml(setup=setup), files=SERVICE_FILES, llm="model-a")
    ctx = run.ctx
    try:
        assert run.outcome.status == OK and run.outcome.error is None
        assert [c.exit_code for c in run.outcome.commands] == [0, 0]
        assert (run.repo / ".aider_fsm/deployed_llm.txt").read_text() == "model-a\n"
        assert ctx.deployed is True and ctx.deployed_llm == "model-a"
        assert ctx.deployed_at is not None and ctx.health_passed_at is None
        # only the command that left something running is a deploy group
        assert len(ctx.deploy_pgids) == 1 and str(ctx.deploy_pgids[0]) in ctx.deploy_leaders
        assert deployment_alive(ctx)
        saved = json.loads((ctx.run_dir / RUN_JSON).read_text())
        assert saved["deploy_pgids"] == ctx.deploy_pgids  # on disk before the phase even returns
        body = urllib.request.urlopen(service_url(run.repo) + "/health", timeout=2).read()
        assert json.loads(body) == {"status": "ok"}
        pid = service_pid(run.repo)
        assert pid is not None and pid_alive(pid)
    finally:
        teardown = run_phase(ctx, "teardown")
    assert teardown.outcome.ok
    assert not pid_alive(pid) and procs_in(run.repo) == []
    assert not deployment_alive(ctx)


def test_deploying_again_ends_the_previous_service_first(make_ctx: PhaseContexts) -> None:
    first = run_phase(make_ctx, "deploy_setup", HEAD + deploy_yaml(), files=SERVICE_FILES, llm="m1")
    ctx = first.ctx
    try:
        service_url(first.repo)
        old_pid, old_groups = service_pid(first.repo), list(ctx.deploy_pgids)
        for rel in (RUNTIME_ENV_REL, SERVICE_PID):  # written again by the new service
            (first.repo / rel).unlink()
        second = run_phase(ctx, "deploy_setup", llm="m2")
        service_url(first.repo)
        new_pid = service_pid(first.repo)
        assert second.outcome.ok and second.evidence.name == "deploy_setup.2"
        assert old_pid is not None and not pid_alive(old_pid)
        assert new_pid is not None and new_pid != old_pid and pid_alive(new_pid)
        assert ctx.deploy_pgids and ctx.deploy_pgids != old_groups
        assert ctx.deployed_llm == "m2"
    finally:
        run_phase(ctx, "teardown")
    assert procs_in(first.repo) == []


def test_a_failed_deploy_still_counts_as_deployed_so_teardown_ends_it(make_ctx: PhaseContexts) -> None:
    setup = [START_SERVICE, "echo 'port already taken' >&2; exit 4"]
    run = run_phase(make_ctx, "deploy_setup", HEAD + deploy_yaml(setup=setup), files=SERVICE_FILES)
    ctx = run.ctx
    try:
        assert run.outcome.status == FAILED and run.outcome.error is not None
        assert run.outcome.error.kind == "command"
        assert run.outcome.error.message.startswith("command 2/2 `echo 'port already taken' >&2; exit 4` exit code 4")
        assert run.outcome.error.message.endswith("\n  | port already taken")
        assert ctx.deployed is True and len(ctx.deploy_pgids) == 1
    finally:
        teardown = run_phase(ctx, "teardown")
    assert teardown.outcome.ok and teardown.outcome.data["run_for"] == "success"
    assert procs_in(run.repo) == []


def test_setup_that_leaves_nothing_running_counts_as_alive(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "deploy_setup", HEAD + deploy_yaml(setup="echo external service", teardown="touch stopped"))
    assert run.outcome.ok
    assert run.ctx.deployed is True and run.ctx.deploy_pgids == []
    assert deployment_alive(run.ctx)
    teardown = run_phase(run.ctx, "teardown")
    assert teardown.outcome.ok and teardown.outcome.data["teardown_cmds_ran"] is True
    assert (run.repo / "stopped").exists() and run.ctx.deployed is False
