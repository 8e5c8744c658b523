"""bootstrap: prepare the repository and compute the env every later stage receives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from tests.helpers.phases import PhaseContexts, run_phase

BOOTSTRAP_REL = ".aider_fsm/bootstrap.yml"
ACTIONS_REL = ".aider_fsm/actions.yml"
TOKEN = "hf-research-0123456789"
BOOTSTRAP = """\
version: 1
cmds:
  - chmod +x tools/bin/mytool
  - mytool > tool.txt
  - echo "$BOOT_FLAG $TOOL_HOME" > boot.txt
  - echo "token $HF_TOKEN"
env:
  PATH: "tools/bin:$PATH"
  TOOL_HOME: "${BASE_DIR}/tool"
  BOOT_FLAG: "costs $$5"
  HF_TOKEN: "hf-$TEAM-0123456789"
"""
FILES = {BOOTSTRAP_REL: BOOTSTRAP, "tools/bin/mytool": "#!/bin/sh\necho mytool from $0\n"}


def bootstrap_file(cmds: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    return {BOOTSTRAP_REL: json.dumps({"version": 1, "cmds": cmds, "env": env or {}})}


def test_no_bootstrap_file_is_a_recorded_skip(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "bootstrap")
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "no .aider_fsm/bootstrap.yml"
    assert run.stage_dir is None and run.ctx.bootstrap is None and run.ctx.bootstrap_env == {}


def test_bootstrap_expands_its_env_runs_its_commands_and_records_both(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "bootstrap", files=FILES, secrets={"BASE_DIR": "/opt/base", "TEAM": "research"})
    ctx, repo = run.ctx, run.repo
    assert run.outcome.status == OK, run.outcome.error
    assert run.outcome.data == {"env_keys": ["BOOT_FLAG", "HF_TOKEN", "PATH", "TOOL_HOME"]}
    assert [c.exit_code for c in run.outcome.commands] == [0, 0, 0, 0]
    base_path = ctx.base_env["PATH"]
    assert ctx.bootstrap_env == {
        "PATH": f"{repo / 'tools/bin'}:{base_path}",  # relative entries are made absolute against the repo
        "TOOL_HOME": "/opt/base/tool",
        "BOOT_FLAG": "costs $5",
        "HF_TOKEN": TOKEN,
    }
    assert (repo / "tool.txt").read_text() == f"mytool from {repo / 'tools/bin/mytool'}\n"
    assert (repo / "boot.txt").read_text() == "costs $5 /opt/base/tool\n"
    # the expanded token is a secret from now on: masked in the output and in every evidence file
    assert (run.evidence / "cmd04_try01.stdout").read_text() == "token ***\n"
    source = repo / BOOTSTRAP_REL
    snapshot = json.loads((run.evidence / "bootstrap.snapshot.json").read_text())
    assert snapshot == {
        "path": str(source),
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "cmds": ["chmod +x tools/bin/mytool", "mytool > tool.txt", 'echo "$BOOT_FLAG $TOOL_HOME" > boot.txt',
                 'echo "token $HF_TOKEN"'],
        "env": {"PATH": "tools/bin:$PATH", "TOOL_HOME": "${BASE_DIR}/tool", "BOOT_FLAG": "costs $$5",
                "HF_TOKEN": "***"},
        "workdir": None,
        "timeout_seconds": None,
        "retries": 0,
    }
    applied = json.loads((run.evidence / "applied_env.json").read_text())
    assert applied == {**ctx.bootstrap_env, "HF_TOKEN": "***"}
    for path in run.evidence.iterdir():
        assert TOKEN not in path.read_text(), path.name
    assert ctx.bootstrap is not None and ctx.bootstrap.sha256 == snapshot["sha256"]


def test_later_stages_receive_the_bootstrap_env(make_ctx: PhaseContexts) -> None:
    pipeline = "version: 1\ntests:\n  cmds: 'echo \"$BOOT_FLAG\" > seen.txt; mytool >> seen.txt'\n"
    boot = run_phase(make_ctx, "bootstrap", pipeline, files=FILES, secrets={"BASE_DIR": "/b", "TEAM": "t"})
    assert boot.outcome.ok
    tests = run_phase(boot.ctx, "tests")
    assert tests.outcome.ok, tests.outcome.error
    assert (boot.repo / "seen.txt").read_text().splitlines() == [
        "costs $5",
        f"mytool from {boot.repo / 'tools/bin/mytool'}",
    ]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"A": "one", "B": "$A-two"}, {"A": "one", "B": "one-two"}),  # later entries see earlier ones
        ({"B": "${A}x", "A": "one"}, {"B": "base-ax", "A": "one"}),  # ... but not later ones
        ({"X": "$UNSET_NAME."}, {"X": "."}),
        ({"X": "$$A and $5"}, {"X": "$A and $5"}),
        ({"PATH": "bin::/abs"}, {"PATH": "{repo}/bin:/abs"}),
    ],
    ids=["in-order", "base-value", "unset", "literal-dollar", "path-list"],
)
def test_env_expansion(make_ctx: PhaseContexts, env: dict[str, str], expected: dict[str, str]) -> None:
    run = run_phase(make_ctx, "bootstrap", files=bootstrap_file([], env), secrets={"A": "base-a"})
    assert run.outcome.status == OK and run.outcome.commands == ()
    assert run.ctx.bootstrap_env == {k: v.replace("{repo}", str(run.repo)) for k, v in expected.items()}
    assert run.outcome.data == {"env_keys": sorted(expected)}
    assert (run.evidence / "applied_env.json").is_file() and (run.evidence / "summary.json").is_file()


def test_a_failing_bootstrap_command_quotes_its_output(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "bootstrap", files=bootstrap_file(["echo 'pip: no matching distribution' >&2; exit 1"]))
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "command" and run.outcome.error.phase == "bootstrap"
    assert run.outcome.error.message.endswith("\n  | pip: no matching distribution")
    assert (run.evidence / "applied_env.json").is_file()  # the env is recorded before the commands run


@pytest.mark.parametrize(
    "text, problem",
    [
        ("version: 1\ncmd: ['true']\n", ":2: cmd: unknown key, did you mean cmds?"),
        ("version: 2\n", ":1: version: unsupported version 2"),
        ("cmds: ['true']\n", "version: missing"),
    ],
    ids=["unknown-key", "bad-version", "no-version"],
)
def test_an_invalid_bootstrap_file_is_a_contract_error(make_ctx: PhaseContexts, text: str, problem: str) -> None:
    run = run_phase(make_ctx, "bootstrap", files={BOOTSTRAP_REL: text})
    error = run.outcome.error
    assert run.outcome.status == FAILED and error is not None
    assert error.kind == "contract" and error.phase == "bootstrap"
    assert error.evidence == str(run.repo / BOOTSTRAP_REL)
    assert error.message.startswith(str(run.repo / BOOTSTRAP_REL)) and problem in error.message
    assert run.stage_dir is None


def test_the_file_is_read_again_when_the_phase_runs(make_ctx: PhaseContexts) -> None:
    first = run_phase(make_ctx, "bootstrap", files={BOOTSTRAP_REL: "version: 2\n"})
    assert first.outcome.status == FAILED
    Path(first.repo / BOOTSTRAP_REL).write_text("version: 1\nenv: {FIXED: 'yes'}\n")  # as a repair would
    second = run_phase(first.ctx, "bootstrap")
    assert second.outcome.ok and second.ctx.bootstrap_env == {"FIXED": "yes"}


def test_actions_alone_run_once_and_are_removed(make_ctx: PhaseContexts) -> None:
    actions = (
        "version: 1\nactions:\n"
        "  - {id: write, kind: write_file, path: generated/config.txt, content: 'ready'}\n"
        "  - {id: check, kind: run_cmd, cmd: 'cat generated/config.txt > checked.txt'}\n"
    )
    run = run_phase(make_ctx, "bootstrap", files={ACTIONS_REL: actions})
    assert run.outcome.status == OK and run.outcome.data == {}
    assert (run.repo / "checked.txt").read_text() == "ready"
    assert not (run.repo / ACTIONS_REL).exists()
    records = json.loads((run.evidence / "actions" / "actions.json").read_text())
    assert [(r["id"], r["ok"]) for r in records] == [("write", True), ("check", True)]


def test_a_failing_action_fails_the_bootstrap_before_its_commands(make_ctx: PhaseContexts) -> None:
    files = {
        ACTIONS_REL: "version: 1\nactions:\n  - {id: broken, kind: run_cmd, cmd: 'exit 7'}\n",
        **bootstrap_file(["touch bootstrapped"]),
    }
    run = run_phase(make_ctx, "bootstrap", files=files)
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "action"
    assert run.outcome.error.message.startswith("action 'broken' failed: bootstrap: command 1/1 `exit 7` exit code 7")
    assert not (run.repo / "bootstrapped").exists() and not (run.repo / ACTIONS_REL).exists()
