"""The live report of ``run`` and ``replay``: one line per transition as it happens, a status line that
ticks on a terminal between transitions, and the closing summary block.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from fsm_runner.cli.output import terminal_text
from fsm_runner.cli.report import fmt_score, transition_lines
from fsm_runner.engine import topology
from fsm_runner.engine.lifecycle import Interrupted
from fsm_runner.engine.progress import Progress, ProgressHook
from fsm_runner.errors import FsmRunnerError
from fsm_runner.evidence.confine import open_regular
from fsm_runner.evidence.layout import AGENT_OUTPUT, STDERR_SUFFIX, STDOUT_SUFFIX
from fsm_runner.evidence.records import TransitionRecord
from fsm_runner.evidence.store import read_records, read_run
from fsm_runner.execution.outputs import complete_lines
from fsm_runner.replays import can_replay

TICK_SECONDS = 0.5
_CLEAR_LINE = "\r\x1b[K"
#: Colours, cursor moves and other controls in a command's output mean nothing on the status line: dropped.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x1f\x7f-\x9f]")
#: Printed (on stderr) when an interrupt leads to a teardown, which runs before anything else is shown.
TEARDOWN_NOTICE = "tearing down what the run started; Ctrl-C again cuts it short"
_OUTPUT_GLOBS = (f"*/*{STDOUT_SUFFIX}", f"*/*{STDERR_SUFFIX}", f"*/{AGENT_OUTPUT}")


def summary_lines(result: dict[str, Any], *, until: str | None = None) -> list[str]:
    """The closing block of ``run``/``replay``: status, score, where the evidence is, what to do next."""
    if result.get("ok"):
        status = f"stopped after {until}" if until else "ok"
    else:
        status = f"failed in {result.get('phase')}"
    lines = [f"status   {status}"]
    if not until or result.get("score") is not None:
        lines.append(f"score    {fmt_score(result.get('score'))}")
    error = result.get("error")
    if error and not result.get("ok"):
        message = str(error.get("message", "")).replace("\n", "\n         ")
        lines.append(f"error    {error.get('kind')}: {message}")
    lines.append(f"run dir  {result.get('run_dir')}")
    if not result.get("ok"):
        lines.append(f"next     fix the cause, then: fsm-runner replay {result.get('run_dir')}")
    return lines


def interrupted(exc: KeyboardInterrupt, run_dir: Path) -> Interrupted:
    """The interrupt ``run``/``replay`` report: the signal, then where the run is, the command that continues
    it and, when the signal cut the teardown short, what that left (from the journal, which notes it)."""
    signum = exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)
    lines = [str(exc) or "received SIGINT", f"run dir  {run_dir}"]
    ok, reason = can_replay(run_dir)
    lines.append(f"next     fsm-runner replay {run_dir}" if ok else f"note     cannot be replayed: {reason}")
    records = read_records(run_dir).records
    since = max((i for i, r in enumerate(records) if r.trigger == topology.REDRIVE), default=-1)
    for record in records[since + 1 :]:
        error = record.outcome.error if record.outcome is not None else None
        if record.trigger == topology.CLEANUP and error is not None and error.kind == "interrupted":
            lines.append(f"{error.message}; see {run_dir / (error.evidence or '')}")
        elif record.trigger == topology.INTERRUPT and record.source == "teardown":
            lines.append(
                f"teardown cut short: the signal came while teardown ran, so what deploy.teardown_cmds stop "
                f"may still run; see {run_dir}"
            )
    return Interrupted(signum, "\n".join(lines))


def _teardown_follows(run_dir: Path) -> bool:
    """Whether the interrupted run started services its teardown now ends (run.json is saved before the
    interrupt's transition is reported)."""
    try:
        state = read_run(run_dir)
    except FsmRunnerError:
        return False
    return state.deployed or bool(state.deploy_pgids)


def last_output_line(run_dir: Path, since: float) -> str:
    """The last non-blank complete line of the newest command output written at or after ``since`` (epoch)."""
    newest: tuple[float, Path] | None = None
    for pattern in _OUTPUT_GLOBS:
        for path in run_dir.glob(pattern):
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if mtime >= since and (newest is None or mtime > newest[0]):
                newest = (mtime, path)
    if newest is None:
        return ""
    try:
        with open_regular(newest[1]) as handle:  # a FIFO a command left there is not waited on
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # only complete lines: the start of a line still being written may be the start of a secret
    lines = [_CONTROL.sub("", line).strip() for line in complete_lines(tail)]
    return next((line for line in reversed(lines) if line), "")


class _Ticker:
    """Rewrites one status line on a terminal every :data:`TICK_SECONDS`: the running phase, its elapsed
    time and the last line its command printed, so a long phase visibly is alive."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.phase = "clone"
        self.since = time.monotonic()
        self.since_wall = time.time()
        self.run_dir: Path | None = None
        #: Masks the run's secrets in a line of output not masked yet (the command is still running).
        self.mask: Callable[[str], str] = str
        self._shown = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fsm-runner-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self.lock:
            self._clear()

    def _loop(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self.draw()

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        return max(20, columns - 1) if columns > 0 else 99  # a pty nobody sized reports 0 columns

    def draw(self) -> None:
        text = f"... {self.phase} {time.monotonic() - self.since:.1f}s"
        last = self.mask(last_output_line(self.run_dir, self.since_wall - 0.05)) if self.run_dir else ""
        if last:
            text += f"  | {terminal_text(last)}"
        with self.lock:
            if self._stop.is_set():
                return
            self.stream.write(_CLEAR_LINE + text[: self._width()])
            self.stream.flush()
            self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._shown = False

    def moved(self, phase: str, lines: list[str], out: TextIO) -> None:
        """A transition happened: clear the status line, print ``lines``, time the next phase."""
        with self.lock:
            self._clear()
            if lines:
                out.write(terminal_text("\n".join(lines)) + "\n")
                out.flush()
            self.phase = terminal_text(phase)
            self.since, self.since_wall = time.monotonic(), time.time()


class LiveReport:
    """The ``on_transition`` hook of ``run`` and ``replay``. Prints each transition (unless ``quiet``) and,
    when stderr is a terminal, keeps a status line ticking between transitions. Use it as a context
    manager so the status thread stops and the line is cleared."""

    def __init__(
        self, *, quiet: bool = False, out: TextIO | None = None, status: TextIO | None = None
    ) -> None:
        self.quiet = quiet
        self.out = out or sys.stdout
        err = status or sys.stderr
        self.err = err
        self.started = time.monotonic()
        self.ticker = _Ticker(err) if err.isatty() else None
        self.run_dir: Path | None = None
        self._closed = False

    def watch(self, run_dir: Path, mask: Callable[[str], str] = str) -> None:
        """Where the running commands write their output (known only once setup has opened the run), and
        how to mask the run's secrets in it: output is masked only once its command has ended."""
        self.run_dir = run_dir
        if self.ticker is not None:
            self.ticker.run_dir = run_dir
            self.ticker.mask = mask

    @property
    def progress(self) -> ProgressHook | None:
        """The heartbeat hook for ``setup``/``replay``: off on a terminal, where the status line ticks."""
        return self.heartbeat if self.ticker is None else None

    def heartbeat(self, progress: Progress) -> None:
        """One line per heartbeat on stderr (a CI or batch log has no status line)."""
        if self._closed:
            return
        line = f"[{time.monotonic() - self.started:6.1f}s] {progress.line()}"
        self.err.write(terminal_text(line) + "\n")
        self.err.flush()

    def __enter__(self) -> LiveReport:
        if self.ticker is not None:
            self.ticker.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        if self.ticker is not None:
            self.ticker.stop()

    def __call__(self, record: dict[str, Any]) -> None:
        parsed = TransitionRecord.from_json(record, "transition")
        lines = [] if self.quiet else transition_lines(parsed, time.monotonic() - self.started)
        if self.ticker is not None:
            self.ticker.moved(parsed.dest, lines, self.out)
        elif lines:
            self.out.write(terminal_text("\n".join(lines)) + "\n")
            self.out.flush()
        if (
            parsed.trigger == topology.INTERRUPT
            and self.run_dir is not None
            and _teardown_follows(self.run_dir)
        ):
            # the run stays silent until its teardown ends, which may take long: say what it does meanwhile
            self.err.write(f"{TEARDOWN_NOTICE}\n")
            self.err.flush()
