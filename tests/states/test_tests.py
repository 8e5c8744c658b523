"""tests: the target's own checks, and the command-running shape every command phase shares."""

from __future__ import annotations

import json

import pytest

from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from tests.helpers.phases import PhaseContexts, run_phase


def checks_yaml(cmds: list[str], extra: str = "", security: str = "") -> str:
    return f"version: 1\n{security}tests:\n  cmds: {json.dumps(cmds)}\n{extra}"


@pytest.mark.parametrize("pipeline", ["version: 1\n", "version: 1\ntests:\n  cmds: []\n"])
def test_no_test_commands_is_a_recorded_skip(make_ctx: PhaseContexts, pipeline: str) -> None:
    run = run_phase(make_ctx, "tests", pipeline)
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "pipeline.yml has no tests commands"
    assert run.outcome.commands == () and run.outcome.error is None
    assert run.stage_dir is None and not (run.ctx.run_dir / "tests").exists()


def test_commands_run_in_order_in_the_repo_with_the_stage_env(make_ctx: PhaseContexts) -> None:
    pipeline = checks_yaml(
        ['echo "$AIDER_FSM_STAGE $STAGE_FLAG ${AIDER_LLM_MODEL:-no-llm}" > one.txt', "cat one.txt > two.txt"],
        extra="  env:\n    STAGE_FLAG: from-tests\n",
    )
    run = run_phase(make_ctx, "tests", pipeline, llm="some-model")
    assert run.outcome.status == OK and run.outcome.error is None
    # the model under test is not shown to the target's own checks
    assert (run.repo / "two.txt").read_text() == "tests from-tests no-llm\n"
    assert [(c.index, c.attempt, c.exit_code) for c in run.outcome.commands] == [(1, 1, 0), (2, 1, 0)]
    assert run.outcome.commands[0].result == "tests/cmd01_try01.json"
    assert run.outcome.data == {}
    summary = run.summary()
    assert summary["status"] == "ok" and summary["stage_dir"] == str(run.evidence)
    assert sorted(p.name for p in run.evidence.iterdir()) == [
        "cmd01_try01.json", "cmd01_try01.stderr", "cmd01_try01.stdout",
        "cmd02_try01.json", "cmd02_try01.stderr", "cmd02_try01.stdout",
        "summary.json",
    ]


def test_workdir_is_relative_to_the_repo(make_ctx: PhaseContexts) -> None:
    pipeline = checks_yaml(["pwd > where.txt"], extra="  workdir: sub\n")
    run = run_phase(make_ctx, "tests", pipeline, files={"sub/.keep": ""})
    assert run.outcome.ok
    assert (run.repo / "sub" / "where.txt").read_text().strip() == str(run.repo / "sub")


@pytest.mark.parametrize(
    ("cmd", "stream"),
    [("echo boom-on-stdout; exit 1", "stdout"), ("echo quiet; echo boom-on-stderr >&2; exit 1", "stderr")],
)
def test_the_error_quotes_and_points_at_the_stream_with_the_output(
    make_ctx: PhaseContexts, cmd: str, stream: str
) -> None:
    run = run_phase(make_ctx, "tests", checks_yaml([cmd]))
    error = run.outcome.error
    assert error is not None and error.kind == "command"
    assert error.evidence == str(run.evidence / f"cmd01_try01.{stream}")
    assert error.message.endswith(f"; see {error.evidence}\n  | boom-on-{stream}")


def test_a_failing_command_stops_the_stage_and_quotes_its_output_tail(make_ctx: PhaseContexts) -> None:
    script = "for i in 1 2 3 4 5 6 7; do echo line$i >&2; done; exit 3"
    run = run_phase(make_ctx, "tests", checks_yaml([script, "touch never"]))
    outcome = run.outcome
    assert outcome.status == FAILED and outcome.error is not None
    assert outcome.error.kind == "command" and outcome.error.phase == "tests"
    first, *tail = outcome.error.message.splitlines()
    assert first.startswith("command 1/2 `for i in 1 2 3 4 5 6 7;")
    assert "exit code 3" in first and first.endswith(str(run.evidence / "cmd01_try01.stderr"))
    assert tail == ["  | line3", "  | line4", "  | line5", "  | line6", "  | line7"]  # the last five lines
    assert outcome.error.evidence == str(run.evidence / "cmd01_try01.stderr")
    assert [c.exit_code for c in outcome.commands] == [3]
    assert not (run.repo / "never").exists()
    assert run.summary()["error"]["kind"] == "command"


def test_a_caret_line_keeps_the_source_line_it_points_at(make_ctx: PhaseContexts) -> None:
    lines = ["a", "b", "  x = 1 +", "      ^", "SyntaxError: bad", "more", "done", "end"]
    script = "printf '%s\\n' " + " ".join(f"'{line}'" for line in lines) + " >&2; exit 1"
    outcome, _ = run_phase(make_ctx, "tests", checks_yaml([script]))
    assert outcome.error is not None
    assert outcome.error.message.splitlines()[1:] == [
        "  | " + line for line in ["  x = 1 +", "      ^", "SyntaxError: bad", "more", "done", "end"]
    ]


@pytest.mark.parametrize(
    "cmd, extra, security, kind, words",
    [
        ("sleep 5", "  timeout_seconds: 0.3\n", "", "timeout", "timed out after 0.3s"),
        ("echo forbidden-word", "", "security:\n  denylist: ['forbidden']\n", "blocked", "blocked by the security policy"),
        ("sleep 5", "", "security:\n  max_total_seconds: 0.3\n", "budget", "stage time budget of 0.3s"),
    ],
)
def test_failure_kinds(
    make_ctx: PhaseContexts, cmd: str, extra: str, security: str, kind: str, words: str
) -> None:
    outcome, _ = run_phase(make_ctx, "tests", checks_yaml([cmd], extra, security))
    assert outcome.status == FAILED and outcome.error is not None
    assert outcome.error.kind == kind
    assert words in outcome.error.message
    assert outcome.duration_s < 3


def test_a_blocked_command_never_starts(make_ctx: PhaseContexts) -> None:
    pipeline = checks_yaml(["touch started"], security="security:\n  denylist: ['touch']\n")
    run = run_phase(make_ctx, "tests", pipeline)
    assert run.outcome.error is not None and run.outcome.error.kind == "blocked"
    assert run.outcome.commands[0].blocked and run.outcome.commands[0].exit_code is None
    assert not (run.repo / "started").exists()
    assert not (run.evidence / "cmd01_try01.stdout").exists()


def test_retries_rerun_a_failing_command(make_ctx: PhaseContexts) -> None:
    flaky = "echo x >> tries; test $(wc -l < tries) -ge 3"
    run = run_phase(make_ctx, "tests", checks_yaml([flaky], "  retries: 2\n"))
    assert run.outcome.ok
    assert [(c.attempt, c.exit_code) for c in run.outcome.commands] == [(1, 1), (2, 1), (3, 0)]
    assert (run.evidence / "cmd01_try03.json").is_file()


def test_each_run_of_the_phase_gets_its_own_evidence_dir(make_ctx: PhaseContexts) -> None:
    first = run_phase(make_ctx, "tests", checks_yaml(["exit 1"]))
    (first.repo / "pipeline.yml").write_text(checks_yaml(["true"]))
    second = run_phase(first.ctx, "tests")  # the loaded contract is what runs, not the file
    assert first.evidence.name == "tests" and second.evidence.name == "tests.2"
    assert not second.outcome.ok
    assert json.loads((first.evidence / "summary.json").read_text())["status"] == "failed"


def test_secrets_in_output_are_masked_in_the_evidence(make_ctx: PhaseContexts) -> None:
    secret = "s3cr3t-value-123"
    run = run_phase(make_ctx, "tests", checks_yaml(['echo "token=$API_TOKEN"; echo "$API_TOKEN" >&2; exit 1']),
                    secrets={"API_TOKEN": secret})
    assert run.outcome.error is not None
    assert secret not in run.outcome.error.message and "  | ***" in run.outcome.error.message
    for path in run.evidence.iterdir():
        assert secret not in path.read_text(), path.name
    assert (run.evidence / "cmd01_try01.stdout").read_text() == "token=***\n"
