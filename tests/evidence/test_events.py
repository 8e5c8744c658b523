"""The per-run logger: JSON events on disk, a console line per transition, and no global structlog changes."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import structlog

from fsm_runner.evidence.events import run_logger
from fsm_runner.evidence.layout import EVENTS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "evidence.md"


def events(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / EVENTS).read_text().splitlines()]


def test_events_are_json_lines_with_the_bound_context(tmp_path: Path) -> None:
    log, sink = run_logger(tmp_path, "run-1")
    log.bind(phase="tests", attempt=2).info("command.start", cmd="pytest", index=1)
    log.warning("plain", path=tmp_path)
    sink.close()
    first, second = events(tmp_path)
    assert first["event"] == "command.start"
    assert (first["run_id"], first["phase"], first["attempt"], first["cmd"], first["index"]) == (
        "run-1",
        "tests",
        2,
        "pytest",
        1,
    )
    assert first["level"] == "info" and float(first["ts"]) > 0
    assert (second["level"], second["path"], second["run_id"]) == ("warning", str(tmp_path), "run-1")
    assert "phase" not in second  # binding on a child does not leak into the parent


def test_events_are_appended_and_flushed_line_by_line(tmp_path: Path) -> None:
    (tmp_path / EVENTS).write_text('{"event": "earlier"}\n')
    log, sink = run_logger(tmp_path, "run-2")
    log.info("now")
    assert [e["event"] for e in events(tmp_path)] == ["earlier", "now"]  # readable before close
    sink.close()


def test_logging_after_close_is_a_no_op(tmp_path: Path) -> None:
    log, sink = run_logger(tmp_path, "run-3")
    log.info("before")
    sink.close()
    log.info("transition", source="a", dest="b")
    assert [e["event"] for e in events(tmp_path)] == ["before"]


def _transition(log: Any, **extra: Any) -> None:
    fields = {
        "trigger": "phase_done",
        "source": "tests",
        "dest": "deploy_setup",
        "status": "ok",
        "duration_s": 1.5,
    }
    log.info("transition", **{**fields, **extra})


@pytest.mark.parametrize("console", [None, False])
def test_quiet_by_default(tmp_path: Path, capfd: pytest.CaptureFixture[str], console: bool | None) -> None:
    log, sink = run_logger(tmp_path, "run-4", console=console)
    _transition(log)
    log.info("phase.start")
    sink.close()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert len(events(tmp_path)) == 2


def test_console_prints_one_line_per_transition_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, sink = run_logger(tmp_path, "run-5", console=True)
    log.info("phase.start", phase="tests")
    _transition(log)
    log.info("command.end", exit_code=0)
    _transition(
        log, source="health", dest="failed", trigger="phase_failed", status="failed", error="health: down"
    )
    sink.close()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "[fsm-runner] tests -> deploy_setup (phase_done, ok, 1.50s)",
        "[fsm-runner] health -> failed (phase_failed, failed, 1.50s)  health: down",
    ]
    assert len(events(tmp_path)) == 4


def test_structlog_global_configuration_is_untouched(tmp_path: Path) -> None:
    before, configured = structlog.get_config(), structlog.is_configured()
    log, sink = run_logger(tmp_path, "run-6", console=True)
    log.info("x")
    sink.close()
    assert structlog.get_config() == before
    assert structlog.is_configured() is configured


def test_two_runs_log_to_their_own_files(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a, a_sink = run_logger(a_dir, "A")
    b, b_sink = run_logger(b_dir, "B")
    a.info("one")
    b.info("two")
    a_sink.close()
    b_sink.close()
    assert [(e["run_id"], e["event"]) for e in events(a_dir)] == [("A", "one")]
    assert [(e["run_id"], e["event"]) for e in events(b_dir)] == [("B", "two")]


def _crash() -> None:
    raise ValueError("the phase blew up")


def test_an_exception_event_keeps_its_traceback(tmp_path: Path) -> None:
    log, sink = run_logger(tmp_path, "run-7")
    try:
        _crash()
    except ValueError:
        log.bind(phase="tests").exception("phase.crashed")
    sink.close()
    (event,) = events(tmp_path)
    assert event["event"] == "phase.crashed"
    assert "_crash" in event.get("exception", "") and "the phase blew up" in event.get("exception", "")


def test_ts_is_a_string_of_epoch_seconds_as_the_docs_say(tmp_path: Path) -> None:
    log, sink = run_logger(tmp_path, "run-1")
    log.info("something")
    sink.close()
    (event,) = events(tmp_path)
    assert isinstance(event["ts"], str) and re.fullmatch(r"\d+\.\d{6}", event["ts"])
    documented = " ".join(DOCS.read_text(encoding="utf-8").split())
    assert "`ts` (epoch seconds as a JSON string with six decimals" in documented


def test_the_events_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    log, sink = run_logger(tmp_path, "run-1")
    log.info("something")
    sink.close()
    assert stat.S_IMODE((tmp_path / EVENTS).stat().st_mode) == 0o600
