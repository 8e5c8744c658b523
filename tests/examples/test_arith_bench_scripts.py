"""The bundled example targets, run as real subprocesses the way the runner runs them.

Each test copies a target into tmp_path, reads the commands from its own pipeline.yml / bootstrap.yml and
runs them with `bash -c` in the repo root with the stage environment the runner gives every stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fsm_runner.execution.ports import free_port, port_is_free

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_ID = "20250101T000000Z-test"


def ignore_generated(directory: str, names: list[str]) -> set[str]:
    """Leave out what a run produces, so a dirty example dir does not leak into the copy."""
    ignored = {n for n in names if n in {".venv", "__pycache__", ".mypy_cache", ".ruff_cache", "artifacts"}}
    if Path(directory).name == ".aider_fsm":
        ignored |= {n for n in names if n.endswith((".json", ".jsonl", ".log", ".pid"))}
    return ignored


def copy_target(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES / name, tmp_path / name, ignore=ignore_generated))


def commands(value: Any) -> list[str]:
    """A string where a list of commands is expected is one command."""
    return [value] if isinstance(value, str) else list(value or [])


def stage_env(repo: Path, stage: str, *, model: str = "exact", **extra: str) -> dict[str, str]:
    """The environment the runner gives a stage command (strict unattended mode)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIDER_", "OPENAI_", "ARITH_BENCH_"))}
    env.update(
        AIDER_FSM_STAGE=stage,
        AIDER_FSM_RUN_ID=RUN_ID,
        AIDER_FSM_ARTIFACTS_DIR=str(repo / ".aider_fsm" / "artifacts" / RUN_ID / stage),
        AIDER_FSM_REPO_ROOT=str(repo),
        AIDER_RUNTIME_ENV_PATH=str(repo / ".aider_fsm" / "runtime_env.json"),
        CI="1",
        GIT_TERMINAL_PROMPT="0",
    )
    if stage in {"rollout", "evaluation"}:
        env.update(
            AIDER_LLM_KIND="remote", AIDER_LLM_MODEL=model, OPENAI_MODEL=model, AIDER_EVAL_MODE="smoke"
        )
        env["AIDER_EVAL_LIMIT"] = "8"
    env.update(extra)
    return env


def run(cmd: str, repo: Path, env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", cmd],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def run_ok(cmd: str, repo: Path, env: dict[str, str]) -> str:
    result = run(cmd, repo, env)
    assert result.returncode == 0, f"{cmd!r} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


class Target:
    """A tmp copy of arith_bench and its pipeline, with a helper per phase; like a run, it has a port."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.pipeline = yaml.safe_load((repo / "pipeline.yml").read_text())
        self.port = free_port()
        self.extra: dict[str, str] = {}

    def env(self, stage: str, **extra: str) -> dict[str, str]:
        return stage_env(self.repo, stage, **{"AIDER_FSM_PORT": str(self.port), **self.extra, **extra})

    def phase(self, stage: str, key: str, section: str | None = None, **extra: str) -> str:
        spec = self.pipeline[section or stage]
        env = self.env(stage, **{k: str(v) for k, v in (spec.get("env") or {}).items()}, **extra)
        return "".join(run_ok(cmd, self.repo, env) for cmd in commands(spec[key]))

    def deploy(self, **extra: str) -> int:
        self.phase("deploy", "setup_cmds", **extra)
        self.phase("health", "health_cmds", "deploy")
        return int(read_json(self.repo / ".aider_fsm" / "runtime_env.json")["service"]["pid"])

    def metrics(self, stage: str) -> dict[str, Any]:
        return dict(read_json(self.repo / self.pipeline[stage]["metrics_path"]))


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    t = Target(copy_target("arith_bench", tmp_path))
    yield t
    pid_file = t.repo / ".aider_fsm" / "server.pid"
    if pid_file.exists():  # never leave a server behind, even when a test failed before teardown
        run("python3 stop.py --grace 1", t.repo, t.env("teardown"))
        if pid_file.exists() and alive(pid := int(pid_file.read_text())):
            os.kill(pid, signal.SIGKILL)


def bootstrap_env(repo: Path, spec: dict[str, Any]) -> dict[str, str]:
    """What the runner makes of bootstrap.yml's env: $VAR expanded, relative PATH entries made absolute."""
    out: dict[str, str] = {}
    for key, value in (spec.get("env") or {}).items():
        expanded = os.path.expandvars(str(value))
        if key == "PATH":
            expanded = os.pathsep.join(
                p if os.path.isabs(p) else str(repo / p) for p in expanded.split(os.pathsep)
            )
        out[key] = expanded
    return out


def test_every_phase_runs_from_the_contract_and_teardown_stops_the_server(target: Target) -> None:
    repo = target.repo
    bootstrap = yaml.safe_load((repo / ".aider_fsm" / "bootstrap.yml").read_text())
    target.extra = bootstrap_env(repo, bootstrap)  # applies to bootstrap and every later stage
    for cmd in commands(bootstrap["cmds"]):
        run_ok(cmd, repo, target.env("bootstrap"))
    venv_cfg = repo / ".venv" / "pyvenv.cfg"
    created = venv_cfg.stat().st_mtime_ns
    for cmd in commands(bootstrap["cmds"]):  # a second bootstrap reuses the venv
        run_ok(cmd, repo, target.env("bootstrap"))
    assert venv_cfg.stat().st_mtime_ns == created

    tests = run(commands(target.pipeline["tests"]["cmds"])[0], repo, target.env("tests"))
    assert tests.returncode == 0 and "OK" in tests.stderr, tests.stderr
    pid = target.deploy()
    runtime = read_json(repo / ".aider_fsm" / "runtime_env.json")
    assert runtime["inference"]["base_url"].startswith("http://127.0.0.1:")
    assert runtime["inference"]["base_url"].endswith("/v1")
    assert runtime["service"]["pid"] == pid == int((repo / ".aider_fsm" / "server.pid").read_text())

    target.phase("rollout", "run_cmds")
    rollout = read_json(repo / ".aider_fsm" / "rollout.json")
    assert rollout["counts"] == {"samples": 8, "errors": 0}
    assert (rollout["run_id"], rollout["model"]) == (RUN_ID, "exact")
    rows = [json.loads(line) for line in Path(rollout["paths"]["samples_jsonl"]).read_text().splitlines()]
    assert len(rows) == 8
    assert all(isinstance(r["prompt"], str) and r["completion"].strip() and r["reward"] == 1.0 for r in rows)
    assert {r["meta"]["kind"] for r in rows} == {"add", "sub", "mul", "reverse"}

    target.phase("evaluation", "run_cmds")
    metrics = target.metrics("evaluation")
    assert all(key in metrics for key in target.pipeline["evaluation"]["required_keys"])
    assert metrics["ok"] is True and metrics["score"] == 1.0 and metrics["run_id"] == RUN_ID
    assert metrics["details"]["n"] == metrics["details"]["correct"] == 8

    target.phase("benchmark", "run_cmds")
    bench = target.metrics("benchmark")
    assert all(key in bench for key in target.pipeline["benchmark"]["required_keys"])
    assert bench["ok"] is True and bench["details"]["requests"] == 30
    assert 0 < bench["latency_ms_p50"] <= bench["latency_ms_p95"] and bench["throughput_rps"] > 0

    assert target.pipeline["deploy"]["teardown_policy"] == "always"
    target.phase("teardown", "teardown_cmds", "deploy")
    assert not alive(pid)
    assert not (repo / ".aider_fsm" / "runtime_env.json").exists()
    assert not (repo / ".aider_fsm" / "server.pid").exists()


@pytest.mark.parametrize(("model", "low", "high"), [("exact", 1.0, 1.0), ("sloppy", 0.01, 0.99)])
def test_the_model_name_selects_how_well_the_server_answers(
    target: Target, model: str, low: float, high: float
) -> None:
    target.deploy()
    target.phase("rollout", "run_cmds", model=model, AIDER_EVAL_LIMIT="16")
    target.phase("evaluation", "run_cmds", model=model, AIDER_EVAL_LIMIT="16")
    metrics = target.metrics("evaluation")
    assert metrics["ok"] is True and metrics["details"]["n"] == 16
    assert low <= metrics["score"] <= high


def test_evaluate_alone_runs_the_rollout_first(target: Target) -> None:
    target.deploy()
    out = target.phase("evaluation", "run_cmds")
    assert "running the rollout first" in out
    assert target.metrics("evaluation")["score"] == 1.0
    assert read_json(target.repo / ".aider_fsm" / "rollout.json")["run_id"] == RUN_ID


@pytest.mark.parametrize(
    ("mode", "limit", "expected"), [("smoke", "", 8), ("full", "", 64), ("full", "5", 5)]
)
def test_sample_count_follows_mode_and_limit(target: Target, mode: str, limit: str, expected: int) -> None:
    target.deploy()
    target.phase("rollout", "run_cmds", AIDER_EVAL_MODE=mode, AIDER_EVAL_LIMIT=limit)
    assert read_json(target.repo / ".aider_fsm" / "rollout.json")["counts"]["samples"] == expected
    lines = (target.repo / ".aider_fsm" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == expected


def test_a_failing_model_makes_rollout_and_evaluation_fail(target: Target) -> None:
    target.deploy()
    result = run("python3 rollout.py", target.repo, target.env("rollout", model="error"))
    assert result.returncode == 1 and "every request failed" in result.stderr
    assert read_json(target.repo / ".aider_fsm" / "rollout.json")["counts"] == {"samples": 8, "errors": 8}
    assert run("python3 evaluate.py", target.repo, target.env("evaluation", model="error")).returncode == 1
    metrics = target.metrics("evaluation")
    assert metrics["ok"] is False and "score" not in metrics


def test_a_slow_server_is_unhealthy_until_ready(target: Target) -> None:
    target.phase("deploy", "setup_cmds", ARITH_BENCH_READY_DELAY="1")
    env_file = target.repo / ".aider_fsm" / "runtime_env.json"
    deadline = time.monotonic() + 5
    while not env_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    early = run("python3 health.py --wait 0", target.repo, target.env("health"))
    assert early.returncode == 1 and "starting" in early.stderr
    start = time.monotonic()
    target.phase("health", "health_cmds", "deploy")
    assert time.monotonic() - start > 0.3


def test_without_a_deployment_scripts_say_what_to_do(target: Target) -> None:
    result = run("python3 rollout.py", target.repo, target.env("rollout"))
    assert result.returncode == 2 and "runtime_env.json: missing; start the server" in result.stderr
    assert run("python3 evaluate.py", target.repo, target.env("evaluation")).returncode == 2
    assert "missing" in target.metrics("evaluation")["error"]
    bad = run("python3 rollout.py", target.repo, target.env("rollout", AIDER_EVAL_LIMIT="many"))
    assert bad.returncode == 2 and "AIDER_EVAL_LIMIT='many'" in bad.stderr


def test_the_server_listens_on_the_runs_port_and_teardown_frees_it(target: Target) -> None:
    pid = target.deploy()
    runtime = read_json(target.repo / ".aider_fsm" / "runtime_env.json")
    assert runtime["service"]["base_url"] == f"http://127.0.0.1:{target.port}"
    assert not port_is_free(target.port)
    target.phase("teardown", "teardown_cmds", "deploy")
    assert not alive(pid) and port_is_free(target.port)


def test_by_hand_without_a_port_the_server_picks_a_free_one(target: Target) -> None:
    """The README's by-hand steps: no AIDER_FSM_PORT, and the contract's `--port "$AIDER_FSM_PORT"` empty."""
    env = stage_env(target.repo, "deploy")
    assert "AIDER_FSM_PORT" not in env
    run_ok('python3 server.py --port "$AIDER_FSM_PORT" > .aider_fsm/server.log 2>&1 &', target.repo, env)
    assert "healthy" in run_ok("python3 health.py", target.repo, env)
    base = read_json(target.repo / ".aider_fsm" / "runtime_env.json")["service"]["base_url"]
    port = int(base.rsplit(":", 1)[1])
    assert port > 0 and not port_is_free(port)
    assert "stopped" in run_ok('python3 stop.py --port "$AIDER_FSM_PORT"', target.repo, env)
    assert port_is_free(port)


def test_a_port_in_use_stops_the_server_with_a_clear_error(target: Target) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", target.port))
        holder.listen()
        result = run("python3 server.py", target.repo, target.env("deploy"))
        assert result.returncode == 2, result.stderr
        assert f"cannot listen on 127.0.0.1:{target.port}" in result.stderr
        assert not (target.repo / ".aider_fsm" / "server.pid").exists()
        bad = run("python3 health.py --wait 0", target.repo, target.env("health", AIDER_FSM_PORT="http"))
        assert bad.returncode == 2 and "AIDER_FSM_PORT='http'" in bad.stderr


def test_teardown_never_kills_a_process_that_is_not_the_server(target: Target) -> None:
    pid_file = target.repo / ".aider_fsm" / "server.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # a stale pid file naming some other live process
    assert "no server running" in target.phase("teardown", "teardown_cmds", "deploy")
    assert alive(os.getpid()) and not pid_file.exists()


def tree_hashes(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("pass_request", ["flag", "env"])
def test_broken_target_fails_until_the_repair_agent_fixes_it(tmp_path: Path, pass_request: str) -> None:
    repo = copy_target("broken_target", tmp_path)
    spec = yaml.safe_load((repo / "pipeline.yml").read_text())["evaluation"]
    cmd, metrics_path = commands(spec["run_cmds"])[0], repo / spec["metrics_path"]
    failed = run(cmd, repo, stage_env(repo, "evaluation"))
    assert failed.returncode == 1 and "KeyError" in failed.stderr
    assert read_json(metrics_path)["ok"] is False and "score" not in read_json(metrics_path)

    request = {"repo": str(repo), "phase": "evaluate", "message": "KeyError: 'answer'", "attempt": 1}
    env = {k: v for k, v in os.environ.items() if k != "FSM_REPAIR_REQUEST"}
    agent = f"python3 {EXAMPLES / 'repair_agent.py'}"
    if pass_request == "flag":
        (tmp_path / "request.json").write_text(json.dumps(request))
        agent += f" --request {tmp_path / 'request.json'} --repo {repo}"
    else:
        env["FSM_REPAIR_REQUEST"] = json.dumps(request)
    before = tree_hashes(repo)
    out = run_ok(agent, tmp_path, env)
    changed = {p for p, h in tree_hashes(repo).items() if before.get(p) != h}
    assert changed == {".aider_fsm/scoring.py"} and "rewrote .aider_fsm/scoring.py" in out

    run_ok(cmd, repo, stage_env(repo, "evaluation"))
    metrics = read_json(metrics_path)
    assert metrics["ok"] is True and metrics["score"] == pytest.approx(5 / 6)
    assert "already the correct version" in run_ok(agent, tmp_path, env)


def test_repair_agent_refuses_a_repo_it_does_not_know(tmp_path: Path) -> None:
    result = run(f"python3 {EXAMPLES / 'repair_agent.py'} --repo {tmp_path}", tmp_path, dict(os.environ))
    assert result.returncode == 1 and "only know the broken_target bug" in result.stderr


def test_teardown_in_a_copy_never_stops_the_originals_server(target: Target, tmp_path: Path) -> None:
    """A copy of the directory (``--isolate``, ``cp -r``) carries the pid file of the original's live server."""
    pid = target.deploy()
    copy = tmp_path / "copy"
    shutil.copytree(target.repo, copy, ignore=ignore_generated)
    (copy / ".aider_fsm").mkdir(exist_ok=True)
    (copy / ".aider_fsm" / "server.pid").write_text(f"{pid}\n")
    other_port = str(free_port())
    out = run_ok('python3 stop.py --port "$AIDER_FSM_PORT"', copy, target.env("teardown", AIDER_FSM_PORT=other_port))
    assert "no server running" in out and alive(pid)
    target.phase("teardown", "teardown_cmds", "deploy")
    assert not alive(pid)
