"""A runner killed with SIGKILL leaves its service, its command and its repair agent running: the next run
of the tree (or a replay) ends them before anything deploys, and says so.

The service here listens on a fixed port (``SVC_PORT``, given with ``--env``) and answers with the model it
serves, so a run that health-checks and evaluates a stale service reports the wrong model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import fsm_runner
from fsm_runner.replays import can_replay, replay
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid, wait_for_file
from tests.helpers import target_files as files

FIXED_SVC = textwrap.dedent(
    """
    import json, os, http.server
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"llm": os.environ.get("AIDER_LLM_MODEL"), "pid": os.getpid()}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["SVC_PORT"])), H)
    with open(".aider_fsm/svc.pid", "w") as f:
        f.write(str(os.getpid()))
    srv.serve_forever()
    """
)

#: Run by deploy before it starts the service: was the service a dead run left behind still up?
CHECK_OLD = textwrap.dedent(
    """
    import pathlib
    pid_file, out = pathlib.Path(".aider_fsm/svc.pid"), pathlib.Path(".aider_fsm/old_service.txt")
    state = "none"
    if pid_file.exists():
        try:
            stat = pathlib.Path(f"/proc/{pid_file.read_text()}/stat").read_text()
            state = "gone" if stat.rsplit(")", 1)[1].split()[0] == "Z" else "alive"
        except OSError:
            state = "gone"
    out.write_text(state)
    """
)

ASK = "import json, os, urllib.request\nseen = json.load(urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['SVC_PORT']}/\", timeout=2))\n"

PROBE = ASK
EVALUATE = ASK + textwrap.dedent(
    """
    llm = os.environ.get("AIDER_LLM_MODEL")
    json.dump({"ok": True, "score": 1.0 if seen["llm"] == llm else 0.0, "served_by": seen["pid"], "llm": seen["llm"]},
              open(".aider_fsm/metrics.json", "w"))
    """
)

#: Holds the evaluation of model-A until .aider_fsm/go exists.
GATE = textwrap.dedent(
    """
    import os, pathlib, time
    while os.environ.get("AIDER_LLM_MODEL") == "model-A" and not pathlib.Path(".aider_fsm/go").exists():
        pathlib.Path(".aider_fsm/holding").touch()
        time.sleep(0.02)
    """
)

PIPELINE = """\
version: 1
security:
  mode: safe
  max_cmd_seconds: 60
deploy:
  setup_cmds:
    - python3 check_old.py
    - python3 fixed_svc.py > .aider_fsm/svc.log 2>&1 &
  health_cmds: python3 probe.py
  teardown_cmds: python3 stop.py
  teardown_policy: always
  timeout_seconds: 10
evaluation:
  run_cmds:
    - python3 gate.py
    - python3 evaluate_fixed.py
  metrics_path: .aider_fsm/metrics.json
  required_keys: [ok, score]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fixed_port_target(make_target: TargetFactory) -> Path:
    repo = make_target(pipeline=PIPELINE)
    for name, text in (("fixed_svc.py", FIXED_SVC), ("check_old.py", CHECK_OLD), ("probe.py", PROBE),
                       ("evaluate_fixed.py", EVALUATE), ("gate.py", GATE)):
        (repo / name).write_text(text)
    return repo


def group_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def kill_runner(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the runner process alone: its children (service, command, agent) are left as they are."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)


def test_a_killed_runs_service_is_ended_before_the_next_run_deploys(make_target: TargetFactory) -> None:
    repo = fixed_port_target(make_target)
    port = f"SVC_PORT={free_port()}"
    cmd = [sys.executable, "-m", "fsm_runner", "run", ".", "--env", port, "--json"]
    dead = subprocess.Popen([*cmd, "--llm", "model-A"], cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        wait_for_file(repo / ".aider_fsm" / "holding", dead)  # evaluating: health has passed
        (dead_dir,) = (repo / ".aider_fsm" / "artifacts").iterdir()
        wait_for_file(dead_dir / "evaluate" / "cmd01_try01.json", dead)  # written just after it starts
        old = service_pid(repo)
        assert old is not None
        old_group = group_of(old)
        gate_group = json.loads((dead_dir / "evaluate" / "cmd01_try01.json").read_text())["pgid"]
        kill_runner(dead)
        assert pid_alive(old) and pid_alive(gate_group), "the service or the command went down with the runner"

        done = subprocess.run([*cmd, "--llm", "model-B"], cwd=repo, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        new = json.loads(done.stdout)
        assert not pid_alive(old)
        assert (repo / ".aider_fsm" / "old_service.txt").read_text() == "gone", "deploy found the old service up"
        assert new["metrics"]["llm"] == "model-B" and new["metrics"]["served_by"] != old
        assert new["score"] == 1.0
        new_dir = Path(new["run_dir"])
        ended = [e for e in events(new_dir) if e["event"] == "leftovers.ended"]
        assert [(e["run_id"], e["deploy_pgids"], e["command_pgids"]) for e in ended] == [
            (dead_dir.name, [old_group], [gate_group])
        ]
        first_deploy = next(e["ts"] for e in events(new_dir) if e["event"] == "command.start")
        assert float(ended[0]["ts"]) < float(first_deploy)
        clone = json.loads((new_dir / "run.json").read_text())["outputs"]["clone"]
        assert clone["ended_leftovers"][0]["run_id"] == dead_dir.name

        assert not pid_alive(gate_group)
        assert can_replay(dead_dir)[0], "the dead run is no longer replayable"
        (repo / ".aider_fsm" / "go").touch()
        result = replay(dead_dir)
        assert result.ok, result.error
        assert result.metrics is not None and result.metrics["llm"] == "model-A"
        assert procs_in(repo) == []
    finally:
        if dead.poll() is None:
            dead.kill()
            dead.communicate()
        for pid in procs_in(repo):
            os.kill(pid, signal.SIGKILL)


AGENT = textwrap.dedent(
    """
    import os, pathlib, time
    pathlib.Path(".aider_fsm/agent.pid").write_text(str(os.getpid()))
    time.sleep(60)
    """
)


@pytest.mark.parametrize("then", ["setup", "replay"])
def test_a_repair_agent_left_by_a_killed_runner_is_ended(make_target: TargetFactory, then: str) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    (repo / "agent.py").write_text(AGENT)
    agent_cmd = f"{sys.executable} {repo / 'agent.py'}"
    runner = subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", "run", ".", "--llm", "m", "--repair-cmd", agent_cmd, "--json"],
        cwd=repo, stdout=subprocess.PIPE, text=True,
    )
    try:
        wait_for_file(repo / ".aider_fsm" / "agent.pid", runner)
        agent = int((repo / ".aider_fsm" / "agent.pid").read_text())
        (run_dir,) = (repo / ".aider_fsm" / "artifacts").iterdir()
        wait_for_file(run_dir / "repair_01" / "agent_process.json", runner)
        record = json.loads((run_dir / "repair_01" / "agent_process.json").read_text())
        assert record["running"] is True and record["pgid"] == group_of(agent)
        kill_runner(runner)
        assert pid_alive(agent), "the agent went down with the runner"
        if then == "setup":
            with fsm_runner.setup(repo) as sess:
                assert not pid_alive(agent)
                ended = [e for e in events(sess.run_dir) if e["event"] == "leftovers.ended"]
                assert [(e["run_id"], e["agent_pgids"]) for e in ended] == [(run_dir.name, [record["pgid"]])]
        else:
            (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
            result = replay(run_dir)
            assert not pid_alive(agent)
            assert result.ok, result.error
            ended = [e for e in events(run_dir) if e["event"] == "leftovers.ended"]
            assert [e["agent_pgids"] for e in ended] == [[record["pgid"]]]
        assert procs_in(repo) == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
        for pid in procs_in(repo):
            os.kill(pid, signal.SIGKILL)


def test_a_live_runs_processes_are_never_ended(make_target: TargetFactory) -> None:
    """An isolated run ends the dead runs of the tree, never what the live run in it has running."""
    repo = fixed_port_target(make_target)
    port = f"SVC_PORT={free_port()}"
    live = subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", "run", ".", "--env", port, "--llm", "model-A", "--json"],
        cwd=repo, stdout=subprocess.PIPE, text=True,
    )
    try:
        wait_for_file(repo / ".aider_fsm" / "holding", live)
        service = service_pid(repo)
        assert service is not None
        with fsm_runner.setup(repo, isolate=True, env_overrides={"SVC_PORT": str(free_port())}) as sess:
            assert not [e for e in events(sess.run_dir) if e["event"] == "leftovers.ended"]
        assert pid_alive(service)
        (repo / ".aider_fsm" / "go").touch()
        out, _ = live.communicate(timeout=60)
        assert live.returncode == 0 and json.loads(out)["metrics"]["llm"] == "model-A"
        assert not pid_alive(service)  # the live run tore its own service down
    finally:
        if live.poll() is None:
            live.kill()
            live.communicate()
        for pid in procs_in(repo):
            os.kill(pid, signal.SIGKILL)
