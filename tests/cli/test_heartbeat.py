"""``fsm-runner run --heartbeat``: a line per running phase when the output is not a terminal (CI logs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fsm_runner.cli import main
from fsm_runner.engine.progress import HEARTBEAT_ENV

#: The tests phase sleeps 4 s after printing a line; nothing else runs.
PIPELINE = """version: 1
tests:
  cmds:
    - "echo still-testing; sleep 4"
"""
HEARTBEAT = re.compile(r"^\[\s*[\d.]+s\] heartbeat tests (\d+)s command 1/1 \| still-testing$", re.M)


def _run(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != HEARTBEAT_ENV}
    return subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--until", "tests", *args],
        capture_output=True,  # pipes, not a terminal
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
    )


def _repo(tmp_path_factory: pytest.TempPathFactory, pipeline: str) -> Path:
    root = tmp_path_factory.mktemp("beats") / "repo"
    root.mkdir()
    (root / "pipeline.yml").write_text(pipeline)
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repo(tmp_path_factory, PIPELINE)


@pytest.fixture(scope="module")
def short_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1.5 s tests phase: long enough for heartbeats every 0.5 s, far shorter than the 30 s default."""
    return _repo(tmp_path_factory, PIPELINE.replace("sleep 4", "sleep 1.5"))


def test_heartbeat_lines_name_the_phase_while_it_runs(repo: Path) -> None:
    proc = _run(repo, "--heartbeat", "1")
    assert proc.returncode == 0, proc.stderr
    beats = HEARTBEAT.findall(proc.stderr)
    assert len(beats) >= 2, proc.stderr
    assert [int(b) for b in beats] == sorted(int(b) for b in beats)
    assert not HEARTBEAT.search(proc.stdout)  # stdout keeps the transitions (and --json its document)


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("--heartbeat", "0"), {}, False),
        ((), {HEARTBEAT_ENV: "0.5"}, True),
        (("--heartbeat", "0"), {HEARTBEAT_ENV: "0.5"}, False),  # the flag wins
        ((), {}, False),  # the default is 30 s: a 1.5 s phase gets none
    ],
    ids=["flag-0", "env-0.5", "flag-wins", "default"],
)
def test_the_flag_then_the_environment_set_the_interval(
    short_repo: Path, args: tuple[str, ...], env: dict[str, str], expected: bool
) -> None:
    proc = _run(short_repo, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert bool(HEARTBEAT.search(proc.stderr)) is expected, proc.stderr


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "", "0.0001", "1e-9"])
def test_a_bad_heartbeat_is_a_usage_error(
    repo: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(repo), f"--heartbeat={value}"]) == 2
    assert "--heartbeat" in capsys.readouterr().err


def test_a_bad_environment_value_is_a_usage_error(repo: Path) -> None:
    proc = _run(repo, env={HEARTBEAT_ENV: "soon"})
    assert proc.returncode == 2 and f"error: {HEARTBEAT_ENV} must be a number of seconds" in proc.stderr
