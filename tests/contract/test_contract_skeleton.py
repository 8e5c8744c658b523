"""The skeleton ``fsm-runner init`` writes: its commented sections are valid once uncommented."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from fsm_runner.contract import load_pipeline
from fsm_runner.contract.skeleton import write_skeleton
from fsm_runner.execution.policy import SecurityPolicy


def test_the_deploy_section_serves_and_probes_the_runs_port(tmp_path: Path) -> None:
    [pipeline, _] = write_skeleton(tmp_path)
    text = pipeline.read_text()
    deploy = re.search(r"^# deploy:.*?(?=^#\s*$|^# \w+:|\Z)", text, flags=re.S | re.M)
    assert deploy is not None
    uncommented = re.sub(r"^# ?", "", deploy.group(0), flags=re.M)
    pipeline.write_text(text + "\n" + uncommented)
    spec = load_pipeline(tmp_path).deploy
    assert spec is not None
    assert '--port "$AIDER_FSM_PORT"' in spec.setup_cmds[0]
    assert spec.health_cmds == ('curl -fsS "http://127.0.0.1:$AIDER_FSM_PORT/health"',)
    assert not any("pkill" in cmd for cmd in spec.teardown_cmds)  # would stop other runs' services too


def _uncommented_deploy(tmp_path: Path) -> tuple[str, str]:
    [pipeline, _] = write_skeleton(tmp_path)
    text = pipeline.read_text()
    deploy = re.search(r"^# deploy:.*?(?=^#\s*$|^# \w+:|\Z)", text, flags=re.S | re.M)
    assert deploy is not None
    pipeline.write_text(text + "\n" + re.sub(r"^# ?", "", deploy.group(0), flags=re.M))
    spec = load_pipeline(tmp_path).deploy
    assert spec is not None and len(spec.setup_cmds) == len(spec.teardown_cmds) == 1
    return spec.setup_cmds[0], spec.teardown_cmds[0]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_teardown_stops_only_the_server_its_deploy_started(tmp_path: Path) -> None:
    """A pid file, not `pkill -f server.py`: that also stops other runs' servers (and its own shell)."""
    setup, teardown = _uncommented_deploy(tmp_path)
    assert "pkill" not in (tmp_path / "pipeline.yml").read_text()
    env = {**os.environ, "AIDER_FSM_PORT": "8765"}
    policy = SecurityPolicy()
    assert policy.check(setup, env) is None and policy.check(teardown, env) is None
    (tmp_path / "server.py").write_text("import time\ntime.sleep(120)\n")
    (tmp_path / ".aider_fsm").mkdir(exist_ok=True)
    # another run's server: same script, same command line
    other = subprocess.Popen(["python3", "server.py", "--port", "8766"], cwd=tmp_path)
    try:
        started = subprocess.run(["bash", "-c", setup], cwd=tmp_path, env=env, timeout=30, check=False)
        assert started.returncode == 0
        pid = int((tmp_path / ".aider_fsm" / "server.pid").read_text())
        assert _alive(pid)
        stopped = subprocess.run(["bash", "-c", teardown], cwd=tmp_path, env=env, timeout=30, check=False)
        assert stopped.returncode == 0
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid) and not (tmp_path / ".aider_fsm" / "server.pid").exists()
        assert other.poll() is None, "the teardown stopped a server it did not start"
        # nothing left to stop: the teardown still succeeds
        again = subprocess.run(["bash", "-c", teardown], cwd=tmp_path, env=env, timeout=30, check=False)
        assert again.returncode == 0
    finally:
        other.kill()
        other.wait()
