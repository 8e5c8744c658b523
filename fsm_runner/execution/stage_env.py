"""The environment each stage command receives: runner facts, the model under test, mode and limits."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path

from fsm_runner.contract.fields import MAX_SECONDS, PORT_ENV, text_problem
from fsm_runner.errors import UsageError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_UNDECODED = re.compile("[\udc80-\udcff]")

SMOKE_LIMIT = 8
FULL_LIMIT = 64
MAX_CMD_OVERRIDE = "AIDER_FSM_MAX_CMD_SECONDS"
MAX_TOTAL_OVERRIDE = "AIDER_FSM_MAX_TOTAL_SECONDS"
#: The interpreter running fsm-runner: it has fsm_runner (``python -m fsm_runner.junit``) whatever
#: ``python3`` on PATH is.
PYTHON_ENV = "AIDER_FSM_PYTHON"
#: Stages that see the model under test (deploy too: it may serve a local checkpoint).
LLM_STAGES = frozenset({"deploy_setup", "health", "rollout", "evaluate", "benchmark"})


def llm_env(llm: str | None, caller_env: Mapping[str, str]) -> dict[str, str]:
    """A path to an existing directory is a local model; any other string names a remote one."""
    if not llm:
        return {}
    candidate = Path(llm).expanduser()
    if not candidate.is_absolute():
        candidate = Path.cwd() / candidate
    if candidate.is_dir():
        return {"AIDER_LLM_KIND": "local_hf", "AIDER_TRAINED_MODEL_DIR": str(candidate.resolve())}
    env = {"AIDER_LLM_KIND": "remote", "AIDER_LLM_MODEL": llm, "OPENAI_MODEL": llm}
    base = caller_env.get("OPENAI_API_BASE") or caller_env.get("OPENAI_BASE_URL")
    if base:
        env.setdefault("OPENAI_API_BASE", base)
        env.setdefault("OPENAI_BASE_URL", base)
    return env


def mode_env(mode: str, caller_env: Mapping[str, str]) -> dict[str, str]:
    limit = caller_env.get("AIDER_EVAL_LIMIT") or str(SMOKE_LIMIT if mode == "smoke" else FULL_LIMIT)
    return {"AIDER_EVAL_MODE": mode, "AIDER_EVAL_LIMIT": limit}


def strict_env(unattended: str) -> dict[str, str]:
    """Unattended runs must never wait for a person: tools that honour these variables do not prompt."""
    if unattended != "strict":
        return {}
    return {"CI": "1", "GIT_TERMINAL_PROMPT": "0", "DEBIAN_FRONTEND": "noninteractive", "PIP_NO_INPUT": "1"}


def build_stage_env(
    *,
    stage: str,
    base_env: Mapping[str, str],
    bootstrap_env: Mapping[str, str],
    stage_env: Mapping[str, str],
    run_id: str,
    stage_dir: Path,
    repo_root: Path,
    runtime_env_path: Path,
    unattended: str,
    llm: str | None,
    mode: str,
    overrides: Mapping[str, str],
    port: int | None = None,
) -> dict[str, str]:
    """Layered, later wins: caller env, bootstrap env, runner facts, llm and mode, stage env, overrides.

    ``port`` is the run's (``AIDER_FSM_PORT``); one inherited from the caller's env is replaced by it.
    """
    env = dict(base_env)
    env.update(bootstrap_env)
    env.update(strict_env(unattended))
    env.update(
        {
            "AIDER_FSM_STAGE": stage,
            "AIDER_FSM_RUN_ID": run_id,
            "AIDER_FSM_ARTIFACTS_DIR": str(stage_dir.resolve()),
            "AIDER_FSM_REPO_ROOT": str(repo_root.resolve()),
            "AIDER_RUNTIME_ENV_PATH": str(runtime_env_path),
            PYTHON_ENV: sys.executable or "python3",
        }
    )
    if port is not None:
        env[PORT_ENV] = str(port)
    if stage in LLM_STAGES:
        env.update(llm_env(llm, {**base_env, **overrides}))
    env.update(mode_env(mode, {**base_env, **overrides}))
    env.update(stage_env)
    env.update(overrides)
    return env


def _undecoded_byte(value: str) -> str | None:
    """A byte that was not UTF-8 where the value came from (a command line, the environment: Python holds it
    as a surrogate in U+DC80..U+DCFF), said as a byte rather than as a surrogate nobody wrote."""
    found = _UNDECODED.search(value)
    if found is None:
        return None
    byte = ord(found.group()) - 0xDC00
    return f"contains the byte 0x{byte:02x}, which is not UTF-8; write the value in UTF-8"


def env_map(value: object, what: str = "env_overrides") -> dict[str, str]:
    """A caller's variables as a plain ``{name: value}`` of strings; anything else is refused up front, so
    a bad value never reaches a command or the run's files."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{what} must map variable names to strings, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise UsageError(f"{what}: {key!r} is not a variable name (letters, digits and _)")
        if not isinstance(item, str):
            raise UsageError(f"{what}: {key} must be a string, got {item!r}; write it as {str(item)!r}")
        problem = _undecoded_byte(item) or text_problem(item)
        if problem:
            raise UsageError(f"{what}: {key} {problem}")
    return dict(value)


def check_overrides(env: Mapping[str, str]) -> None:
    """The runtime limits must be positive numbers; a typo must not silently mean "no limit"."""
    for name in (MAX_CMD_OVERRIDE, MAX_TOTAL_OVERRIDE):
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0 or value != value or value == float("inf"):
            raise UsageError(f"{name} must be a positive number of seconds, got {raw!r}")
        if value > MAX_SECONDS:
            raise UsageError(f"{name} must be at most {MAX_SECONDS} seconds (7 days), got {raw!r}")
