"""bootstrap.yml and actions.yml: loading, aliases, absence, and their invalid forms."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fsm_runner.contract import Action, ActionsSpec, BootstrapSpec, load_actions, load_bootstrap
from fsm_runner.errors import ContractError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(root: Path, rel: str, text: str) -> str:
    path = root / ".aider_fsm" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path.resolve())


def test_absent_files_give_none(tmp_path: Path) -> None:
    assert load_bootstrap(tmp_path) is None
    assert load_actions(tmp_path) is None


def test_bootstrap_example(tmp_path: Path) -> None:
    (tmp_path / ".aider_fsm").mkdir()
    shutil.copy(EXAMPLES / "bootstrap.example.yml", tmp_path / ".aider_fsm" / "bootstrap.yml")
    spec = load_bootstrap(tmp_path)
    assert spec is not None
    assert spec.cmds == ("python -m venv .venv", ".venv/bin/pip install -q -r requirements.txt")
    assert spec.env == {
        "PATH": ".venv/bin:$PATH",
        "HF_HOME": "${HOME}/.cache/huggingface",
        "PRICE_TAG": "$$5",
        "BATCH_SIZE": "8",
    }
    assert (spec.workdir, spec.timeout_seconds, spec.retries) == (".", 900.0, 1)
    assert spec.path == str((tmp_path / ".aider_fsm" / "bootstrap.yml").resolve()) and len(spec.sha256) == 64


@pytest.mark.parametrize("key", ["cmds", "steps"])
def test_bootstrap_alias_and_string(tmp_path: Path, key: str) -> None:
    write(tmp_path, "bootstrap.yml", f"version: 1\n{key}: make deps\n")
    spec = load_bootstrap(tmp_path)
    assert spec is not None and spec.cmds == ("make deps",) and spec.env == {} and spec.retries == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cmds: a\n", ":1: version: missing; add `version: 1` at the top"),
        (
            "version: 1\ncmds: a\nsteps: b\n",
            ":3: steps: `cmds` and `steps` are aliases of the same setting; keep only one",
        ),
        ("version: 1\nenvs: {}\n", ":2: envs: unknown key, did you mean env?"),
        (
            "version: 1\nenv:\n  A: x\n  AIDER_FSM_PORT: '8000'\n",
            ":4: env.AIDER_FSM_PORT: AIDER_FSM_PORT is chosen by the runner (a free port per run); remove it "
            "here and read $AIDER_FSM_PORT in your commands (to pin a port for one run: --env AIDER_FSM_PORT=N)",
        ),
        ("version: 1\nworkdir: ../up\n", ":2: workdir: '../up' escapes the repository through '..'"),
        ("version: 1\nretries: false\n", ":2: retries: expected a whole number, got bool"),
        ("version: 3\n", ":1: version: unsupported version 3; this fsm-runner reads version 1 only"),
        (
            'version: 1\ncmds:\n  - "pip install \\0x"\n',
            ":3: cmds[0]: contains a NUL byte (\\0), which no command line or environment can hold; remove it",
        ),
        (
            'version: 1\nenv:\n  A: "\\ud83d"\n',
            ":3: env.A: contains '\\ud83d', a lone surrogate that is not valid Unicode text; write the "
            "character itself, in UTF-8",
        ),
        (
            "version: 1\nenv:\n  AIDER_FSM_MAX_CMD_SECONDS: '30'\n",
            ":3: env.AIDER_FSM_MAX_CMD_SECONDS: AIDER_FSM_MAX_CMD_SECONDS is not read from a contract's env; set "
            "security.max_cmd_seconds in pipeline.yml (or, for one run, export AIDER_FSM_MAX_CMD_SECONDS or pass "
            "--env AIDER_FSM_MAX_CMD_SECONDS=N)",
        ),
    ],
)
def test_bootstrap_errors(tmp_path: Path, text: str, expected: str) -> None:
    shown = write(tmp_path, "bootstrap.yml", text)
    with pytest.raises(ContractError) as info:
        load_bootstrap(tmp_path)
    assert str(info.value) == shown + expected


def test_actions_example(tmp_path: Path) -> None:
    (tmp_path / ".aider_fsm").mkdir()
    shutil.copy(EXAMPLES / "actions.example.yml", tmp_path / ".aider_fsm" / "actions.yml")
    spec = load_actions(tmp_path)
    assert spec is not None
    first, second = spec.actions
    assert first == Action(
        "write-eval-config",
        "write_file",
        path=".aider_fsm/eval_config.json",
        content='{"limit": 8}\n',
        risk_level="low",
        rationale="the evaluation needs an explicit sample cap",
    )
    assert (second.kind, second.cmd, second.timeout_seconds, second.retries) == (
        "run_cmd",
        "python -m pip install -q tqdm",
        300.0,
        1,
    )
    assert spec.path.endswith(".aider_fsm/actions.yml")


def test_empty_action_list_and_empty_content(tmp_path: Path) -> None:
    write(tmp_path, "actions.yml", "version: 1\nactions: []\n")
    assert load_actions(tmp_path) == ActionsSpec((), str((tmp_path / ".aider_fsm/actions.yml").resolve()))
    write(
        tmp_path,
        "actions.yml",
        "version: 1\nactions:\n  - {id: a, kind: write_file, path: x.txt, content: ''}\n",
    )
    spec = load_actions(tmp_path)
    assert spec is not None and spec.actions[0].content == ""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "  - {id: a, kind: write_file, content: x}\n",
            ":3: actions[0]: action 'a': kind write_file needs `path`",
        ),
        (
            "  - {id: a, kind: write_file, path: x}\n",
            ":3: actions[0]: action 'a': kind write_file needs `content`",
        ),
        ("  - {id: a, kind: run_cmd}\n", ":3: actions[0]: action 'a': kind run_cmd needs `cmd`"),
        (
            "  - {id: a, kind: run_cmd, cmd: ls, path: x}\n",
            ":3: actions[0]: action 'a': `path` is only for write_file actions",
        ),
        (
            "  - {id: a, kind: write_file, path: x, content: y, cmd: ls}\n",
            ":3: actions[0]: action 'a': `cmd` is only for run_cmd actions",
        ),
        (
            "  - {id: a, kind: write_file, path: ../x, content: y}\n",
            ":3: actions[0].path: '../x' escapes the repository through '..'",
        ),
        (
            "  - {id: a, kind: write_file, path: /etc/passwd, content: y}\n",
            ":3: actions[0].path: must be relative to the repository root, got absolute path '/etc/passwd'",
        ),
        ("  - {kind: run_cmd, cmd: ls}\n", ":3: actions[0].id: missing required key"),
        (
            "  - {id: a, kind: shell, cmd: ls}\n",
            ":3: actions[0].kind: must be one of write_file, run_cmd, got 'shell'",
        ),
        ("  - {id: a, kind: run_cmd, comand: ls}\n", ":3: actions[0].comand: unknown key, did you mean cmd?"),
        ("  - just text\n", ":3: actions[0]: expected a mapping, got str"),
        (
            "  - {id: a, kind: run_cmd, cmd: ls}\n  - {id: a, kind: run_cmd, cmd: pwd}\n",
            ":1: duplicate action id 'a'; ids must be unique",
        ),
    ],
)
def test_action_errors(tmp_path: Path, body: str, expected: str) -> None:
    shown = write(tmp_path, "actions.yml", "version: 1\nactions:\n" + body)
    with pytest.raises(ContractError) as info:
        load_actions(tmp_path)
    assert str(info.value) == shown + expected


def test_actions_must_be_a_list(tmp_path: Path) -> None:
    shown = write(tmp_path, "actions.yml", "version: 1\nactions: {id: a}\n")
    with pytest.raises(ContractError) as info:
        load_actions(tmp_path)
    assert str(info.value) == shown + ":2: actions: expected a list, got mapping"


def test_bootstrap_spec_defaults() -> None:
    spec = BootstrapSpec()
    assert (spec.cmds, spec.env, spec.workdir, spec.timeout_seconds, spec.retries) == ((), {}, None, None, 0)
