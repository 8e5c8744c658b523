"""repair: the failure goes to the run's repairer, a real agent held to the guardrails by RepairStep."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fsm_runner.engine import guards
from fsm_runner.engine.outcome import FAILED, OK, ErrorInfo
from fsm_runner.repair.agents import CallableAgent, RepairReply, RepairRequest
from fsm_runner.repair.step import RepairStep
from tests.helpers.phases import PhaseContexts, PhaseRun, run_phase

PIPELINE = "version: 1\ntests:\n  cmds: 'sh .aider_fsm/check.sh'\n"
FILES = {".aider_fsm/check.sh": "echo 'answer is 41' >&2; exit 1\n", "src/main.py": "ANSWER = 41\n"}
FAILURE = ErrorInfo("command", "command 1/1 `sh .aider_fsm/check.sh` exit code 1", "tests", "tests/cmd01_try01.stderr")


def repair(make_ctx: PhaseContexts, agent: Callable[[RepairRequest], object] | None, **fields: Any) -> PhaseRun:
    """The repair phase after a failed ``tests`` phase, with ``agent`` behind RepairStep."""
    values: dict[str, Any] = {"failed_phase": "tests", "last_error": FAILURE, "repair_iters": 2, **fields}
    if agent is not None:
        values["repairer"] = RepairStep(CallableAgent(agent))
    return run_phase(make_ctx, "repair", PIPELINE, files=FILES, **values)


def test_a_repair_keeps_allowed_edits_and_reverts_the_rest(make_ctx: PhaseContexts) -> None:
    requests: list[RepairRequest] = []

    def agent(request: RepairRequest) -> str:
        requests.append(request)
        repo = request.repo
        (repo / ".aider_fsm/check.sh").write_text("exit 0\n")  # the agent's own area
        (repo / "src/main.py").write_text("ANSWER = 42\n")  # outside it
        (repo / "notes.txt").write_text("todo\n")
        (repo / "pipeline.yml").write_text("version: 1\n")  # human-owned
        return "fixed the check"

    run = repair(make_ctx, agent, health_passed_at=5.0)
    ctx, repo = run.ctx, run.repo
    assert run.outcome.status == OK and run.outcome.error is None
    assert run.outcome.data == {
        "attempt": 1,
        "failed_phase": "tests",
        "agent_ok": True,
        "summary": "fixed the check",
        "changed": [".aider_fsm/check.sh", "notes.txt", "pipeline.yml", "src/main.py"],
        "reverted": ["notes.txt", "pipeline.yml", "src/main.py"],
        "pipeline_restored": True,
    }
    assert (repo / ".aider_fsm/check.sh").read_text() == "exit 0\n"
    assert (repo / "src/main.py").read_text() == "ANSWER = 41\n" and not (repo / "notes.txt").exists()
    assert (repo / "pipeline.yml").read_text() == PIPELINE and guards.contract_intact(ctx)
    assert ctx.repairs_used == 1 and ctx.health_passed_at is None  # health is checked again after a repair
    # what the agent was told
    (request,) = requests
    assert (request.phase, request.error_kind, request.error_message) == ("tests", FAILURE.kind, FAILURE.message)
    assert request.evidence_paths == ("tests/cmd01_try01.stderr",)
    assert (request.attempt, request.max_attempts, request.run_id) == (1, 2, ctx.run_id)
    assert request.allowed_globs == (".aider_fsm/**",) and request.work_dir == run.evidence
    # and the provenance left in repair_01
    assert run.evidence.name == "repair_01"
    assert sorted(p.name for p in run.evidence.iterdir()) == [
        "before.json", "prompt.md", "provenance.json", "reply.json", "request.json", "summary.json",
    ]
    provenance = json.loads((run.evidence / "provenance.json").read_text())
    assert provenance["kept"] == [".aider_fsm/check.sh"] and provenance["pipeline_restored"] is True
    assert [c["path"] for c in provenance["reverted"]] == ["notes.txt", "pipeline.yml", "src/main.py"]
    assert json.loads((run.evidence / "reply.json").read_text())["summary"] == "fixed the check"
    assert FAILURE.message in (run.evidence / "prompt.md").read_text()
    # the fix is what makes the failed phase pass when it runs again
    assert run_phase(ctx, "tests").outcome.ok


def test_each_repair_gets_its_own_dir_and_attempt(make_ctx: PhaseContexts) -> None:
    first = repair(make_ctx, lambda request: None)
    second = run_phase(first.ctx, "repair")
    assert (first.outcome.data["attempt"], second.outcome.data["attempt"]) == (1, 2)
    assert (first.evidence.name, second.evidence.name) == ("repair_01", "repair_02")
    assert first.outcome.data["changed"] == [] and first.outcome.data["summary"] == ""


@pytest.mark.parametrize(
    "reply, summary",
    [
        (RuntimeError("no idea"), "repair agent raised RuntimeError: no idea"),
        (RepairReply(ok=False, summary="gave up"), "gave up"),
    ],
    ids=["raises", "gives-up"],
)
def test_a_failing_agent_fails_the_repair_and_its_edits_are_still_checked(
    make_ctx: PhaseContexts, reply: object, summary: str
) -> None:
    def agent(request: RepairRequest) -> object:
        (request.repo / "src/main.py").write_text("broken\n")
        if isinstance(reply, Exception):
            raise reply
        return reply

    run = repair(make_ctx, agent)
    error = run.outcome.error
    assert run.outcome.status == FAILED and error is not None
    assert error.kind == "repair" and error.phase == "repair"
    assert error.message == f"repair agent failed: {summary}"
    assert run.outcome.data["agent_ok"] is False and run.outcome.data["reverted"] == ["src/main.py"]
    assert (run.repo / "src/main.py").read_text() == "ANSWER = 41\n"
    assert (run.evidence / "provenance.json").is_file()


def test_actions_the_agent_writes_run_inside_the_guardrails(make_ctx: PhaseContexts) -> None:
    def agent(request: RepairRequest) -> str:
        (request.repo / ".aider_fsm/actions.yml").write_text(
            "version: 1\nactions:\n"
            "  - {id: fix, kind: write_file, path: .aider_fsm/check.sh, content: 'exit 0'}\n"
            "  - {id: outside, kind: run_cmd, cmd: 'echo changed > src/main.py'}\n"
        )
        return "wrote actions"

    run = repair(make_ctx, agent)
    assert run.outcome.status == OK, run.outcome.error
    assert (run.repo / ".aider_fsm/check.sh").read_text() == "exit 0"
    assert (run.repo / "src/main.py").read_text() == "ANSWER = 41\n"  # the command's edit was reverted too
    assert run.outcome.data["reverted"] == ["src/main.py"]
    assert not (run.repo / ".aider_fsm/actions.yml").exists()
    records = json.loads((run.evidence / "actions/actions.json").read_text())
    assert [r["id"] for r in records] == ["fix", "outside"]


def test_a_failing_action_fails_the_repair(make_ctx: PhaseContexts) -> None:
    def agent(request: RepairRequest) -> str:
        (request.repo / ".aider_fsm/actions.yml").write_text(
            "version: 1\nactions:\n  - {id: migrate, kind: run_cmd, cmd: 'exit 5'}\n"
        )
        return "wrote actions"

    run = repair(make_ctx, agent)
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "action" and run.outcome.error.phase == "repair"
    assert run.outcome.error.message.startswith("action 'migrate' failed: ")
    assert run.outcome.data["agent_ok"] is True


def test_secrets_are_masked_in_the_repair_evidence(make_ctx: PhaseContexts) -> None:
    secret = "sk-test-abcdef123456"
    failure = ErrorInfo("command", f"auth failed with key {secret}", "tests")

    def agent(request: RepairRequest) -> str:
        (request.work_dir / "agent_output.log").write_text(f"using {secret}\n")
        return "done"

    run = repair(make_ctx, agent, last_error=failure, secrets={"OPENAI_API_KEY": secret})
    assert run.outcome.ok
    assert (run.evidence / "agent_output.log").read_text() == "using ***\n"
    for name in ("request.json", "reply.json", "provenance.json", "summary.json"):
        assert secret not in (run.evidence / name).read_text(), name


def test_the_prompt_and_the_request_mask_secrets_of_the_failure(make_ctx: PhaseContexts) -> None:
    secret = "sk-test-abcdef123456"
    failure = ErrorInfo("command", f"auth failed with key {secret}", "tests")
    seen: list[RepairRequest] = []
    run = repair(make_ctx, seen.append, last_error=failure, secrets={"OPENAI_API_KEY": secret})
    assert run.outcome.ok
    assert secret not in (run.evidence / "prompt.md").read_text()
    assert "auth failed with key ***" in (run.evidence / "prompt.md").read_text()
    assert secret not in seen[0].prompt and secret not in seen[0].error_message


def test_without_a_repairer_the_repair_fails_and_says_so(make_ctx: PhaseContexts) -> None:
    run = repair(make_ctx, None)
    error = run.outcome.error
    assert run.outcome.status == FAILED and error is not None
    assert (error.kind, error.message, error.phase) == ("repair", "no repair agent is configured", "repair")
    assert run.ctx.repairs_used == 1 and run.evidence.name == "repair_01"
    assert run.summary()["error"]["message"] == "no repair agent is configured"
    assert not guards.can_repair(run.ctx)


def test_a_failure_without_details_is_still_handed_over(make_ctx: PhaseContexts) -> None:
    seen: list[RepairRequest] = []
    run = repair(make_ctx, seen.append, failed_phase=None, last_error=None)
    assert run.outcome.ok
    (request,) = seen
    assert (request.phase, request.error_kind, request.error_message) == ("?", "unknown", "the phase failed")
    assert request.evidence_paths == ()
