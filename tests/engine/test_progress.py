"""Heartbeats of a running phase from Python: ``setup(progress=..., heartbeat_s=...)``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner import Progress, UsageError
from fsm_runner.cli.live import last_output_line as live_last_line
from fsm_runner.engine.progress import HEARTBEAT_ENV, heartbeat_seconds
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.outputs import last_output_line as command_last_line

#: A tests phase of two commands; the second prints a colour sequence, a terminal title and a secret, then
#: holds long enough for a few heartbeats.
PIPELINE = """version: 1
tests:
  cmds:
    - echo first
    - "echo warming up; printf '\\\\033[32mgreen\\\\033]0;title\\\\007 %s\\\\n' \\"$HB_API_TOKEN\\"; sleep 1.3"
"""
SECRET = "s3cr3t-value-4711"


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "pipeline.yml").write_text(PIPELINE)
    return repo


def test_a_callable_hears_the_running_phase_its_command_and_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HB_API_TOKEN", SECRET)
    seen: list[Progress] = []
    threads: set[str] = set()

    def hook(progress: Progress) -> None:
        threads.add(threading.current_thread().name)
        seen.append(progress)

    with fsm_runner.setup(_repo(tmp_path), progress=hook, heartbeat_s=0.25) as sess:
        result = sess.advance("tests")
        assert result.ok, result.error
    count = len(seen)
    time.sleep(0.6)
    assert len(seen) == count, "a heartbeat came after the phase ended"
    assert count >= 3, seen
    assert {p.phase for p in seen} == {"tests"} and {p.run_id for p in seen} == {sess.run_id}
    late = [p for p in seen if p.command_index == 2]
    assert late and all(p.command_count == 2 for p in late)
    assert [p.elapsed_s for p in seen] == sorted(p.elapsed_s for p in seen)
    shown = late[-1].last_line
    assert shown == "green\\x1b]0;title\\x07 ***", shown  # masked, colour dropped, controls escaped
    assert SECRET not in "".join(p.line() for p in seen)
    assert threads and threading.main_thread().name not in threads


def test_progress_true_prints_heartbeats_on_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with fsm_runner.setup(_repo(tmp_path), progress=True, heartbeat_s=0.4) as sess:
        assert sess.advance("tests").ok
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("[fsm-runner] heartbeat tests ")]
    assert len(lines) >= 2 and "command 2/2 | " in lines[-1], err
    assert "heartbeat" not in out


def test_no_progress_or_a_zero_interval_means_no_heartbeat(tmp_path: Path) -> None:
    seen: list[Progress] = []
    with fsm_runner.setup(_repo(tmp_path), progress=seen.append, heartbeat_s=0) as sess:
        assert sess.advance("tests").ok
    assert seen == []


def test_a_failing_hook_does_not_fail_the_run(tmp_path: Path) -> None:
    calls: list[Progress] = []

    def broken(progress: Progress) -> None:
        calls.append(progress)
        raise RuntimeError("display gone")

    with fsm_runner.setup(_repo(tmp_path), progress=broken, heartbeat_s=0.2) as sess:
        assert sess.advance("tests").ok
    assert len(calls) == 1  # not called again in that phase
    events = (sess.run_dir / "events.jsonl").read_text()
    assert '"progress.hook_failed"' in events and "display gone" in events


@pytest.mark.parametrize("value", [-1, "abc", float("nan"), float("inf"), True, "1", 0.0001, 1e-9])
def test_a_bad_interval_or_hook_is_a_usage_error(tmp_path: Path, value: object) -> None:
    with pytest.raises(UsageError, match="heartbeat must be a number of seconds >= 0"):
        fsm_runner.setup(_repo(tmp_path), progress=True, heartbeat_s=value)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="progress must be a callable"):
        fsm_runner.setup(_repo(tmp_path), progress="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "env", "expected"),
    [(None, None, 30.0), (None, "2.5", 2.5), (None, "0", 0.0), (1, "2.5", 1.0), (0, "5", 0.0)],
)
def test_the_interval_comes_from_the_caller_then_the_environment(
    given: float | None, env: str | None, expected: float
) -> None:
    assert heartbeat_seconds(given, {HEARTBEAT_ENV: env} if env is not None else {}) == expected


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(UsageError, match=f"{HEARTBEAT_ENV} must be a number of seconds >= 0.*'-3'"):
        heartbeat_seconds(None, {HEARTBEAT_ENV: "-3"})


def test_an_environment_interval_below_a_tenth_of_a_second_is_refused() -> None:
    with pytest.raises(UsageError, match=f"{HEARTBEAT_ENV} must be a number of seconds >= 0.1.*'1e-9'"):
        heartbeat_seconds(None, {HEARTBEAT_ENV: "1e-9"})
    assert heartbeat_seconds(None, {HEARTBEAT_ENV: "0.1"}) == 0.1


TOKEN = "sk-SECRETVALUE-0123456789"


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("x" * 30 + TOKEN[:6], ""),
        ("first line\n" + "x" * 30 + TOKEN[:6], "first line"),
        ("first line\n" + "x" * 30 + TOKEN + "\n", "x" * 30 + "***"),
    ],
)
def test_the_last_line_shown_is_the_last_complete_one_masked(tmp_path: Path, written: str, shown: str) -> None:
    out = tmp_path / "tests" / "cmd01_try01.stdout"
    out.parent.mkdir()
    out.write_text(written)
    redactor = Redactor((TOKEN,))
    assert command_last_line(out, redactor) == shown
    assert redactor.mask(live_last_line(tmp_path, 0)) == shown
