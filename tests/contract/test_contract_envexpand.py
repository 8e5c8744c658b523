"""Expansion of contract env maps: ${VAR}, $VAR, $$, unknowns, ordering and PATH entries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fsm_runner.contract import expand_env, load_bootstrap

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${HOME}/x", "/home/u/x"),
        ("$HOME/x", "/home/u/x"),
        ("$HOMEx", ""),
        ("${HOME}x", "/home/ux"),
        ("cost $$5", "cost $5"),
        ("$$HOME", "$HOME"),
        ("$$$HOME", "$/home/u"),
        ("${NOPE}|$NOPE", "|"),
        ("a$", "a$"),
        ("$1 ${} ${-x} $-", "$1 ${} ${-x} $-"),
        ("plain", "plain"),
    ],
)
def test_expansion_rules(tmp_path: Path, value: str, expected: str) -> None:
    assert expand_env({"V": value}, {"HOME": "/home/u"}, tmp_path) == {"V": expected}


def test_later_entries_see_earlier_ones_and_only_spec_keys_return(tmp_path: Path) -> None:
    spec = {"A": "one", "B": "$A-two", "C": "${B}-${OTHER}", "OTHER": "late"}
    out = expand_env(spec, {"OTHER": "base", "UNRELATED": "x"}, tmp_path)
    assert out == {"A": "one", "B": "one-two", "C": "one-two-base", "OTHER": "late"}


def test_self_reference_uses_the_base_value(tmp_path: Path) -> None:
    assert expand_env({"X": "$X:more"}, {"X": "old"}, tmp_path) == {"X": "old:more"}


def test_path_relative_entries_become_absolute(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    out = expand_env({"PATH": ".venv/bin:./tools/../bin::/usr/bin:$PATH"}, {"PATH": "/bin:rel"}, tmp_path)
    assert out["PATH"] == f"{root}/.venv/bin:{root}/bin:/usr/bin:/bin:{root}/rel"


def test_only_path_is_rewritten(tmp_path: Path) -> None:
    assert expand_env({"PYTHONPATH": "src:lib"}, {}, tmp_path) == {"PYTHONPATH": "src:lib"}


def test_bootstrap_example_env_runs_a_real_tool(tmp_path: Path) -> None:
    """The expanded env of the example lets a shell find a tool in the repo-relative .venv/bin."""
    (tmp_path / ".aider_fsm").mkdir()
    shutil.copy(EXAMPLES / "bootstrap.example.yml", tmp_path / ".aider_fsm" / "bootstrap.yml")
    tool = tmp_path / ".venv" / "bin" / "hello-tool"
    tool.parent.mkdir(parents=True)
    tool.write_text('#!/bin/sh\necho "hello $PRICE_TAG $BATCH_SIZE"\n')
    tool.chmod(0o755)
    spec = load_bootstrap(tmp_path)
    assert spec is not None
    base = {"PATH": os.environ["PATH"], "HOME": "/home/someone"}
    env = expand_env(spec.env, base, tmp_path)
    assert env["HF_HOME"] == "/home/someone/.cache/huggingface"
    run = subprocess.run(
        ["bash", "-c", "hello-tool"], env={**base, **env}, cwd="/", capture_output=True, text=True, check=True
    )
    assert run.stdout == "hello $5 8\n"
