"""How a sweep reports itself while it runs: a line per finished cell with done/total, failures and an ETA;
on a terminal a live status line that is rewritten in place; in a log a heartbeat at most every 30 s."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from fsm_runner.engine.progress import printable
from fsm_runner.sweeps.cells import CellResult

#: Longest silence in a log (no TTY) while cells run.
HEARTBEAT_S = 30.0

ProgressSink = Callable[[str], None]


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def short_name(text: str, width: int = 40) -> str:
    """A target or llm as a table shows it: a path under the working directory relative to it, and at most
    ``width`` characters (the end of a longer one)."""
    if os.path.isabs(text):
        with contextlib.suppress(ValueError, OSError):
            rel = os.path.relpath(text)
            text = text if rel.startswith("..") else rel
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def cell_line(row: CellResult) -> str:
    """One finished cell: ``ok  TARGET x LLM  score=0.750  3.1s`` or ``FAILED ... error``."""
    name = printable(f"{short_name(row.target)} x {short_name(row.llm)}")
    if row.ok:
        score = "" if row.score is None else f"  score={row.score:.3f}"
        return f"ok      {name}{score}  {row.duration_s:.1f}s"
    error = (row.error or "failed").splitlines()[0] if row.error else "failed"
    return f"FAILED  {name}  {row.duration_s:.1f}s  {printable(error[:200])}"


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as text lines, each column as wide as its widest cell. Every cell is shown on one line
    (:func:`printable`): a target, an llm or a metric key with a newline must not break the table."""
    shown = [[printable(cell) for cell in row] for row in rows]
    if not shown:
        return []
    widths = [max(len(row[i]) for row in shown) for i in range(len(shown[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in shown]


class Progress:
    """Counts finished cells and says so: to ``sink`` (one line at a time), and on a terminal ``stream``
    also a live status line."""

    def __init__(
        self,
        total: int,
        *,
        sink: ProgressSink | None = None,
        stream: TextIO | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.running = 0
        self._sink = sink
        self._stream = stream
        self._live = bool(stream is not None and _isatty(stream))
        self._heartbeat_s = heartbeat_s
        self._start = time.monotonic()
        self._last_said = self._start
        self._shown = False
        self._drawn = ""
        self._lock = threading.Lock()

    @classmethod
    def to_stderr(cls, total: int, **kwargs: float) -> Progress:
        stream = sys.stderr
        return cls(total, sink=lambda line: _write(stream, line), stream=stream, **kwargs)

    def eta(self) -> float | None:
        """Seconds left at the pace so far (finished cells per second), None before the first."""
        left = self.total - self.done
        if self.done == 0 or left <= 0:
            return None if left > 0 else 0.0
        return (time.monotonic() - self._start) / self.done * left

    def status(self) -> str:
        eta = self.eta()
        parts = [f"{self.done}/{self.total} done", f"{self.failed} failed", f"{self.running} running"]
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {_clock(eta)}")
        parts.append(f"elapsed {_clock(time.monotonic() - self._start)}")
        return ", ".join(parts)

    def skipped(self, count: int) -> None:
        """Cells a resume does not run again count as done from the start."""
        with self._lock:
            self.total -= count
        if count:
            self._say(
                f"resume: {count} cell(s) already succeeded with this commit and contract; not run again"
            )

    def note(self, line: str) -> None:
        """A line about the sweep itself (a warning), said like a cell's line."""
        self._say(line)

    def finished(self, row: CellResult) -> None:
        with self._lock:
            self.done += 1
            self.failed += 0 if row.ok else 1
            line = f"[{self.done}/{self.total}] {cell_line(row)}  ({self.status()})"
        self._say(line)

    def tick(self, running: int) -> None:
        """Called while cells run: refresh the live line, or write a heartbeat when one is due."""
        self.running = running
        now = time.monotonic()
        if self._live and self._stream is not None:
            text = f"sweep: {self.status()}"
            if self._shown and text == self._drawn:  # redrawn when it changes: at most once a second
                return
            self._clear()
            self._stream.write(text)
            self._stream.flush()
            self._shown = True
            self._drawn = text
        elif now - self._last_said >= self._heartbeat_s and running:
            self._say(f"sweep: {self.status()}")

    def close(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._shown and self._stream is not None:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()
            self._shown = False

    def _say(self, line: str) -> None:
        self._last_said = time.monotonic()
        if self._sink is None:
            return
        self._clear()
        self._sink(line)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _write(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()
