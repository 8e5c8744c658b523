"""Run lookup and report formatting of the CLI, on run directories written by hand."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.cli_live import LiveReport, last_output_line, summary_lines
from fsm_runner.cli_report import (
    fmt_score,
    fmt_seconds,
    list_runs,
    resolve_run,
    run_info,
    runs_table,
    transition_lines,
)
from fsm_runner.errors import UsageError

FAILED_RECORD: dict[str, Any] = {
    "seq": 8,
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


def make_run(
    root: Path,
    run_id: str,
    *,
    status: str = "ok",
    started: float | None = None,
    durations: tuple[float, ...] = (0.5, 1.25),
    **run: Any,
) -> Path:
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, "status": status, **run}))
    records = [{"seq": i + 1, "outcome": {"duration_s": d}} for i, d in enumerate(durations)]
    (run_dir / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if started is not None:
        (run_dir / "events.jsonl").write_text(
            json.dumps({"event": "phase.start", "ts": f"{started:.6f}"}) + "\n"
        )
    return run_dir


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo" / ".aider_fsm" / "artifacts"
    make_run(root, "20260101T000000Z-ffffff", started=100.0)
    make_run(root, "20260101T000000Z-000000", started=100.5)  # same second, started later
    make_run(root, "20251231T235959Z-abcdef", started=99.0)
    (root / "scaffold-20260101T000000Z-aaaaaa").mkdir()  # not a run: no run.json
    return tmp_path / "repo"


def test_runs_are_listed_newest_first_even_within_one_second(repo: Path):
    names = [p.name for p in list_runs(repo / ".aider_fsm" / "artifacts")]
    assert names == ["20260101T000000Z-000000", "20260101T000000Z-ffffff", "20251231T235959Z-abcdef"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("latest", "20260101T000000Z-000000"),
        ("20251231T235959Z-abcdef", "20251231T235959Z-abcdef"),
        ("20251231", "20251231T235959Z-abcdef"),  # a unique prefix
        ("20260101T000000Z-ff", "20260101T000000Z-ffffff"),
    ],
)
def test_resolve_run_by_id_prefix_or_latest(repo: Path, spec: str, expected: str):
    assert resolve_run(spec, repo=repo).name == expected


def test_resolve_run_by_path_and_custom_out_dir(repo: Path, tmp_path: Path):
    path = repo / ".aider_fsm" / "artifacts" / "20251231T235959Z-abcdef"
    assert resolve_run(str(path), repo=tmp_path / "elsewhere") == path
    (repo / "pipeline.yml").write_text("version: 1\nartifacts:\n  out_dir: evidence\n")
    make_run(repo / "evidence", "20270101T000000Z-123456")
    assert resolve_run("latest", repo=repo).name == "20270101T000000Z-123456"
    (repo / "pipeline.yml").write_text("version: 1\nartifacts: {out_dirr: x}\n")  # broken: default location
    assert resolve_run("latest", repo=repo).name == "20260101T000000Z-000000"
    assert (
        resolve_run("latest", repo=tmp_path, artifacts_dir=repo / "evidence").name
        == "20270101T000000Z-123456"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("20260101T000000Z", "is ambiguous"),
        ("nope", "no run 'nope' under"),
    ],
)
def test_resolve_run_errors_say_what_to_do(repo: Path, spec: str, message: str):
    with pytest.raises(UsageError, match=message):
        resolve_run(spec, repo=repo)


def test_latest_without_runs(tmp_path: Path):
    with pytest.raises(UsageError, match="no runs under .*start one with `fsm-runner run"):
        resolve_run("latest", repo=tmp_path)


def test_run_info_reads_status_failed_phase_score_and_duration(tmp_path: Path):
    run_dir = make_run(
        tmp_path,
        "r1",
        status="interrupted",
        last_error={"kind": "interrupted", "message": "SIGTERM", "phase": "rollout"},
        outputs={"evaluate": {"metrics": {"score": 0.25}}},
        llm="toy",
        redrive_count=2,
    )
    info = run_info(run_dir)
    assert (info.status, info.failed_phase, info.score, info.redrive_count) == (
        "interrupted",
        "rollout",
        0.25,
        2,
    )
    assert info.duration_s == pytest.approx(1.75)
    row = runs_table([info])[1].split()
    assert row == ["r1", "interrupted", "rollout", "0.25", "1.75s", "toy", "2"]


def test_a_running_run_whose_process_is_gone_is_stale(tmp_path: Path):
    run_dir = make_run(tmp_path, "r1", status="running")
    (run_dir / ".lock").write_text(str(os.getpid()))
    assert run_info(run_dir).status == "running"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (run_dir / ".lock").write_text(dead.stdout.strip())
    assert run_info(run_dir).status == "stale"
    (run_dir / "run.json").write_text("{torn")
    assert run_info(run_dir).status == "unreadable"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0, "0.00s"), (1.234, "1.23s"), (61, "1m01s"), (3725, "1h02m")]
)
def test_fmt_seconds(seconds: float, text: str):
    assert fmt_seconds(seconds) == text


@pytest.mark.parametrize(
    ("score", "text"), [(None, "-"), (1.0, "1.0"), (0.123456, "0.1235"), (3, "3"), (True, "true"), ("A", "A")]
)
def test_fmt_score(score: Any, text: str):
    assert fmt_score(score) == text


def test_a_failed_transition_shows_the_error_and_evidence():
    head, *rest = transition_lines(FAILED_RECORD, 12.25)
    assert head.split() == ["[", "12.2s]", "evaluate", "->", "failed", "failed", "1.50s"]
    assert rest == [
        "          error: command: exit code 3",
        "                   | boom",
        "          evidence: e.err",
    ]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {
                "trigger": "phase_skipped",
                "source": "auth",
                "dest": "tests",
                "reason": "no auth",
                "outcome": {"status": "skipped", "duration_s": 0.0},
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
                "outcome": {"status": "ok", "duration_s": 0.5},
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
def test_transition_line_status_and_note(record: dict[str, Any], expected: str):
    (line,) = transition_lines(record, 0.0)
    assert " ".join(line.split()[2:]) == expected


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
def test_summary_lines(result: dict[str, Any], until: str | None, expected: list[str]):
    assert "\n".join(summary_lines(result, until=until)).splitlines() == expected


def test_last_output_line_is_from_the_newest_output_since_the_phase_began(tmp_path: Path):
    (tmp_path / "tests").mkdir()
    old = tmp_path / "tests" / "cmd01_try01.stdout"
    old.write_text("old line\n")
    os.utime(old, (1000, 1000))
    assert last_output_line(tmp_path, since=2000) == ""
    new = tmp_path / "tests" / "cmd02_try01.stderr"
    new.write_text("first\n\x1b[31mlast \x07line\x1b[0m\n\n")
    assert last_output_line(tmp_path, since=2000) == "last line"
    assert last_output_line(tmp_path, since=0) == "last line"


@pytest.mark.parametrize("quiet", [False, True])
def test_live_report_off_a_terminal_prints_lines_only(quiet: bool):
    out, status = io.StringIO(), io.StringIO()
    with LiveReport(quiet=quiet, out=out, status=status) as live:
        assert live.ticker is None
        live(FAILED_RECORD)
    assert status.getvalue() == ""
    assert ("evaluate -> failed" in out.getvalue()) is not quiet
