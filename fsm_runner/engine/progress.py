"""Heartbeats: while a phase runs, a periodic :class:`Progress` value for a caller that is not watching a
terminal (CI and batch logs, a training loop), so a long phase is visibly alive.

A daemon thread per phase wakes every ``interval`` seconds and reads what the run context says is running
(the command, its number, its output files); it never touches the command itself, so commands run no
slower. The thread is stopped and joined when the phase ends: nothing is reported after that.
"""

from __future__ import annotations

import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from attrs import define

from fsm_runner.errors import UsageError
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.outputs import last_output_line

if TYPE_CHECKING:
    from fsm_runner.engine.context import RunContext

#: Seconds between two heartbeats of a running phase unless the caller says otherwise.
DEFAULT_HEARTBEAT_S = 30.0
#: The environment variable that sets the interval when the caller does not (0 turns heartbeats off).
HEARTBEAT_ENV = "FSM_RUNNER_HEARTBEAT_S"
#: The shortest interval (seconds) other than 0 (off): a shorter one floods a log with heartbeats.
MIN_HEARTBEAT_S = 0.1
#: A longer last line is cut: a heartbeat is one line of a log.
LAST_LINE_CHARS = 200

#: C0 controls but newline and tab, DEL, and C1 controls: what a terminal may act on instead of showing.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Colour and cursor sequences mean nothing in a log line: dropped before the rest is escaped.
_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def escape_controls(text: str) -> str:
    """``text`` with every control character a terminal would act on shown as an escape (``\\x1b``)."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def printable(text: str) -> str:
    """``text`` on one line, everything not printable (newlines too) shown escaped: a name or an error in a
    table row or a log line, where a terminal must not act on it and a newline must not end the row."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@define(frozen=True)
class Progress:
    """One heartbeat of a running phase.

    ``elapsed_s`` counts from the start of the phase; ``command_index``/``command_count`` say which of the
    stage's commands runs (0/0 between commands or in a phase without contract commands); ``last_line`` is
    the last non-blank line the running command printed, secrets masked and control characters escaped.
    """

    run_id: str
    phase: str
    elapsed_s: float
    command_index: int = 0
    command_count: int = 0
    last_line: str = ""

    def line(self) -> str:
        """The heartbeat as one log line: ``heartbeat tests 30s command 1/2 | collected 120 items``."""
        text = f"heartbeat {self.phase} {self.elapsed_s:.0f}s"
        if self.command_count:
            text += f" command {self.command_index}/{self.command_count}"
        if self.last_line:
            text += f" | {self.last_line}"
        return text


#: What ``setup(progress=...)`` calls with each heartbeat.
ProgressHook = Callable[[Progress], None]


@define(frozen=True)
class RunningCommand:
    """The command a stage is running now: its number in the stage and the files its output goes to."""

    index: int
    total: int
    stdout: Path
    stderr: Path


def print_progress(progress: Progress) -> None:
    """``setup(progress=True)``: each heartbeat as one line on stderr."""
    sys.stderr.write(f"[fsm-runner] {progress.line()}\n")
    sys.stderr.flush()


def heartbeat_seconds(value: object = None, env: Mapping[str, str] | None = None) -> float:
    """The heartbeat interval: ``value`` when given, else ``$FSM_RUNNER_HEARTBEAT_S``, else 30 s; 0 is off.

    Raises :class:`UsageError` for anything but 0 or a finite number >= :data:`MIN_HEARTBEAT_S`; given by
    the caller it must be an int or a float (not a bool or a string), from the environment a number's text.
    """
    where = "heartbeat"
    if value is None:
        raw = (os.environ if env is None else env).get(HEARTBEAT_ENV, "").strip()
        if not raw:
            return DEFAULT_HEARTBEAT_S
        value, where = raw, HEARTBEAT_ENV
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        if isinstance(value, str) and where != HEARTBEAT_ENV:
            raise ValueError
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if problem := interval_problem(seconds):
        raise UsageError(f"{where} {problem}, got {value!r}")
    return seconds


def interval_problem(seconds: float) -> str | None:
    """What is wrong with a heartbeat interval (for the message after its name), or None when it is fine."""
    if not math.isfinite(seconds) or seconds < 0 or 0 < seconds < MIN_HEARTBEAT_S:
        return f"must be a number of seconds >= {MIN_HEARTBEAT_S:g} (0 turns heartbeats off)"
    return None


def as_hook(progress: ProgressHook | bool | None) -> ProgressHook | None:
    """``setup(progress=...)``: a callable as is, ``True`` prints to stderr, ``None``/``False`` is off."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return print_progress
    if callable(progress):
        return progress
    raise UsageError(f"progress must be a callable taking a Progress, True or None, got {progress!r}")


def last_line(command: RunningCommand | None, redactor: Redactor) -> str:
    """The last line the running command printed (of the stream written last), masked and escaped."""
    if command is None:
        return ""
    newest: tuple[int, Path] | None = None
    for path in (command.stdout, command.stderr):
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        if newest is None or mtime > newest[0]:
            newest = (mtime, path)
    if newest is None:
        return ""
    text = escape_controls(_CSI.sub("", last_output_line(newest[1], redactor)))
    return text if len(text) <= LAST_LINE_CHARS else text[: LAST_LINE_CHARS - 3] + "..."


@contextmanager
def heartbeat(ctx: RunContext, phase: str, hook: ProgressHook | None, interval: float) -> Iterator[None]:
    """Call ``hook`` every ``interval`` seconds while the block (one phase) runs; off when either is unset.

    A hook that raises is logged once and not called again for this phase: a broken progress display must
    not fail the run.
    """
    ctx.running = None  # whatever an interrupted phase left noted is not this phase's
    if hook is None or interval <= 0:
        yield
        return
    started = time.monotonic()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            running = ctx.running
            progress = Progress(
                run_id=ctx.run_id,
                phase=phase,
                elapsed_s=round(time.monotonic() - started, 3),
                command_index=running.index if running else 0,
                command_count=running.total if running else 0,
                last_line=last_line(running, ctx.redactor),
            )
            if stop.is_set():
                return
            try:
                hook(progress)
            except Exception as exc:  # the caller's display, not the run
                error = f"{type(exc).__name__}: {exc}"
                ctx.log.bind(phase=phase).warning("progress.hook_failed", error=error)
                return

    thread = threading.Thread(target=beat, name=f"fsm-runner-heartbeat-{phase}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
