"""The live side of ``run`` and ``replay``: the transition hook, the closing summary, the status line."""

from __future__ import annotations

import io
import os
import pty
import time
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.cli import live
from fsm_runner.cli.live import LiveReport, last_output_line, summary_lines
from fsm_runner.errors import EvidenceError

FAILED_RECORD: dict[str, Any] = {
    "seq": 8,
    "ts": "2026-01-01T00:00:08Z",
    "trigger": "phase_failed",
    "source": "evaluate",
    "dest": "failed",
    "outcome": {"phase": "evaluate", "status": "failed", "duration_s": 1.5, "commands": []},
    "error": {
        "kind": "command",
        "message": "exit code 3\n  | boom",
        "phase": "evaluate",
        "evidence": "e.err",
    },
    "reason": "",
}


@pytest.mark.parametrize(
    ("result", "until", "expected"),
    [
        ({"ok": True, "score": 0.5, "run_dir": "/r"}, None, ["status   ok", "score    0.5", "run dir  /r"]),
        (
            {"ok": True, "score": None, "run_dir": "/r"},
            "health",
            ["status   stopped after health", "run dir  /r"],
        ),
        (
            {"ok": False, "phase": "tests", "error": {"kind": "command", "message": "a\nb"}, "run_dir": "/r"},
            None,
            [
                "status   failed in tests",
                "score    -",
                "error    command: a",
                "         b",
                "run dir  /r",
                "next     fix the cause, then: fsm-runner replay /r",
            ],
        ),
    ],
)
def test_summary_lines(result: dict[str, Any], until: str | None, expected: list[str]) -> None:
    assert "\n".join(summary_lines(result, until=until)).splitlines() == expected


def test_last_output_line_is_from_the_newest_output_since_the_phase_began(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    old = tmp_path / "tests" / "cmd01_try01.stdout"
    old.write_text("old line\n")
    os.utime(old, (1000, 1000))
    assert last_output_line(tmp_path, since=2000) == ""
    new = tmp_path / "tests" / "cmd02_try01.stderr"
    new.write_text("first\n\x1b[31mlast \x07line\x1b[0m\n\n")
    assert last_output_line(tmp_path, since=2000) == "last line"
    assert last_output_line(tmp_path, since=0) == "last line"
    agent = tmp_path / "repair_01" / "agent_output.log"
    agent.parent.mkdir()
    agent.write_text("agent says hi\n")
    os.utime(agent, (time.time() + 10, time.time() + 10))
    assert last_output_line(tmp_path, since=2000) == "agent says hi"


@pytest.mark.parametrize("quiet", [False, True])
def test_live_report_off_a_terminal_prints_lines_only(quiet: bool) -> None:
    out, status = io.StringIO(), io.StringIO()
    with LiveReport(quiet=quiet, out=out, status=status) as live_report:
        assert live_report.ticker is None
        live_report(FAILED_RECORD)
    assert status.getvalue() == ""
    assert ("evaluate -> failed" in out.getvalue()) is not quiet
    assert ("error: command: exit code 3" in out.getvalue()) is not quiet


def test_live_report_rejects_a_record_of_the_wrong_shape() -> None:
    with (
        LiveReport(out=io.StringIO(), status=io.StringIO()) as live_report,
        pytest.raises(EvidenceError, match="transition: seq: expected a whole number"),
    ):
        live_report({**FAILED_RECORD, "seq": "8"})


def drain(fd: int) -> bytes:
    """Everything written to the terminal ``fd`` reads from, without waiting for more."""
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_live_report_on_a_terminal_ticks_and_clears_the_status_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "TICK_SECONDS", 0.02)
    leader, follower = pty.openpty()
    out = io.StringIO()
    (tmp_path / "evaluate").mkdir()
    try:
        with open(follower, "w", closefd=False) as terminal:
            with LiveReport(out=out, status=terminal) as live_report:
                assert live_report.ticker is not None
                live_report.watch(tmp_path)
                live_report({**FAILED_RECORD, "dest": "evaluate", "trigger": "phase_done", "error": None})
                (tmp_path / "evaluate" / "cmd01_try01.stdout").write_text("scoring 3/10\n")
                written = b""
                deadline = time.monotonic() + 5
                while b"scoring 3/10" not in written and time.monotonic() < deadline:
                    written += os.read(leader, 4096)
            written += drain(leader)
    finally:
        os.close(leader)
        os.close(follower)
    assert b"... evaluate " in written and b"| scoring 3/10" in written
    assert written.endswith(b"\r\x1b[K")  # the status line is gone once the report closes
    assert "evaluate -> evaluate" in out.getvalue() and "\x1b" not in out.getvalue()
