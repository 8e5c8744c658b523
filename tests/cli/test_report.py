"""What the CLI prints about runs: the runs table, the transition lines, and the number formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fsm_runner.cli.report import fmt_score, fmt_seconds, runs_table, transition_lines
from fsm_runner.evidence.records import CommandRef, ErrorInfo, Outcome, TransitionRecord
from fsm_runner.evidence.store import RunInfo

FAILED_RECORD = TransitionRecord(
    seq=8,
    ts="2026-01-01T00:00:08Z",
    trigger="phase_failed",
    source="evaluate",
    dest="failed",
    outcome=Outcome(phase="evaluate", status="failed", duration_s=1.5),
    error=ErrorInfo(kind="command", message="exit code 3\n  | boom", phase="evaluate", evidence="e.err"),
)


def record(**fields: Any) -> TransitionRecord:
    """A journal record as the journal stores it, read back through the same validation."""
    return TransitionRecord.from_json({"seq": 1, "ts": "2026-01-01T00:00:00Z", **fields}, "test record")


def test_runs_table_lines_up_every_column(tmp_path: Path) -> None:
    infos = [
        RunInfo(
            "20260101T000000Z-aaaaaa",
            tmp_path,
            "interrupted",
            failed_phase="rollout",
            score=0.25,
            duration_s=1.75,
            llm="toy",
            redrive_count=2,
            rounds=3,
        ),
        RunInfo("r2", tmp_path, "ok", score=1.0, duration_s=3725),
    ]
    header, first, second = runs_table(infos)
    assert header.split("  ")[0] == "RUN ID" and "FAILED PHASE" in header and "ROUNDS" in header
    assert first.split() == ["20260101T000000Z-aaaaaa", "interrupted", "rollout", "3", "0.25", "1.75s", "toy", "2"]
    assert second.split() == ["r2", "ok", "-", "-", "1.0", "1h02m", "-", "0"]
    assert header.index("STATUS") == first.index("interrupted") == second.index("ok")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0, "0.00s"), (1.234, "1.23s"), (61, "1m01s"), (3725, "1h02m")]
)
def test_fmt_seconds(seconds: float, text: str) -> None:
    assert fmt_seconds(seconds) == text


@pytest.mark.parametrize(
    ("score", "text"),
    [(None, "-"), (1.0, "1.0"), (0.123456, "0.1235"), (1e-7, "1e-07"), (3, "3"), (True, "true"), ("A", "A")],
)
def test_fmt_score(score: Any, text: str) -> None:
    assert fmt_score(score) == text


def test_a_failed_transition_shows_the_error_and_evidence() -> None:
    head, *rest = transition_lines(FAILED_RECORD, 12.25)
    assert head.split() == ["[", "12.2s]", "evaluate", "->", "failed", "failed", "1.50s"]
    assert rest == [
        "          error: command: exit code 3",
        "                   | boom",
        "          evidence: e.err",
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {
                "trigger": "phase_skipped",
                "source": "auth",
                "dest": "tests",
                "reason": "no auth",
                "outcome": {"phase": "auth", "status": "skipped", "duration_s": 0.0},
            },
            "auth -> tests skipped (no auth)",
        ),
        (
            {
                "trigger": "phase_done",
                "source": "evaluate",
                "dest": "repair",
                "repairs_used": 1,
                "repair_iters": 3,
                "outcome": {"phase": "evaluate", "status": "ok", "duration_s": 0.5},
            },
            "evaluate -> repair failed 0.50s (repairs used 1/3)",
        ),
        (
            {
                "trigger": "wind_down",
                "source": "health",
                "dest": "teardown",
                "reason": "session closed",
                "outcome": None,
            },
            "health -> teardown wind_down [wind_down: session closed]",
        ),
    ],
)
def test_transition_line_status_and_note(fields: dict[str, Any], expected: str) -> None:
    (line,) = transition_lines(record(**fields), 0.0)
    assert " ".join(line.split()[2:]) == expected


def test_a_repair_transition_shows_what_was_kept_and_reverted() -> None:
    repair = record(
        trigger="phase_done",
        source="repair",
        dest="evaluate",
        outcome={
            "phase": "repair",
            "status": "ok",
            "duration_s": 2.0,
            "data": {"changed": [".aider_fsm/fix.sh", "src/x.py"], "reverted": ["src/x.py"]},
        },
    )
    head, *rest = transition_lines(repair, 3.0)
    assert " ".join(head.split()[2:]) == "repair -> evaluate ok 2.00s"
    assert rest == [
        "          changed: .aider_fsm/fix.sh, src/x.py",
        "          reverted by the guardrails: src/x.py",
    ]


def test_a_cleanup_transition_does_not_repeat_the_error() -> None:
    cleanup = TransitionRecord(
        seq=9,
        ts="2026-01-01T00:00:09Z",
        trigger="cleanup",
        source="failed",
        dest="teardown",
        error=FAILED_RECORD.error,
        outcome=Outcome(
            phase="teardown", status="ok", commands=(CommandRef(index=1, attempt=1, exit_code=0),)
        ),
    )
    (line,) = transition_lines(cleanup, 1.0)
    assert "failed -> teardown" in line


def test_a_failed_cleanup_says_teardown_failed_without_repeating_the_runs_error() -> None:
    teardown_error = ErrorInfo("command", "command 1/1 `false` exit code 1", "teardown", "teardown/cmd01.stderr")
    cleanup = TransitionRecord(
        seq=9,
        ts="2026-01-01T00:00:09Z",
        trigger="cleanup",
        source="failed",
        dest="failed",
        error=FAILED_RECORD.error,
        outcome=Outcome(phase="teardown", status="failed", error=teardown_error),
    )
    _, *rest = transition_lines(cleanup, 1.0)
    assert rest == [
        "          teardown failed: command: command 1/1 `false` exit code 1",
        "          evidence: teardown/cmd01.stderr",
    ]
