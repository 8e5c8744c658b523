"""The environment each stage command receives (DESIGN section 2, "What every stage command receives")."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fsm_runner.errors import UsageError

SMOKE_LIMIT = 8
FULL_LIMIT = 64
MODES = ("smoke", "full")
MAX_CMD_OVERRIDE = "AIDER_FSM_MAX_CMD_SECONDS"
MAX_TOTAL_OVERRIDE = "AIDER_FSM_MAX_TOTAL_SECONDS"
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
) -> dict[str, str]:
    """Layered, later wins: caller env, bootstrap env, runner facts, llm and mode, stage env, overrides."""
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
        }
    )
    if stage in LLM_STAGES:
        env.update(llm_env(llm, {**base_env, **overrides}))
    env.update(mode_env(mode, {**base_env, **overrides}))
    env.update(stage_env)
    env.update(overrides)
    return env


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
