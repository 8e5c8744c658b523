"""auth: log in to what the benchmark needs, never waiting for a person unless the run is guided."""

from __future__ import annotations

import json

import pytest

from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from tests.helpers.phases import PhaseContexts, run_phase

HEAD = "version: 1\n"
PROBE_ENV = 'echo "CI=${CI:-} PROMPT=${GIT_TERMINAL_PROMPT:-} LLM=${AIDER_LLM_MODEL:-none}" > auth.env'


def auth(steps: str, interactive: bool = False) -> str:
    return f"{HEAD}auth:\n  steps: [{json.dumps(steps)}]\n  interactive: {str(interactive).lower()}\n"


def test_no_auth_commands_is_a_recorded_skip(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "auth", HEAD)
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "pipeline.yml has no auth commands"
    assert run.stage_dir is None


@pytest.mark.parametrize(
    "unattended, expected",
    [("strict", "CI=1 PROMPT=0 LLM=none\n"), ("guided", "CI= PROMPT= LLM=none\n")],
)
def test_auth_steps_run_with_the_unattended_env(make_ctx: PhaseContexts, unattended: str, expected: str) -> None:
    run = run_phase(make_ctx, "auth", auth(PROBE_ENV), unattended=unattended, llm="model")
    assert run.outcome.status == OK and run.outcome.data == {}
    assert (run.repo / "auth.env").read_text() == expected
    assert [c.exit_code for c in run.outcome.commands] == [0]


def test_interactive_auth_is_refused_unless_guided(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "auth", auth("touch logged-in", interactive=True), unattended="strict")
    error = run.outcome.error
    assert run.outcome.status == FAILED and error is not None
    assert error.kind == "contract" and error.phase == "auth"
    assert error.message.startswith("auth.interactive is true but the run is unattended='strict'; ")
    assert 'pass unattended="guided"' in error.message
    assert error.evidence == str(run.repo / "pipeline.yml")
    assert run.outcome.commands == () and not (run.repo / "logged-in").exists()
    assert run.summary()["error"]["kind"] == "contract"


def test_interactive_auth_runs_in_a_guided_run(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "auth", auth("echo logging in; touch logged-in", interactive=True), unattended="guided")
    assert run.outcome.status == OK, run.outcome.error
    assert (run.repo / "logged-in").exists()
    # the person watching sees the output, and the evidence still keeps it
    assert (run.evidence / "cmd01_try01.stdout").read_text() == "logging in\n"


def test_a_prompting_command_is_blocked_in_a_strict_run(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "auth", auth("read -r password"), unattended="strict")
    assert run.outcome.error is not None and run.outcome.error.kind == "blocked"
    assert "looks interactive under unattended=strict" in run.outcome.error.message


def test_a_failed_login_quotes_its_output(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "auth", auth("echo 'login failed: 401 Unauthorized' >&2; exit 1"))
    assert run.outcome.error is not None and run.outcome.error.kind == "command"
    assert run.outcome.error.message.endswith("\n  | login failed: 401 Unauthorized")
