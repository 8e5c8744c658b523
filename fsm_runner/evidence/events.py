"""Structured events for a run, without touching the host application's logging configuration.

Each run gets its own logger built with ``structlog.wrap_logger``: JSON lines to ``events.jsonl`` and, when
asked, one readable line per transition on stderr. ``structlog.configure`` is never called.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.atomic import EVIDENCE_MODE
from fsm_runner.evidence.layout import EVENTS
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.typing import EventLogger


class RunSink:
    """The logger structlog's last processor hands events to."""

    def __init__(self, path: Path, console: TextIO | None) -> None:
        self.path = path
        self.console = console
        self.redactor = Redactor()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, EVIDENCE_MODE)
            self._file = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise EvidenceError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write(self, line: str, event: dict[str, Any]) -> None:
        if not self._file.closed:
            try:
                self._file.write(line + "\n")
            except OSError:
                # Events are best effort (the journal is the durable record): a full disk must not
                # turn a log line into a crash, least of all during teardown.
                self._drop()
        if self.console is not None and event.get("event") == "transition":
            self.console.write(_console_line(event) + "\n")
            self.console.flush()

    info = debug = warning = error = critical = msg = write

    def render(
        self, _: Any, method: str, event: MutableMapping[str, Any]
    ) -> tuple[tuple[()], dict[str, Any]]:
        """Last processor: secrets are masked before an event reaches the file or the terminal."""
        event.setdefault("level", method)
        clean = self.redactor.scrub(dict(event))
        line = json.dumps(clean, default=str, separators=(",", ":"))
        return (), {"line": line, "event": clean}

    def _drop(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()

    def close(self) -> None:
        self._drop()


def _console_line(event: dict[str, Any]) -> str:
    status = event.get("status", "")
    extra = f"  {event['error']}" if event.get("error") else ""
    return (
        f"[fsm-runner] {event.get('source')} -> {event.get('dest')} "
        f"({event.get('trigger')}, {status}, {event.get('duration_s', 0):.2f}s){extra}"
    )


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["ts"] = f"{time.time():.6f}"
    return event


def run_logger(run_dir: Path, run_id: str, *, console: bool | None = None) -> tuple[EventLogger, RunSink]:
    """A bound logger for one run; ``console=None`` means quiet (library default)."""
    stream = sys.stderr if console else None
    sink = RunSink(run_dir / EVENTS, stream)
    logger = structlog.wrap_logger(
        sink,
        processors=[_timestamp, structlog.processors.format_exc_info, sink.render],
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    return cast(EventLogger, logger.bind(run_id=run_id)), sink
