"""The environment a stage command receives: LLM, mode, strictness, and which layer wins."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.errors import UsageError
from fsm_runner.execution.stage_env import (
    FULL_LIMIT,
    LLM_STAGES,
    SMOKE_LIMIT,
    build_stage_env,
    check_overrides,
    llm_env,
    mode_env,
    strict_env,
)

# -- llm_env ---------------------------------------------------------------------------------------------


def test_no_llm_adds_nothing(tmp_path: Path) -> None:
    assert llm_env(None, {"OPENAI_API_BASE": "http://x"}) == {}
    assert llm_env("", {}) == {}


@pytest.mark.parametrize("spelling", ["absolute", "relative", "home"])
def test_an_existing_directory_is_a_local_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    model = tmp_path / "ckpt" / "step-10"
    model.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    llm = {"absolute": str(model), "relative": "ckpt/step-10", "home": "~/ckpt/step-10"}[spelling]
    env = llm_env(llm, {"OPENAI_API_BASE": "http://ignored"})
    assert env == {"AIDER_LLM_KIND": "local_hf", "AIDER_TRAINED_MODEL_DIR": str(model.resolve())}


@pytest.mark.parametrize("llm", ["deepseek-v3.2", "org/model-7b", "./missing-dir"])
def test_any_other_string_is_a_remote_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a dir")
    env = llm_env(llm, {})
    assert env == {"AIDER_LLM_KIND": "remote", "AIDER_LLM_MODEL": llm, "OPENAI_MODEL": llm}


def test_a_file_path_is_not_a_local_model(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_text("x")
    assert llm_env(str(weights), {})["AIDER_LLM_KIND"] == "remote"


@pytest.mark.parametrize(
    "caller, base",
    [
        ({"OPENAI_API_BASE": "http://a/v1"}, "http://a/v1"),
        ({"OPENAI_BASE_URL": "http://b/v1"}, "http://b/v1"),
        ({"OPENAI_API_BASE": "http://a/v1", "OPENAI_BASE_URL": "http://b/v1"}, "http://a/v1"),
        ({}, None),
    ],
)
def test_the_caller_endpoint_is_passed_to_remote_models(
    tmp_path: Path, caller: dict[str, str], base: str | None
) -> None:
    env = llm_env("m", caller)
    assert env.get("OPENAI_API_BASE") == base and env.get("OPENAI_BASE_URL") == base
    assert "OPENAI_API_KEY" not in env  # the key travels with the caller env, never copied here


# -- mode_env and strict_env -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, caller, limit",
    [
        ("smoke", {}, str(SMOKE_LIMIT)),
        ("full", {}, str(FULL_LIMIT)),
        ("smoke", {"AIDER_EVAL_LIMIT": "3"}, "3"),
        ("full", {"AIDER_EVAL_LIMIT": "500"}, "500"),
        ("full", {"AIDER_EVAL_LIMIT": ""}, str(FULL_LIMIT)),
    ],
)
def test_mode_sets_the_sample_cap(mode: str, caller: dict[str, str], limit: str) -> None:
    assert mode_env(mode, caller) == {"AIDER_EVAL_MODE": mode, "AIDER_EVAL_LIMIT": limit}


def test_limits_are_the_documented_ones() -> None:
    assert (SMOKE_LIMIT, FULL_LIMIT) == (8, 64)


@pytest.mark.parametrize("unattended, expected", [("strict", True), ("guided", False)])
def test_strict_runs_tell_tools_not_to_prompt(unattended: str, expected: bool) -> None:
    env = strict_env(unattended)
    assert bool(env) is expected
    if expected:
        assert env["CI"] == "1" and env["GIT_TERMINAL_PROMPT"] == "0"


# -- build_stage_env -------------------------------------------------------------------------------------


def build(tmp_path: Path, **kw: Any) -> dict[str, str]:
    args: dict[str, Any] = {
        "stage": "tests",
        "base_env": {},
        "bootstrap_env": {},
        "stage_env": {},
        "run_id": "run-9",
        "stage_dir": tmp_path / "run" / "tests",
        "repo_root": tmp_path / "repo",
        "runtime_env_path": tmp_path / "repo" / ".aider_fsm/runtime_env.json",
        "unattended": "strict",
        "llm": None,
        "mode": "smoke",
        "overrides": {},
    }
    args.update(kw)
    return build_stage_env(**args)


LAYERS = ("base_env", "bootstrap_env", "stage_env", "overrides")


@pytest.mark.parametrize(
    "present", [LAYERS[i:] for i in range(len(LAYERS))] + [LAYERS[:1], LAYERS[:2], LAYERS[:3]]
)
def test_later_layers_win(tmp_path: Path, present: tuple[str, ...]) -> None:
    env = build(tmp_path, **{layer: {"X": layer, f"ONLY_{layer}": "1"} for layer in present})
    assert env["X"] == present[-1]  # overrides > stage env > bootstrap env > caller env
    assert all(env[f"ONLY_{layer}"] == "1" for layer in present)  # lower layers still contribute


def test_runner_facts_are_absolute_and_beat_the_bootstrap_env(tmp_path: Path) -> None:
    env = build(tmp_path, bootstrap_env={"AIDER_FSM_STAGE": "wrong", "CI": "0"})
    assert env["AIDER_FSM_STAGE"] == "tests" and env["CI"] == "1"
    assert env["AIDER_FSM_RUN_ID"] == "run-9"
    assert env["AIDER_FSM_ARTIFACTS_DIR"] == str((tmp_path / "run" / "tests").resolve())
    assert env["AIDER_FSM_REPO_ROOT"] == str((tmp_path / "repo").resolve())
    assert env["AIDER_RUNTIME_ENV_PATH"] == str(tmp_path / "repo" / ".aider_fsm/runtime_env.json")
    assert Path(env["AIDER_FSM_ARTIFACTS_DIR"]).is_absolute()
    assert env["AIDER_FSM_PYTHON"] == sys.executable  # has fsm_runner, whatever python3 on PATH is


@pytest.mark.parametrize("stage", ["bootstrap", "tests", "deploy_setup", "rollout", "evaluate", "benchmark"])
def test_only_llm_stages_get_the_llm(tmp_path: Path, stage: str) -> None:
    env = build(tmp_path, stage=stage, llm="m-1")
    assert ("AIDER_LLM_MODEL" in env) is (stage in LLM_STAGES)
    assert env["AIDER_EVAL_MODE"] == "smoke"  # the mode reaches every stage


def test_overrides_feed_the_llm_endpoint_and_the_limit(tmp_path: Path) -> None:
    env = build(
        tmp_path,
        stage="rollout",
        llm="m",
        mode="full",
        base_env={"OPENAI_API_BASE": "http://caller", "AIDER_EVAL_LIMIT": "5"},
        overrides={"OPENAI_API_BASE": "http://override", "AIDER_EVAL_LIMIT": "2"},
    )
    assert env["AIDER_EVAL_LIMIT"] == "2"
    assert env["OPENAI_API_BASE"] == env["OPENAI_BASE_URL"] == "http://override"


def test_guided_runs_do_not_force_ci(tmp_path: Path) -> None:
    env = build(tmp_path, unattended="guided", base_env={"CI": "false"})
    assert env["CI"] == "false"


@pytest.mark.parametrize("stage", ["bootstrap", "tests", "deploy_setup", "health", "rollout", "teardown"])
def test_every_stage_gets_the_runs_port_over_an_inherited_one(tmp_path: Path, stage: str) -> None:
    env = build(tmp_path, stage=stage, port=40123, base_env={"AIDER_FSM_PORT": "9"}, bootstrap_env={})
    assert env["AIDER_FSM_PORT"] == "40123"  # a caller's own AIDER_FSM_PORT (an outer run's) is replaced


def test_a_pinned_port_in_the_overrides_is_what_stages_see(tmp_path: Path) -> None:
    assert build(tmp_path, port=8123, overrides={"AIDER_FSM_PORT": "8123"})["AIDER_FSM_PORT"] == "8123"


def test_without_a_port_none_is_set(tmp_path: Path) -> None:
    assert "AIDER_FSM_PORT" not in build(tmp_path)


def test_inputs_are_not_modified(tmp_path: Path) -> None:
    base, boot, stage, over = {"A": "1"}, {"B": "2"}, {"C": "3"}, {"D": "4"}
    build(
        tmp_path, base_env=base, bootstrap_env=boot, stage_env=stage, overrides=over, llm="m", stage="rollout"
    )
    assert (base, boot, stage, over) == ({"A": "1"}, {"B": "2"}, {"C": "3"}, {"D": "4"})




@pytest.mark.parametrize("value", ["0", "-5", "ten", "nan", "inf"])
def test_invalid_runtime_limits_are_usage_errors(value: str) -> None:
    with pytest.raises(UsageError, match=f"AIDER_FSM_MAX_CMD_SECONDS must be a positive number of seconds, got '{value}'"):
        check_overrides({"AIDER_FSM_MAX_CMD_SECONDS": value})


@pytest.mark.parametrize("value", ["", "1", "2.5"])
def test_valid_runtime_limits_pass(value: str) -> None:
    check_overrides({"AIDER_FSM_MAX_TOTAL_SECONDS": value})


@pytest.mark.parametrize("value", ["1.0e+306", "604801"])
def test_runtime_limits_beyond_seven_days_are_refused(value: str) -> None:
    with pytest.raises(UsageError, match=r"must be at most 604800 seconds \(7 days\), got '" + re.escape(value)):
        check_overrides({"AIDER_FSM_MAX_CMD_SECONDS": value})
    check_overrides({"AIDER_FSM_MAX_CMD_SECONDS": "604800"})
