"""One repair: snapshot, agent, guardrails, evidence; and the step the engine's repair phase calls."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.errors import UsageError
from fsm_runner.evidence.layout import ACTIONS_REL
from fsm_runner.repair.agents import CallableAgent, CommandAgent, RepairReply, RepairRequest, as_agent
from fsm_runner.repair.step import RepairStep, run_repair
from tests.conftest import pid_alive
from tests.helpers.context import ContextFactory, contexts
from tests.repair.conftest import MAIN, PIPELINE, RequestFactory


def script_agent(tmp_path: Path, body: str) -> CommandAgent:
    """A real agent process: a Python script run in the repo with the request file as its argument."""
    script = tmp_path / "agent.py"
    script.write_text("import json, os, sys, pathlib\nreq = json.load(open(sys.argv[1]))\n" + body)
    return CommandAgent([sys.executable, str(script), "{request_file}"])


def read(work: Path, name: str) -> Any:
    return json.loads((work / name).read_text())


def test_fix_inside_the_allowed_area_is_kept(
    tmp_path: Path, repo: Path, make_request: RequestFactory
) -> None:
    agent = script_agent(
        tmp_path, "pathlib.Path('.aider_fsm/check.sh').write_text('exit 0\\n')\nprint('fixed')\n"
    )
    request = make_request()
    reply, prov = run_repair(agent, request)
    assert reply.ok, reply.summary
    assert (repo / ".aider_fsm/check.sh").read_text() == "exit 0\n"
    assert [(c.path, c.kind) for c in prov.changed] == [(".aider_fsm/check.sh", "modified")]
    assert prov.reverted == () and not prov.pipeline_restored
    work = request.work_dir
    assert read(work, "provenance.json")["kept"] == [".aider_fsm/check.sh"]
    assert read(work, "request.json")["phase"] == "tests"
    assert read(work, "reply.json") == reply.to_json()
    assert (work / "prompt.md").read_text() == "fix it"
    assert reply.output_path is not None and "fixed" in Path(reply.output_path).read_text()


def test_hostile_agent_edits_are_undone_byte_for_byte(
    tmp_path: Path, repo: Path, make_request: RequestFactory
) -> None:
    agent = script_agent(
        tmp_path,
        "p = pathlib.Path\n"
        "p('pipeline.yml').write_text('version: 1\\n')\n"
        "p('src/main.py').write_text('def answer():\\n    return 42\\n')\n"
        "p('README.md').unlink()\n"
        "p('extra/dir').mkdir(parents=True)\n"
        "p('extra/dir/cheat.py').write_text('ok = True\\n')\n"
        "p('.aider_fsm/check.sh').write_text('exit 0\\n')\n",
    )
    request = make_request()
    reply, prov = run_repair(agent, request)
    assert reply.ok
    assert (repo / "pipeline.yml").read_bytes() == PIPELINE
    assert (repo / "src/main.py").read_bytes() == MAIN
    assert (repo / "README.md").read_bytes() == b"readme\n"
    assert not (repo / "extra").exists()
    assert (repo / ".aider_fsm/check.sh").read_text() == "exit 0\n"
    assert prov.pipeline_restored
    assert {(c.path, c.kind) for c in prov.reverted} == {
        ("pipeline.yml", "modified"),
        ("src/main.py", "modified"),
        ("README.md", "deleted"),
        ("extra/dir/cheat.py", "added"),
    }
    saved = read(request.work_dir, "provenance.json")
    assert saved["pipeline_restored"] is True and saved["kept"] == [".aider_fsm/check.sh"]


def test_agent_that_raises_is_not_ok_and_still_guarded(repo: Path, make_request: RequestFactory) -> None:
    def agent(request: RepairRequest) -> None:
        (request.repo / "src/main.py").write_text("broken")
        raise RuntimeError("model quota exhausted")

    request = make_request()
    reply, prov = run_repair(as_agent(agent), request)
    assert not reply.ok and "RuntimeError: model quota exhausted" in reply.summary
    assert (repo / "src/main.py").read_bytes() == MAIN
    assert [c.path for c in prov.reverted] == ["src/main.py"]
    assert read(request.work_dir, "reply.json")["ok"] is False


def test_interrupted_agent_is_guarded_and_recorded(repo: Path, make_request: RequestFactory) -> None:
    def agent(request: RepairRequest) -> None:
        (request.repo / "pipeline.yml").write_text("version: 1\n")
        raise KeyboardInterrupt

    request = make_request()
    with pytest.raises(KeyboardInterrupt):
        run_repair(agent, request)  # type: ignore[arg-type]
    assert (repo / "pipeline.yml").read_bytes() == PIPELINE
    assert read(request.work_dir, "reply.json")["summary"] == "repair agent was interrupted"
    assert read(request.work_dir, "provenance.json")["pipeline_restored"] is True


@pytest.mark.parametrize(
    ("allowed", "kept", "reverted"),
    [
        (None, [".aider_fsm/check.sh"], ["src/main.py"]),
        (["src/**"], ["src/main.py"], [".aider_fsm/check.sh"]),
        (["src/**", ".aider_fsm/**"], [".aider_fsm/check.sh", "src/main.py"], []),
    ],
)
def test_allowed_globs_default_to_the_request(
    make_request: RequestFactory, allowed: list[str] | None, kept: list[str], reverted: list[str]
) -> None:
    def agent(request: RepairRequest) -> None:
        (request.repo / "src/main.py").write_text("changed")
        (request.repo / ".aider_fsm/check.sh").write_text("exit 0\n")

    _, prov = run_repair(CallableAgent(agent), make_request(), allowed_globs=allowed)
    assert sorted(c.path for c in prov.kept) == kept
    assert sorted(c.path for c in prov.reverted) == reverted


def test_bad_agent_or_glob_is_a_usage_error(make_request: RequestFactory) -> None:
    with pytest.raises(UsageError, match="not usable"):
        run_repair(42, make_request())  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="absolute"):
        run_repair(CallableAgent(lambda _r: None), make_request(), allowed_globs=["/etc/**"])


def test_work_dir_outside_repo_is_fine(tmp_path: Path, make_request: RequestFactory) -> None:
    request = make_request(work_dir=tmp_path / "evidence/repair_01")
    reply, prov = run_repair(CallableAgent(lambda _r: None), request, write_json=None)
    assert reply.ok and prov.changed == ()
    assert read(tmp_path / "evidence/repair_01", "provenance.json")["kept"] == []


def test_custom_json_writer_is_used(make_request: RequestFactory) -> None:
    written: dict[str, Any] = {}
    reply, _ = run_repair(
        CallableAgent(lambda _r: "done"),
        make_request(),
        write_json=lambda path, data: written.__setitem__(os.path.basename(path), data),
    )
    assert reply.ok and set(written) == {"request.json", "before.json", "reply.json", "provenance.json"}
    assert written["reply.json"]["summary"] == "done"


# -- RepairStep: what the engine's repair phase calls ------------------------------------------------------

SECRET = "sk-test-0123456789abcdef"
FAILURE = ErrorInfo("command", "exited 1\n  | AssertionError", "tests", "tests/cmd01_try01.stderr")


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[ContextFactory]:
    with contexts(tmp_path) as factory:
        yield factory


def failed_ctx(make_ctx: ContextFactory) -> RunContext:
    """A context whose ``tests`` phase failed, on its first of two repair attempts."""
    ctx = make_ctx(
        PIPELINE.decode(),
        files={".aider_fsm/check.sh": "exit 1\n", "src/main.py": MAIN.decode()},
        secrets={"SERVICE_API_KEY": SECRET},
        failed_phase="tests",
        repairs_used=1,
        repair_iters=2,
    )
    ctx.last_error = FAILURE
    return ctx


def test_step_builds_the_request_from_the_run(make_ctx: ContextFactory) -> None:
    ctx = failed_ctx(make_ctx)
    seen: list[RepairRequest] = []

    def agent(request: RepairRequest) -> str:
        seen.append(request)
        (request.repo / ".aider_fsm/check.sh").write_text("exit 0\n")
        return "made the check pass"

    work = ctx.new_repair_dir()
    report = RepairStep(as_agent(agent)).repair(ctx, work, FAILURE)
    assert report.agent_ok and report.error is None and report.summary == "made the check pass"
    assert (
        report.changed == (".aider_fsm/check.sh",) and report.reverted == () and not report.pipeline_restored
    )
    (request,) = seen
    assert (request.repo, request.phase, request.error_kind) == (ctx.repo_root, "tests", "command")
    assert (request.attempt, request.max_attempts, request.run_id) == (1, 2, ctx.run_id)
    assert request.evidence_paths == ("tests/cmd01_try01.stderr",)
    assert request.allowed_globs == (".aider_fsm/**",) and request.work_dir == work
    assert "`tests` phase failed" in request.prompt and "AssertionError" in request.prompt
    assert (work / "prompt.md").read_text() == request.prompt
    assert {p.name for p in work.iterdir()} >= {"request.json", "prompt.md", "reply.json", "provenance.json"}


def test_step_restores_the_runs_pipeline_and_masks_agent_output(
    tmp_path: Path, make_ctx: ContextFactory
) -> None:
    ctx = failed_ctx(make_ctx)
    pipeline = ctx.pipeline_path.read_bytes()
    agent = script_agent(
        tmp_path,
        f"print('using key {SECRET}')\n"
        "pathlib.Path('pipeline.yml').write_text('version: 1\\n')\n"
        "pathlib.Path('src/main.py').write_text('cheat')\n"
        "sys.exit(1)\n",
    )
    work = ctx.new_repair_dir()
    report = RepairStep(agent).repair(ctx, work, FAILURE)
    assert not report.agent_ok and report.pipeline_restored
    assert set(report.reverted) == set(report.changed) == {"pipeline.yml", "src/main.py"}
    assert ctx.pipeline_path.read_bytes() == pipeline
    assert report.error is not None and report.error.kind == "repair" and report.error.phase == "repair"
    assert "exited with code 1" in report.error.message and report.error.evidence == report.output_path
    log = (work / "agent_output.log").read_text()
    assert "using key ***" in log and SECRET not in log


def test_step_runs_the_actions_the_agent_wrote_inside_the_guardrails(make_ctx: ContextFactory) -> None:
    ctx = failed_ctx(make_ctx)

    def agent(request: RepairRequest) -> None:
        (request.repo / ACTIONS_REL).write_text(
            "version: 1\nactions:\n"
            "  - {id: fix, kind: write_file, path: .aider_fsm/check.sh, content: 'exit 0'}\n"
            "  - {id: sneak, kind: write_file, path: src/main.py, content: 'cheat'}\n"
        )

    work = ctx.new_repair_dir()
    report = RepairStep(as_agent(agent)).repair(ctx, work, FAILURE)
    assert report.agent_ok and report.error is None
    assert (ctx.repo_root / ".aider_fsm/check.sh").read_text() == "exit 0"
    assert (ctx.repo_root / "src/main.py").read_text() == MAIN.decode()
    assert report.changed == (".aider_fsm/check.sh", "src/main.py") and report.reverted == ("src/main.py",)
    assert not (ctx.repo_root / ACTIONS_REL).exists()
    assert [r["id"] for r in read(work / "actions", "actions.json")] == ["fix", "sneak"]


def test_step_reports_a_failed_action_as_the_repairs_error(make_ctx: ContextFactory) -> None:
    ctx = failed_ctx(make_ctx)

    def agent(request: RepairRequest) -> RepairReply:
        (request.repo / ACTIONS_REL).write_text(
            "version: 1\nactions:\n  - {id: boom, kind: run_cmd, cmd: 'exit 4'}\n"
        )
        return RepairReply(ok=True, summary="wrote an action")

    report = RepairStep(as_agent(agent)).repair(ctx, ctx.new_repair_dir(), FAILURE)
    assert report.agent_ok
    assert (
        report.error is not None and report.error.kind == "action" and "'boom' failed" in report.error.message
    )


# -- nothing the agent started is left when the guardrails look ---------------------------------------------

#: Tampers with evaluate.py a moment after the agent exited (it records its pid first).
HELPER = (
    "import os, pathlib, sys, time\n"
    "pathlib.Path(sys.argv[1]).write_text(str(os.getpid()))\n"
    "time.sleep(0.4)\n"
    "pathlib.Path('evaluate.py').write_text('print(\"score: 1.0\")')\n"
)
LEAVE = {
    "setsid": "subprocess.Popen(['setsid', sys.executable, helper, pid_file])\n",
    "double fork": (
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, helper, pid_file])\n"
        "    os._exit(0)\n"
        "os.wait()\n"
    ),
    "own group": "subprocess.Popen([sys.executable, helper, pid_file], process_group=0)\n",
}


@pytest.mark.parametrize("how", sorted(LEAVE))
def test_a_helper_the_agent_leaves_behind_is_gone_before_the_check(
    tmp_path: Path, repo: Path, make_request: RequestFactory, how: str
) -> None:
    (repo / "evaluate.py").write_text("print('score: 0.2')\n")
    (tmp_path / "helper.py").write_text(HELPER)
    pid_file = tmp_path / "helper.pid"
    agent = script_agent(
        tmp_path,
        f"import subprocess\nhelper, pid_file = {str(tmp_path / 'helper.py')!r}, {str(pid_file)!r}\n"
        + LEAVE[how]
        + "while not pathlib.Path(pid_file).exists():\n    pass\n",
    )
    reply, prov = run_repair(agent, make_request())
    assert reply.ok, reply.summary
    assert "ended 1 process group(s) it left running" in reply.summary
    helper = int(pid_file.read_text())
    time.sleep(0.8)  # twice the helper's delay: had it lived, evaluate.py would have changed by now
    assert (repo / "evaluate.py").read_text() == "print('score: 0.2')\n"
    assert prov.changed == () and read(make_request().work_dir, "provenance.json")["changed"] == []
    assert not pid_alive(helper)


def test_step_reports_a_change_it_cannot_undo_as_the_repairs_error(make_ctx: ContextFactory) -> None:
    """A file too large to keep in the snapshot, changed by the agent: the repair stops, naming it."""
    ctx = failed_ctx(make_ctx)
    (ctx.repo_root / "data.bin").write_bytes(b"0" * (5 * 1024 * 1024))
    before = ctx.pipeline_path.read_bytes()

    def agent(request: RepairRequest) -> None:
        (request.repo / "data.bin").write_bytes(b"1" * 10)
        (request.repo / "pipeline.yml").write_text("version: 1\n")

    work = ctx.new_repair_dir()
    report = RepairStep(as_agent(agent)).repair(ctx, work, FAILURE)
    assert not report.agent_ok and report.error is not None
    assert (report.error.kind, report.error.phase) == ("repair", "repair")
    assert "could not undo it: data.bin (modified)" in report.error.message
    assert report.error.evidence == str(work / "provenance.json")
    assert ctx.pipeline_path.read_bytes() == before  # what could be undone, was
    prov = read(work, "provenance.json")
    assert [c["path"] for c in prov["unreverted"]] == ["data.bin"] and prov["pipeline_restored"] is True
    assert read(work, "reply.json")["ok"] is True


def test_before_json_records_the_contract_and_the_guarded_files(make_ctx: ContextFactory) -> None:
    ctx = failed_ctx(make_ctx)
    work = ctx.new_repair_dir()
    RepairStep(as_agent(lambda _r: None)).repair(ctx, work, FAILURE)
    before = read(work, "before.json")
    pipeline_sha = hashlib.sha256(ctx.pipeline_path.read_bytes()).hexdigest()
    assert before["contract"] == {"pipeline.yml": pipeline_sha, ".aider_fsm/bootstrap.yml": None}
    assert sorted(before["files"]) == ["pipeline.yml", "src/main.py"]  # .aider_fsm/** is the agent's
    assert before["allowed_globs"] == [".aider_fsm/**"] and before["protected"] == ["pipeline.yml"]
    assert (ctx.run_dir / "contract" / f"{pipeline_sha}.pipeline.yml").read_bytes() == ctx.pipeline_path.read_bytes()
