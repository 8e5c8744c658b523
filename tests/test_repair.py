from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.errors import UsageError
from fsm_runner.repair import (
    CallableAgent,
    CommandAgent,
    RepairReply,
    RepairRequest,
    as_agent,
    render_prompt,
    run_repair,
)

PIPELINE = b"version: 1\ntests:\n  cmds: ['sh .aider_fsm/check.sh']\n"
MAIN = b"def answer():\n    return 41\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".aider_fsm").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "pipeline.yml").write_bytes(PIPELINE)
    (root / "src/main.py").write_bytes(MAIN)
    (root / "README.md").write_bytes(b"readme\n")
    (root / ".aider_fsm/check.sh").write_bytes(b"exit 1\n")
    return root


def make_request(repo: Path, **overrides: Any) -> RepairRequest:
    fields: dict[str, Any] = {
        "repo": repo,
        "phase": "tests",
        "error_kind": "command_failed",
        "error_message": "sh .aider_fsm/check.sh exited 1",
        "evidence_paths": (),
        "attempt": 1,
        "max_attempts": 2,
        "allowed_globs": (".aider_fsm/**",),
        "run_id": "20240101T000000Z-abcd",
        "prompt": "fix it",
        "work_dir": repo / ".aider_fsm/artifacts/20240101T000000Z-abcd/repair_01",
    }
    fields.update(overrides)
    return RepairRequest(**fields)


def script_agent(tmp_path: Path, body: str, **kwargs: Any) -> CommandAgent:
    """A real agent process: a Python script that receives the request file path as its argument."""
    script = tmp_path / "agent.py"
    script.write_text("import json, os, sys, pathlib\nreq = json.load(open(sys.argv[1]))\n" + body)
    return CommandAgent([sys.executable, str(script), "{request_file}"], **kwargs)


def test_command_agent_fix_inside_allowed_area_is_kept(tmp_path: Path, repo: Path) -> None:
    agent = script_agent(
        tmp_path,
        "assert os.getcwd() == req['repo'] and os.environ['FSM_REPAIR_REQUEST'] == sys.argv[1]\n"
        "assert open(os.environ['FSM_REPAIR_PROMPT']).read() == 'fix it'\n"
        "pathlib.Path('.aider_fsm/check.sh').write_text('exit 0\\n')\n"
        "print('fixed the check')\n",
    )
    request = make_request(repo)
    reply, prov = run_repair(agent, request)
    assert reply.ok, reply.summary
    assert (repo / ".aider_fsm/check.sh").read_text() == "exit 0\n"
    assert [(c.path, c.kind) for c in prov.changed] == [(".aider_fsm/check.sh", "modified")]
    assert prov.reverted == () and not prov.pipeline_restored
    work = request.work_dir
    assert json.loads((work / "provenance.json").read_text())["kept"] == [".aider_fsm/check.sh"]
    assert json.loads((work / "request.json").read_text())["phase"] == "tests"
    assert json.loads((work / "reply.json").read_text())["ok"] is True
    assert (work / "prompt.md").read_text() == "fix it"
    assert reply.output_path is not None and "fixed the check" in Path(reply.output_path).read_text()


def test_hostile_agent_edits_are_undone_byte_for_byte(tmp_path: Path, repo: Path) -> None:
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
    reply, prov = run_repair(agent, make_request(repo))
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
    saved = json.loads((make_request(repo).work_dir / "provenance.json").read_text())
    assert saved["pipeline_restored"] is True and saved["kept"] == [".aider_fsm/check.sh"]


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent or a zombie waiting for init)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_agent_that_times_out_is_killed_with_its_children(tmp_path: Path, repo: Path) -> None:
    pids = tmp_path / "pids"
    script = tmp_path / "hang.sh"
    script.write_text(f"trap '' TERM\nsleep 30 &\necho $$ $! > {pids}\nwait\n")
    agent = CommandAgent(f"bash {script}", timeout=0.5, kill_grace=0.2)
    start = time.monotonic()
    reply, prov = run_repair(agent, make_request(repo))
    assert time.monotonic() - start < 5
    assert not reply.ok and "timed out" in reply.summary
    assert prov.changed == ()
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
def test_command_agent_failures_become_not_ok(repo: Path, argv: list[str], needle: str) -> None:
    reply, _ = run_repair(CommandAgent(argv), make_request(repo))
    assert not reply.ok and needle in reply.summary


def test_command_agent_fills_placeholders(tmp_path: Path, repo: Path) -> None:
    out = tmp_path / "argv.json"
    code = f"import json, sys; json.dump(sys.argv[1:], open({str(out)!r}, 'w'))"
    agent = as_agent([sys.executable, "-c", code, "{repo}", "--msg={prompt_file}"])
    request = make_request(repo)
    reply, _ = run_repair(agent, request)
    assert reply.ok
    assert json.loads(out.read_text()) == [str(repo), f"--msg={request.work_dir.resolve() / 'prompt.md'}"]


def test_callable_agent_that_raises_is_not_ok_and_still_guarded(repo: Path) -> None:
    def agent(request: RepairRequest) -> None:
        (request.repo / "src/main.py").write_text("broken")
        raise RuntimeError("model quota exhausted")

    reply, prov = run_repair(as_agent(agent), make_request(repo))
    assert not reply.ok and "RuntimeError: model quota exhausted" in reply.summary
    assert (repo / "src/main.py").read_bytes() == MAIN
    assert [c.path for c in prov.reverted] == ["src/main.py"]


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (None, RepairReply(ok=True)),
        (False, RepairReply(ok=True)),
        ("patched conftest", RepairReply(ok=True, summary="patched conftest")),
        (RepairReply(ok=False, summary="gave up"), RepairReply(ok=False, summary="gave up")),
    ],
)
def test_callable_agent_return_values(repo: Path, returned: object, expected: RepairReply) -> None:
    assert CallableAgent(lambda _req: returned).repair(make_request(repo)) == expected


class _Agent:
    def repair(self, request: RepairRequest) -> RepairReply:
        return RepairReply(ok=True)


def test_as_agent_accepts_agents_callables_and_command_lines() -> None:
    agent = _Agent()
    assert as_agent(agent) is agent
    assert isinstance(as_agent(print), CallableAgent)
    assert as_agent("aider --yes --message-file '{prompt_file}'").argv == (  # type: ignore[attr-defined]
        "aider",
        "--yes",
        "--message-file",
        "{prompt_file}",
    )


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


def test_render_prompt_is_bounded_and_says_the_rules(repo: Path) -> None:
    logs = repo / "logs"
    logs.mkdir()
    for i in range(6):
        (logs / f"cmd{i}.stderr").write_text("".join(f"log{i} line {n}\n" for n in range(200)))
    paths = [f"logs/cmd{i}.stderr" for i in range(6)] + ["logs/missing.txt"]
    text = render_prompt("evaluate", "missing_keys", "metrics lack `score`", paths, ["src/**"], repo)
    assert "`evaluate`" in text and "missing_keys" in text and "metrics lack `score`" in text
    assert "log0 line 199" in text and "log0 line 140" in text and "log0 line 139" not in text
    assert "log3 line 199" in text and "log4 line" not in text
    assert "`logs/cmd5.stderr` (not shown)" in text and "`logs/missing.txt` (missing)" in text
    assert "- `src/**`" in text and "pipeline.yml" in text and "restored byte" in text


def test_request_to_json_and_validation(repo: Path) -> None:
    request = make_request(repo, evidence_paths=["a.log"])
    data = request.to_json()
    assert data["evidence_paths"] == ["a.log"] and data["attempt"] == 1 and data["repo"] == str(repo)
    json.dumps(data)
    with pytest.raises(ValueError):
        make_request(repo, attempt=0)


def test_work_dir_outside_repo_is_fine(tmp_path: Path, repo: Path) -> None:
    request = make_request(repo, work_dir=tmp_path / "evidence/repair_01")
    reply, prov = run_repair(CallableAgent(lambda _r: None), request, write_json=None)
    assert reply.ok and prov.changed == ()
    assert (tmp_path / "evidence/repair_01/provenance.json").exists()


def test_custom_json_writer_is_used(repo: Path) -> None:
    written: dict[str, Any] = {}
    reply, _ = run_repair(
        CallableAgent(lambda _r: None),
        make_request(repo),
        write_json=lambda path, data: written.__setitem__(os.path.basename(path), data),
    )
    assert reply.ok and set(written) == {"request.json", "reply.json", "provenance.json"}
