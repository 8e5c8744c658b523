"""One cell of a sweep: one target scored for one llm, as an isolated run, in a process of its own.

A cell runs in a process of its own, leading a session and a process group, so that cells cannot share a
working directory, a signal handler or a crash, and so that stopping a cell is stopping a process: SIGTERM
makes it tear its run down (the runner's own SIGTERM handling), and its process group is killed after a
grace period. The process is either a new interpreter, ``python -m fsm_runner.sweeps.cells RESULT_FILE``
with its spec as JSON on stdin (:class:`CellProcess`; the Ray executor's way), or a fork of a server that
has already imported the runner (:class:`~fsm_runner.sweeps.forks.ForkedCell`; the local executor's way,
which saves a short cell most of its start-up). Either writes its row atomically to its result file; a
process that dies before that still gives a row, failed, saying how it died and where its log is
(:class:`CellRun`, shared by both).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from attrs import define, field, validators

from fsm_runner.engine.progress import printable
from fsm_runner.errors import FsmRunnerError
from fsm_runner.evidence.atomic import write_json_atomic
from fsm_runner.evidence.records import MODES
from fsm_runner.execution.process import group_alive, kill_group, kill_tree, process_start_time

#: What a row's error keeps of a long message (the run dir has the whole of it).
ERROR_CHARS = 2000
#: Variables that give access to a Ray cluster: a cell has no use for them, so on either executor its
#: commands never see them (unless the sweep's own env sets them).
CELL_SECRET_ENV = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
#: Set to a cell's own random token in its environment, which its run's commands inherit: what finds them
#: when the cell has to be killed, wherever they moved (sessions of their own, re-parented daemons).
CELL_MARK_ENV = "FSM_RUNNER_CELL"
_CELL_MARK = re.compile(rf"{CELL_MARK_ENV}=[0-9a-f]{{24}}\Z")


def _pairs(value: Mapping[str, str] | tuple[tuple[str, str], ...] | None) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else (value or ())
    return tuple(sorted((str(k), str(v)) for k, v in items))


@define(frozen=True)
class CellSpec:
    """What a cell runs: everything a child process needs, as plain JSON-able values."""

    target: str
    llm: str
    mode: str = field(default="smoke", validator=validators.in_(MODES))
    env_overrides: tuple[tuple[str, str], ...] = field(default=(), converter=_pairs)
    repair_iters: int = field(default=0, validator=validators.ge(0))
    #: A command line for a command repair agent (a callable cannot cross a process boundary).
    repair_agent: str | None = None
    artifacts_dir: str | None = None
    sandbox: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "llm": self.llm,
            "mode": self.mode,
            "env_overrides": dict(self.env_overrides),
            "repair_iters": self.repair_iters,
            "repair_agent": self.repair_agent,
            "artifacts_dir": self.artifacts_dir,
            "sandbox": self.sandbox,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellSpec:
        """A spec read back; raises TypeError/ValueError naming the key on a shape that is not a spec."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a cell spec is a JSON object, got {type(data).__name__}")
        for key in ("target", "llm"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"key {key!r} must be a string, got {data.get(key)!r}")
        return cls(
            target=data["target"],
            llm=data["llm"],
            mode=data.get("mode", "smoke"),
            env_overrides=_pairs(data.get("env_overrides")),
            repair_iters=data.get("repair_iters", 0),
            repair_agent=data.get("repair_agent"),
            artifacts_dir=data.get("artifacts_dir"),
            sandbox=data.get("sandbox"),
        )


@define(frozen=True)
class CellResult:
    """One row of a sweep: how one target did for one llm. Frozen and JSON-able (a line of results.jsonl)."""

    target: str
    llm: str
    ok: bool
    mode: str = "smoke"
    commit: str | None = None
    score: float | None = None
    metrics: dict[str, Any] | None = field(default=None, eq=False)
    run_id: str | None = None
    run_dir: str | None = None
    contract_hash: str | None = None
    started_at: str = ""
    duration_s: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "commit": self.commit,
            "llm": self.llm,
            "mode": self.mode,
            "ok": self.ok,
            "score": self.score,
            "metrics": self.metrics,
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "contract_hash": self.contract_hash,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellResult:
        """A row read back; raises KeyError/TypeError/ValueError on a shape that is not a row."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a row is a JSON object, got {type(data).__name__}")
        for key, kind in (("target", str), ("llm", str), ("ok", bool)):
            if not isinstance(data.get(key), kind):
                raise ValueError(f"key {key!r} must be a {kind.__name__}, got {data.get(key)!r}")
        metrics = data.get("metrics")
        return cls(
            target=data["target"],
            llm=data["llm"],
            ok=data["ok"],
            mode=str(data.get("mode", "smoke")),
            commit=_optional_str(data, "commit"),
            score=_score(data.get("score")),
            metrics=dict(metrics) if isinstance(metrics, Mapping) else None,
            run_id=_optional_str(data, "run_id"),
            run_dir=_optional_str(data, "run_dir"),
            contract_hash=_optional_str(data, "contract_hash"),
            started_at=str(data.get("started_at", "")),
            duration_s=float(data.get("duration_s", 0.0)),
            error=_optional_str(data, "error"),
        )

    @property
    def key(self) -> tuple[str, str]:
        """Which cell this row is a result of."""
        return (self.target, self.llm)


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"key {key!r} must be a string or null, got {value!r}")
    return value


def _score(value: object) -> float | None:
    """A score a row can hold: a finite number (booleans are not scores), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _failed(spec: CellSpec, started_at: str, start: float, error: str, **known: Any) -> CellResult:
    return CellResult(
        target=spec.target,
        llm=spec.llm,
        mode=spec.mode,
        ok=False,
        started_at=started_at,
        duration_s=round(time.monotonic() - start, 3),
        error=error[:ERROR_CHARS],
        **known,
    )


def run_cell(spec: CellSpec) -> CellResult:
    """Run one cell in this process: setup (an isolated run) -> evaluate (which rolls ``spec.llm`` out
    first when the pipeline has a rollout) -> close. Every failure of the run is a failed row, never an
    exception; so is an interrupt (SIGINT, or SIGTERM through the runner's handler), once the run has torn
    down what it deployed: its row keeps the run's dir, id, commit and contract hash."""
    from fsm_runner.api import setup  # the sweep layer sits above the session API

    for name in CELL_SECRET_ENV:  # this is the cell's own process: what its stages inherit
        os.environ.pop(name, None)
    started_at, start = _now(), time.monotonic()
    local = Path(spec.target).is_dir()
    try:
        session = setup(
            spec.target,
            isolate=local,
            console=False,
            env_overrides=dict(spec.env_overrides),
            repair_agent=spec.repair_agent,
            artifacts_dir=spec.artifacts_dir,
            sandbox=spec.sandbox,
        )
    except FsmRunnerError as exc:
        return _failed(spec, started_at, start, f"setup: {exc}")
    except KeyboardInterrupt as exc:  # Interrupted (SIGTERM) is one too
        return _failed(spec, started_at, start, f"interrupted ({exc or 'received SIGINT'}) during setup")
    known: dict[str, Any] = {}
    try:
        with session:
            ctx = session.ctx
            known = {
                "commit": ctx.target.commit,
                "run_id": session.run_id,
                "run_dir": str(session.run_dir),
                "contract_hash": ctx.contract_hashes[-1] if ctx.contract_hashes else None,
            }
            try:
                result = session.evaluate(llm=spec.llm, mode=spec.mode, repair_iters=spec.repair_iters)
            except FsmRunnerError as exc:
                return _failed(spec, started_at, start, str(exc), **known)
    except KeyboardInterrupt as exc:  # the session has recorded it and torn its run down (closed above)
        why = f"interrupted ({exc or 'received SIGINT'}): the run stopped and tore down what it deployed"
        return _failed(spec, started_at, start, f"{why}; see {known['run_dir']}" if known else why, **known)
    if not result.ok:
        error = result.error
        text = f"{error.phase}: {error.message}" if error is not None else f"failed in {result.phase}"
        return _failed(spec, started_at, start, text, metrics=result.metrics, **known)
    return CellResult(
        target=spec.target,
        llm=spec.llm,
        mode=spec.mode,
        ok=True,
        score=_score(result.score),
        metrics=result.metrics,
        started_at=started_at,
        duration_s=round(time.monotonic() - start, 3),
        **known,
    )


def run_to_file(spec: CellSpec, result_path: Path) -> None:
    """Run the cell here and write its row atomically to ``result_path``: the body of a cell's process."""
    write_json_atomic(result_path, run_cell(spec).to_json())


def is_cell_mark(value: object) -> bool:
    """Whether ``value`` is a cell's mark as :class:`CellRun` makes it: nothing else is ever swept by."""
    return isinstance(value, str) and _CELL_MARK.match(value) is not None


def cell_mark_in(env: Mapping[str, str]) -> str | None:
    """The cell's mark an environment carries (``NAME=value``, checked), or None."""
    mark = f"{CELL_MARK_ENV}={env.get(CELL_MARK_ENV)}"
    return mark if is_cell_mark(mark) else None


class CellRun:
    """A cell running in a process of its own that leads a process group (and a session) of its own.

    ``poll()`` returns the row once the process has exited; ``stop()`` asks it to tear its run down (SIGTERM)
    and kills its group after ``grace`` seconds. A process that exits without writing its row (killed,
    crashed) gives a failed row naming its exit status and its log. How the process is started and how its
    exit is learnt is a subclass's: :class:`CellProcess` (a new interpreter) or
    :class:`~fsm_runner.sweeps.forks.ForkedCell` (a fork of a preloaded server).
    """

    def __init__(self, spec: CellSpec, workdir: Path, name: str, mark: str | None = None) -> None:
        self.spec = spec
        #: ``CELL_MARK_ENV=token``: in the environment the cell starts with (``env``), so in its commands'.
        if mark is not None and not is_cell_mark(mark):
            raise ValueError(f"not a cell's mark: {mark!r}")
        self.mark = mark or f"{CELL_MARK_ENV}={secrets.token_hex(12)}"
        self.env = {**os.environ, CELL_MARK_ENV: self.mark.partition("=")[2]}
        self.result_path = workdir / f"{name}.result.json"
        self.log_path = workdir / f"{name}.log"
        self.started_at = _now()
        self._start = time.monotonic()
        self.result_path.unlink(missing_ok=True)
        self._result: CellResult | None = None
        # One log per cell: a resumed cell's attempt follows the earlier one's, after a line of its own.
        with open(self.log_path, "ab") as log:
            header = printable(f"=== {self.started_at} {spec.target} x {spec.llm} ===")
            log.write(f"{header}\n".encode(errors="replace"))

    @property
    def pid(self) -> int:
        """The cell's process: the leader of its process group and of its session."""
        raise NotImplementedError

    def _exited(self) -> bool:
        raise NotImplementedError

    def _returncode(self) -> int | None:
        """Once exited: like ``Popen.returncode`` (negative: killed by that signal); None when unknown."""
        raise NotImplementedError

    def _wait_exit(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: for ever) for the process to exit; True once it has."""
        raise NotImplementedError

    def poll(self) -> CellResult | None:
        """The row when the process has exited, else None."""
        if self._result is None and self._exited():
            self._result = self._read()
        return self._result

    def wait(self, timeout: float | None = None) -> CellResult | None:
        if not self._wait_exit(timeout):
            return None
        return self.poll()

    def stop(self, grace: float = 30.0) -> CellResult:
        """Tear the cell down: SIGTERM (the run tears down what it deployed); after ``grace`` seconds, kill
        the cell with everything its run started."""
        started = None
        if not self._exited():
            started = process_start_time(self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            self._wait_exit(grace)
        # Still the cell's process (a forked cell is reaped by its server, which may not have said so yet):
        # its tree can be read.
        alive = started is not None and not self._exited() and process_start_time(self.pid) == started
        kill_tree(self.pid if alive else None, self.mark)
        if alive and group_alive(self.pid):
            kill_group(self.pid, grace=0)
        self._wait_exit(None)
        result = self.poll()
        assert result is not None
        return result

    def _read(self) -> CellResult:
        try:
            return CellResult.from_json(json.loads(self.result_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        code = self._returncode()
        if code is None:
            how = "exited (its exit status is unknown)"
        else:
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return _failed(
            self.spec,
            self.started_at,
            self._start,
            f"the cell's process {how} before it wrote its result; see {self.log_path}",
        )


class CellProcess(CellRun):
    """A cell in a new interpreter: ``python -m fsm_runner.sweeps.cells --watch-stdin RESULT_FILE``, its
    spec on the first line of stdin, which stays open while this object lives: if the process that started
    the cell dies without stopping it (killed, crashed), the cell stops itself."""

    def __init__(self, spec: CellSpec, workdir: Path, name: str, mark: str | None = None) -> None:
        super().__init__(spec, workdir, name, mark)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "fsm_runner.sweeps.cells", WATCH_STDIN, str(self.result_path)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: its exit says why
            self._proc.stdin.write(json.dumps(spec.to_json()).encode() + b"\n")
            self._proc.stdin.flush()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _exited(self) -> bool:
        return self._done(self._proc.poll() is not None)

    def _returncode(self) -> int | None:
        return self._proc.returncode

    def _wait_exit(self, timeout: float | None) -> bool:
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return self._done(True)

    def _done(self, exited: bool) -> bool:
        """Once it has exited its stdin is of no more use: a sweep of many cells must not keep their pipes."""
        if exited and self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        return exited


#: ``python -m fsm_runner.sweeps.cells --watch-stdin``: the spec is stdin's first line, and stdin's end means
#: the starter died: the cell then stops as its starter would have stopped it (see :meth:`CellRun.stop`).
WATCH_STDIN = "--watch-stdin"
#: How long a cell whose starter died gets to tear its run down before it is killed with all its run started.
ORPHAN_GRACE = 30.0


class _StarterWatch:
    """Stops this cell when its stdin ends (its starter died): SIGTERM to itself, so the run tears down what
    it deployed; then what carries the cell's mark is killed, once the run is down or after
    ``ORPHAN_GRACE`` seconds at the latest (then the cell itself goes too)."""

    def __init__(self) -> None:
        self.mark = cell_mark_in(os.environ)
        self.orphaned = threading.Event()
        threading.Thread(target=self._watch, name="fsm-runner-starter-watch", daemon=True).start()

    def _watch(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while os.read(0, 4096):
                pass
        self.orphaned.set()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE)  # normally the process has ended well before
        self.sweep()
        os._exit(1)

    def sweep(self) -> None:
        """Once orphaned: kill what the run started that is still around (sessions of their own)."""
        if self.orphaned.is_set():
            kill_tree(None, self.mark)


def main(argv: list[str]) -> int:
    """``python -m fsm_runner.sweeps.cells [--watch-stdin] RESULT_FILE``: run the cell described on stdin
    (with ``--watch-stdin``, on its first line; stopping when stdin ends), write its row."""
    watch = argv[:1] == [WATCH_STDIN]
    args = argv[1:] if watch else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m fsm_runner.sweeps.cells [--watch-stdin] RESULT_FILE < SPEC.json\n")
        return 2
    try:
        text = sys.stdin.buffer.readline() if watch else sys.stdin.buffer.read()
        spec = CellSpec.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"error: the cell spec on stdin is not valid: {exc}\n")
        return 2
    starter = _StarterWatch() if watch else None
    try:
        run_to_file(spec, Path(args[0]))
    finally:
        if starter is not None:
            starter.sweep()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
