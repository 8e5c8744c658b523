"""Reproducers run through a real stage. Stub programs named ``sudo``, ``rm``, ``mv`` and ``chroot`` come first
on PATH and only record that they ran, so nothing real can run; a refused command leaves no record. The
same stubs prove the expansion side: a path the stage env makes safe runs (the stub records the expanded
path), through the stage runner and through a whole phase with the contract's stage env."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsm_runner.engine.outcome import FAILED, OK
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.commands import StageRun, run_commands
from fsm_runner.execution.policy import SecurityPolicy
from tests.helpers.phases import PhaseContexts, phase_contexts, run_phase

STUBS = ("sudo", "rm", "mv", "chroot")


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    """A directory of stub programs; each appends its argv to ``ran/<name>`` and prints it."""
    bin_dir, log = tmp_path / "stubs", tmp_path / "ran"
    bin_dir.mkdir()
    log.mkdir()
    for name in STUBS:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}/{name}"\necho "stub {name} $*"\n')
        stub.chmod(0o755)
    return bin_dir


def stage(tmp_path: Path, stubs: Path, cmd: str, policy: SecurityPolicy, **env: str) -> StageRun:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    return run_commands(
        [cmd], stage="tests", cwd=repo, env={"PATH": f"{stubs}:/usr/bin:/bin", **env},
        out_dir=tmp_path / "evidence", timeout=20.0, retries=0, total_budget=None, policy=policy,
        redactor=Redactor(),
    )  # fmt: skip


def ran(tmp_path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (tmp_path / "ran").iterdir()}


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        ("$'sudo' id", "safe-mode denylist: sudo"),
        ("{sudo,id}", "safe-mode denylist: sudo"),
        ("sudo${IFS}id", "safe-mode denylist: sudo"),
        ("bash <<< 'sudo id'", "safe-mode denylist: sudo"),
        ("bash <<EOF\nsudo id\nEOF", "safe-mode denylist: sudo"),
        ("echo sudo ls | bash", "safe-mode denylist: sudo"),
        ("function f { sudo id; }; f", "safe-mode denylist: sudo"),
        ("find . -maxdepth 0 -exec sudo id \\;", "safe-mode denylist: sudo"),
        ("chroot / id", "safe-mode denylist: chroot"),
        ("rm -rf /{etc,usr}", "hard-deny: destroys /etc"),
        ("mv -t /tmp/x /etc", "hard-deny: destroys /etc"),
        ("rm -rf ${UNSET:-}/", "hard-deny: destroys /"),
    ],
)
def test_a_refused_reproducer_never_runs_in_a_stage(tmp_path: Path, stubs: Path, cmd: str, reason: str) -> None:
    run = stage(tmp_path, stubs, cmd, SecurityPolicy())
    assert not run.ok and run.last is not None
    assert run.last.blocked is not None and run.last.blocked.startswith(reason), run.last.blocked
    assert run.last.pgid is None and run.last.exit_code is None  # never started
    assert ran(tmp_path) == {}, "a stub ran: the command was not refused before it started"
    recorded = json.loads(Path(run.last.result_path).read_text())
    assert recorded["blocked"] == run.last.blocked


@pytest.mark.parametrize(
    "cmd", ["$'rm' -rf /", "bash <<< 'rm -rf /etc'", "echo rm -rf / | bash", "chroot / rm -rf /usr"]
)
def test_the_hard_deny_holds_in_a_system_mode_stage(tmp_path: Path, stubs: Path, cmd: str) -> None:
    run = stage(tmp_path, stubs, cmd, SecurityPolicy(mode="system"))
    assert run.last is not None and (run.last.blocked or "").startswith("hard-deny: destroys /")
    assert ran(tmp_path) == {}


def test_the_stubs_do_run_what_is_allowed(tmp_path: Path, stubs: Path) -> None:
    """The control: the same stage runs the stubs when the policy lets a command through."""
    run = stage(tmp_path, stubs, "{sudo,id} && rm -rf build && mv a b", SecurityPolicy(mode="system"))
    assert run.ok, run.last
    assert ran(tmp_path) == {"sudo": "sudo id\n", "rm": "rm -rf build\n", "mv": "mv a b\n"}


def test_a_path_the_stage_env_sets_is_judged_expanded(tmp_path: Path, stubs: Path) -> None:
    venv = tmp_path / "repo" / ".venv"
    run = stage(tmp_path, stubs, 'rm -rf "$VIRTUAL_ENV/lib"', SecurityPolicy(), VIRTUAL_ENV=str(venv))
    assert run.ok, run.last
    assert ran(tmp_path) == {"rm": f"rm -rf {venv}/lib\n"}


def test_a_path_the_stage_env_leaves_empty_is_refused_with_how_to_write_it(tmp_path: Path, stubs: Path) -> None:
    run = stage(tmp_path, stubs, 'rm -rf "$VIRTUAL_ENV/lib"', SecurityPolicy())
    assert run.last is not None and run.last.blocked == (
        "hard-deny: destroys /lib (rm -rf /lib); VIRTUAL_ENV is not set in the stage env: "
        "write a literal path inside the repository"
    )
    assert ran(tmp_path) == {}


@pytest.fixture
def make_ctx(tmp_path: Path):  # type: ignore[no-untyped-def]
    with phase_contexts(tmp_path) as made:
        yield made


def test_a_phase_checks_its_commands_with_the_contract_stage_env(
    make_ctx: PhaseContexts, tmp_path: Path, stubs: Path
) -> None:
    """The tests phase: tests.env sets VIRTUAL_ENV inside the repository and puts the stubs first on PATH."""
    repo = tmp_path / "repo1"  # where the first context writes its repository
    env = {"VIRTUAL_ENV": str(repo / ".venv"), "PATH": f"{stubs}:/usr/bin:/bin"}
    pipeline = "version: 1\ntests:\n  cmds: " + json.dumps(['rm -rf "$VIRTUAL_ENV/lib"', "sudo${IFS}id"])
    pipeline += "\n  env: " + json.dumps(env) + "\n"
    run = run_phase(make_ctx, "tests", pipeline)
    assert run.repo == repo
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "blocked" and "safe-mode denylist: sudo" in run.outcome.error.message
    assert ran(tmp_path) == {"rm": f"rm -rf {repo}/.venv/lib\n"}  # the first ran, expanded; sudo never did

    run = run_phase(make_ctx, "tests", pipeline.replace("sudo${IFS}id", "true"))
    assert run.outcome.status == OK
