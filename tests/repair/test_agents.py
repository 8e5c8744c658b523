"""Repair agents: the request they get, and the adapters for callables and coding-agent command lines."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from fsm_runner.errors import UsageError
from fsm_runner.execution.process import group_alive
from fsm_runner.repair.agents import (
    CallableAgent,
    CommandAgent,
    RepairAgent,
    RepairReply,
    RepairRequest,
    as_agent,
)
from tests.repair.conftest import RequestFactory


def script_agent(tmp_path: Path, body: str) -> CommandAgent:
    """A real agent process: a Python script that receives the request file path as its argument."""
    script = tmp_path / "agent.py"
    script.write_text("import json, os, sys, pathlib\nreq = json.load(open(sys.argv[1]))\n" + body)
    return CommandAgent([sys.executable, str(script), "{request_file}"])


def test_command_agent_runs_in_the_repo_with_request_and_prompt_files(
    tmp_path: Path, repo: Path, make_request: RequestFactory
) -> None:
    agent = script_agent(
        tmp_path,
        "assert os.getcwd() == req['repo'] and os.environ['FSM_REPAIR_REQUEST'] == sys.argv[1]\n"
        "assert open(os.environ['FSM_REPAIR_PROMPT']).read() == 'fix it'\n"
        "assert req['prompt_file'] == os.environ['FSM_REPAIR_PROMPT'] and req['phase'] == 'tests'\n"
        "print('looked at the check')\n",
    )
    request = make_request()
    reply = agent.repair(request)
    assert reply.ok, reply.summary
    assert "exited with code 0" in reply.summary
    assert reply.output_path == str(request.work_dir.resolve() / "agent_output.log")
    assert "looked at the check" in Path(reply.output_path).read_text()
    assert json.loads((request.work_dir / "request.json").read_text())["run_id"] == request.run_id
    assert (request.work_dir / "prompt.md").read_text() == "fix it"


def test_command_agent_passes_extra_env(tmp_path: Path, make_request: RequestFactory) -> None:
    out = tmp_path / "seen"
    code = f"import os, pathlib; pathlib.Path({str(out)!r}).write_text(os.environ['AGENT_MODEL'])"
    reply = CommandAgent([sys.executable, "-c", code], env={"AGENT_MODEL": "small"}).repair(make_request())
    assert reply.ok, reply.summary
    assert out.read_text() == "small"


def test_command_agent_records_its_process_group_while_it_runs(
    tmp_path: Path, make_request: RequestFactory
) -> None:
    request = make_request()
    record = request.work_dir / "agent_process.json"
    seen = tmp_path / "seen.json"
    agent = script_agent(
        tmp_path,
        # the record is written just after the agent starts: under load the agent may look first
        "import time\n"
        f"while not pathlib.Path({str(record)!r}).exists(): time.sleep(0.01)\n"
        f"record = pathlib.Path({str(record)!r}).read_text()\n"
        f"pathlib.Path({str(seen)!r}).write_text(record)\n"
        "assert json.loads(record)['pgid'] == os.getpgrp() == os.getpid()\n",
    )
    reply = agent.repair(request)
    assert reply.ok, reply.summary + Path(reply.output_path or "").read_text()
    during, after = json.loads(seen.read_text()), json.loads(record.read_text())
    assert during["running"] is True and isinstance(during["leader_start"], int)
    assert after == {**during, "running": False}


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent or a zombie waiting for init)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_agent_that_times_out_is_killed_with_its_children(
    tmp_path: Path, make_request: RequestFactory
) -> None:
    pids = tmp_path / "pids"
    script = tmp_path / "hang.sh"
    script.write_text(f"trap '' TERM\nsleep 30 &\necho $$ $! > {pids}\nwait\n")
    agent = CommandAgent(f"bash {script}", timeout=0.5, kill_grace=0.2)
    start = time.monotonic()
    reply = agent.repair(make_request())
    assert time.monotonic() - start < 5
    assert not reply.ok and "timed out after 0.5s" in reply.summary
    for pid in map(int, pids.read_text().split()):
        deadline = time.monotonic() + 2
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(pid), pid


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["/nonexistent/agent-binary"], "cannot start repair agent"),
        ([sys.executable, "-c", "import sys; sys.exit(3)"], "exited with code 3"),
    ],
)
def test_command_agent_failures_become_not_ok(
    make_request: RequestFactory, argv: list[str], needle: str
) -> None:
    reply = CommandAgent(argv).repair(make_request())
    assert not reply.ok and needle in reply.summary


def test_command_agent_fills_placeholders(tmp_path: Path, repo: Path, make_request: RequestFactory) -> None:
    out = tmp_path / "argv.json"
    code = f"import json, sys; json.dump(sys.argv[1:], open({str(out)!r}, 'w'))"
    agent = as_agent([sys.executable, "-c", code, "{repo}", "--msg={prompt_file}"])
    request = make_request()
    reply = agent.repair(request)
    assert reply.ok, reply.summary
    assert json.loads(out.read_text()) == [str(repo), f"--msg={request.work_dir.resolve() / 'prompt.md'}"]


def test_callable_agent_that_raises_is_not_ok(make_request: RequestFactory) -> None:
    def agent(request: RepairRequest) -> None:
        raise RuntimeError("model quota exhausted")

    reply = CallableAgent(agent).repair(make_request())
    assert not reply.ok and reply.summary == "repair agent raised RuntimeError: model quota exhausted"


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (None, RepairReply(ok=True)),
        (False, RepairReply(ok=True)),
        ("patched conftest", RepairReply(ok=True, summary="patched conftest")),
        (RepairReply(ok=False, summary="gave up"), RepairReply(ok=False, summary="gave up")),
    ],
)
def test_callable_agent_return_values(
    make_request: RequestFactory, returned: object, expected: RepairReply
) -> None:
    assert CallableAgent(lambda _req: returned).repair(make_request()) == expected


class _Agent:
    def repair(self, request: RepairRequest) -> RepairReply:
        return RepairReply(ok=True)


def test_as_agent_accepts_agents_callables_and_command_lines(tmp_path: Path) -> None:
    agent = _Agent()
    assert as_agent(agent) is agent
    assert isinstance(as_agent(print), CallableAgent)
    command = as_agent("aider --yes --message-file '{prompt_file}'")
    assert isinstance(command, CommandAgent)
    assert command.argv == ("aider", "--yes", "--message-file", "{prompt_file}")
    script = as_agent(tmp_path / "fix.sh")
    assert isinstance(script, CommandAgent) and script.argv == (str(tmp_path / "fix.sh"),)
    assert isinstance(as_agent(print), RepairAgent)


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (None, "not usable"),
        (42, "not usable"),
        ("", "empty"),
        ([], "empty"),
        (["aider", 3], "list of strings"),
        ("aider 'unclosed", "cannot be parsed"),
    ],
)
def test_as_agent_rejects_bad_input(bad: object, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        as_agent(bad)


@pytest.mark.parametrize("env", [{"KEY": 1}, ["KEY=value"]])
def test_command_agent_rejects_bad_env(env: object) -> None:
    with pytest.raises(UsageError, match="env must map strings to strings"):
        CommandAgent("aider", env=env)  # type: ignore[arg-type]


def test_request_to_json_and_validation(repo: Path, make_request: RequestFactory) -> None:
    request = make_request(evidence_paths=["a.log"], allowed_globs="src/**")
    data = request.to_json()
    assert data["evidence_paths"] == ["a.log"] and data["allowed_globs"] == ["src/**"]
    assert data["attempt"] == 1 and data["repo"] == str(repo)
    assert data["prompt_file"] == str(request.work_dir / "prompt.md") and "prompt" not in data
    assert json.loads(json.dumps(data)) == data
    with pytest.raises(ValueError):
        make_request(attempt=0)


def test_a_signal_just_after_the_agent_started_still_ends_it(
    tmp_path: Path, make_request: RequestFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C that lands after the agent has started, before the runner holds it, must still end it (and
    its record says so): the signal is sent from exactly there."""
    from fsm_runner.repair import agents

    real = agents.process_start_time
    sent: list[int] = []

    def interrupted_in_the_window(pid: int) -> int | None:
        if not sent:  # once: the cleanup reads start times too
            sent.append(pid)
            os.kill(os.getpid(), signal.SIGINT)
        return real(pid)

    monkeypatch.setattr(agents, "process_start_time", interrupted_in_the_window)
    request = make_request()
    agent = CommandAgent([sys.executable, "-c", "import time; time.sleep(30)"])
    with pytest.raises(KeyboardInterrupt):
        agent.repair(request)
    record = json.loads((request.work_dir / "agent_process.json").read_text())
    assert record["running"] is False
    deadline = time.monotonic() + 5
    while group_alive(record["pgid"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not group_alive(record["pgid"]), "the agent outlived the interrupt"
