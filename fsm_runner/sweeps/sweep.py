"""``sweep()``: every target scored for every llm, one isolated run per cell, on an executor.

Rows are appended to ``<out_dir>/results.jsonl`` as cells finish. An interrupt (Ctrl-C, SIGTERM, or
``SweepHandle.cancel()``) stops launching cells, tears the running ones down and records them as failed
("interrupted"), so the directory stays consistent and a resumed sweep runs exactly what did not succeed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, overload

from attrs import define, evolve, field

from fsm_runner.engine.lifecycle import sigterm_raises
from fsm_runner.errors import FsmRunnerError, UsageError
from fsm_runner.evidence.layout import new_run_id
from fsm_runner.sweeps.cells import CellResult, CellSpec
from fsm_runner.sweeps.executors import CellHandle, Executor, make_executor
from fsm_runner.sweeps.progress import Progress, ProgressSink
from fsm_runner.sweeps.spec import check_arguments, out_dir_problem, resolve_llm, resolve_target_spec
from fsm_runner.sweeps.store import (
    CELLS,
    RESULTS,
    append_row,
    holding,
    latest_rows,
    read_rows,
    write_manifest,
)
from fsm_runner.targets import current_contract

#: How often the loop looks at running cells (seconds).
POLL_S = 0.05
#: How long a stopped cell's run may take to tear down before its process group is killed (seconds).
STOP_GRACE_S = 30.0
#: Where a sweep's rows go when no out_dir is given (relative to the working directory).
DEFAULT_ROOT = "sweeps"


@define(frozen=True)
class SweepResult:
    """What a sweep did: its rows in cell order (targets x llms, llms in the order given), including the rows
    of cells a resume did not run again; cells an interrupt kept from starting have no row."""

    rows: tuple[CellResult, ...]
    out_dir: str
    skipped: int = 0
    duration_s: float = 0.0
    interrupted: bool = False

    @property
    def total(self) -> int:
        return len(self.rows)

    @property
    def ok(self) -> int:
        return sum(1 for row in self.rows if row.ok)

    @property
    def failed(self) -> int:
        return self.total - self.ok

    @property
    def results_path(self) -> Path:
        return Path(self.out_dir) / RESULTS

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [row.to_json() for row in self.rows],
            "out_dir": self.out_dir,
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "duration_s": self.duration_s,
            "interrupted": self.interrupted,
        }


@define(frozen=True)
class _Cell:
    index: int
    spec: CellSpec
    name: str


@define(frozen=True)
class SweepPlan:
    """A sweep with everything resolved: the cells in order, the options, where the rows go."""

    targets: tuple[str, ...]
    llms: tuple[str, ...]
    mode: str
    out_dir: Path
    executor: str
    concurrency: int | None = None
    address: str | None = None
    num_cpus: float = 1.0
    resume: bool = False
    env_overrides: tuple[tuple[str, str], ...] = ()
    repair_iters: int = 0
    repair_agent: str | None = None
    cells: tuple[_Cell, ...] = field(factory=tuple)

    def manifest(self, executor: Executor | None) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "llms": list(self.llms),
            "mode": self.mode,
            "executor": executor.name if executor is not None else self.executor,
            "concurrency": executor.capacity if executor is not None else self.concurrency,
            "address": self.address,
            "num_cpus": self.num_cpus,
            "resume": self.resume,
            "runner": _runner_version(),
        }


def _runner_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fsm-runner")
    except PackageNotFoundError:
        return "unknown"


def _slug(text: str) -> str:
    """A file-name-safe short form of a target or llm: its last path part (the cell index keeps names
    unique)."""
    tail = re.split(r"[/\\:]+", text.rstrip("/"))[-1][-40:]
    return re.sub(r"[^A-Za-z0-9._-]", "_", tail).strip("._-") or "x"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_sweep(
    targets: Sequence[str | os.PathLike[str]] | str,
    llms: Sequence[str | os.PathLike[str]] | str,
    *,
    mode: str = "smoke",
    executor: str | Executor = "local",
    concurrency: int | None = None,
    env_overrides: Mapping[str, str] | None = None,
    repair_iters: int = 0,
    repair_agent: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: float = 1.0,
    base: Path | None = None,
) -> SweepPlan:
    """Check and resolve what :func:`sweep` was given (paths relative to ``base``, default the working
    directory); raises UsageError for arguments that cannot work."""
    base = base or Path.cwd()
    target_list = [targets] if isinstance(targets, (str, os.PathLike)) else list(targets)
    llm_list = [llms] if isinstance(llms, (str, os.PathLike)) else list(llms)
    if not target_list or not llm_list:
        raise UsageError("a sweep needs at least one target and one llm")
    check_arguments(
        target_list,
        llm_list,
        mode=mode,
        concurrency=concurrency,
        repair_iters=repair_iters,
        num_cpus=num_cpus,
        env_overrides=env_overrides,
        base=base,
    )
    resolved_targets = [resolve_target_spec(os.fspath(t), base) for t in target_list]
    resolved_llms = [resolve_llm(os.fspath(m), base) for m in llm_list]
    for what, items in (("target", resolved_targets), ("llm", resolved_llms)):
        if len(set(items)) != len(items):
            twice = next(i for i in items if items.count(i) > 1)
            raise UsageError(f"{what} {twice!r} is given twice; each cell must be named once")
    if not isinstance(repair_agent, (str, type(None))):
        raise UsageError(
            "repair_agent of a sweep is a command line (a string): each cell runs in a process of its own, "
            "where an object or a callable cannot go"
        )
    if resume and out_dir is None:
        raise UsageError("resume=True needs out_dir=: the directory of the sweep to resume")
    if out_dir is None:
        stamp = new_run_id()
        out = base / DEFAULT_ROOT / stamp
    else:
        out = Path(os.path.abspath(base / Path(out_dir).expanduser()))
        if problem := out_dir_problem(out):
            raise UsageError(f"out_dir: {problem}")
    name = executor if isinstance(executor, str) else executor.name
    cells = []
    for ti, target in enumerate(resolved_targets):
        for li, llm in enumerate(resolved_llms):
            index = ti * len(resolved_llms) + li
            spec = CellSpec(
                target=target,
                llm=llm,
                mode=mode,
                env_overrides=dict(env_overrides or {}),
                repair_iters=repair_iters,
                repair_agent=repair_agent,
            )
            cells.append(_Cell(index, spec, f"{index:03d}-{_slug(target)}-{_slug(llm)}"))
    return SweepPlan(
        targets=tuple(resolved_targets),
        llms=tuple(resolved_llms),
        mode=mode,
        out_dir=out,
        executor=name,
        concurrency=concurrency,
        address=address,
        num_cpus=num_cpus,
        resume=resume,
        env_overrides=tuple(sorted((env_overrides or {}).items())),
        repair_iters=repair_iters,
        repair_agent=repair_agent,
        cells=tuple(cells),
    )


def _resumable(plan: SweepPlan, warn: Callable[[str], None] | None = None) -> dict[int, CellResult]:
    """The cells a resume does not run again: their latest row succeeded, in this mode, with the commit and
    contract hash the target has now (worked out once per target; a target that cannot be read now runs).
    ``warn`` is told of each line of results.jsonl that is not a row."""
    latest = latest_rows(read_rows(plan.out_dir, on_skip=warn))
    now: dict[str, tuple[str | None, str | None] | None] = {}
    kept: dict[int, CellResult] = {}
    for cell in plan.cells:
        row = latest.get((cell.spec.target, cell.spec.llm))
        if row is None or not row.ok or row.mode != cell.spec.mode:
            continue
        if cell.spec.target not in now:
            try:
                now[cell.spec.target] = current_contract(cell.spec.target)
            except FsmRunnerError:
                now[cell.spec.target] = None
        if now[cell.spec.target] == (row.commit, row.contract_hash):
            kept[cell.index] = row
    return kept


class _Loop:
    """One sweep's cells on one executor: launch up to capacity, collect rows, stop on request."""

    def __init__(
        self, plan: SweepPlan, executor: Executor, progress: Progress | None, start: float | None = None
    ) -> None:
        #: When the sweep started (monotonic): before its executor, whose start-up (Ray's) is part of it.
        self.start = time.monotonic() if start is None else start
        self.plan = plan
        self.executor = executor
        self.progress = progress
        self.rows: dict[int, CellResult] = {}
        self.skipped = 0
        self.interrupted = False
        self._stop = threading.Event()
        self._stop_reason = "cancelled"
        self._lock = threading.Lock()

    def request_stop(self, reason: str = "cancelled") -> None:
        self._stop_reason = reason
        self._stop.set()

    def rows_so_far(self) -> list[CellResult]:
        with self._lock:
            return [self.rows[i] for i in sorted(self.rows)]

    def _warn(self, text: str) -> None:
        if self.progress is not None:
            self.progress.note(f"warning: {text}")
        else:
            warnings.warn(text, UserWarning, stacklevel=2)

    def _record(self, cell: _Cell, row: CellResult, *, write: bool = True) -> None:
        if write:
            append_row(self.plan.out_dir, row)
        with self._lock:
            self.rows[cell.index] = row
        if write and self.progress is not None:
            self.progress.finished(row)

    def run(self) -> SweepResult:
        start = self.start
        plan = self.plan
        started = _now()
        kept = _resumable(plan, self._warn) if plan.resume else {}
        for cell in plan.cells:
            if cell.index in kept:
                self._record(cell, kept[cell.index], write=False)
        self.skipped = len(kept)
        if self.progress is not None:
            self.progress.skipped(self.skipped)
        manifest = {**plan.manifest(self.executor), "started": started, "status": "running"}
        write_manifest(plan.out_dir, manifest)
        pending = [cell for cell in plan.cells if cell.index not in kept]
        running: dict[int, tuple[_Cell, CellHandle]] = {}
        cells_dir = plan.out_dir / CELLS
        try:
            while (pending or running) and not self._stop.is_set():
                while pending and len(running) < max(1, self.executor.capacity) and not self._stop.is_set():
                    cell = pending.pop(0)
                    running[cell.index] = (cell, self.executor.start(cell.spec, cells_dir, cell.name))
                for index, (cell, handle) in list(running.items()):
                    row = handle.poll()
                    if row is not None:
                        del running[index]
                        if self.progress is not None:
                            self.progress.running = len(running)
                        self._record(cell, row)
                if self.progress is not None:
                    self.progress.tick(len(running))
                self._stop.wait(POLL_S)
        except BaseException as exc:  # KeyboardInterrupt, Interrupted (SIGTERM), or a failure to launch
            self._stop_reason = _why(exc)
            self.interrupted = True
            self._stop_all(running)
            self._finish(manifest, start, "interrupted")
            raise
        if running or pending:
            self.interrupted = True
            self._stop_all(running)
        result = self._finish(manifest, start, "interrupted" if self.interrupted else "done")
        return result

    def _stop_all(self, running: dict[int, tuple[_Cell, CellHandle]]) -> None:
        """Tear every running cell down at once (each may take its grace period), and record its row."""
        if not running:
            return
        reason = self._stop_reason

        def stop(item: tuple[_Cell, CellHandle]) -> tuple[_Cell, CellResult]:
            cell, handle = item
            return cell, handle.stop(STOP_GRACE_S)

        with _sigint_ignored(), ThreadPoolExecutor(max_workers=len(running)) as pool:
            stopped = list(pool.map(stop, running.values()))
        running.clear()
        for index, (cell, row) in enumerate(stopped):
            if self.progress is not None:  # the counts of the line that reports this row
                self.progress.running = len(stopped) - index - 1
            if not row.ok:
                row = evolve(row, error=f"interrupted ({reason}): {_cell_detail(row.error)}")
            self._record(cell, row)

    def _finish(self, manifest: dict[str, Any], start: float, status: str) -> SweepResult:
        if self.progress is not None:
            self.progress.close()
        result = SweepResult(
            rows=tuple(self.rows_so_far()),
            out_dir=str(self.plan.out_dir),
            skipped=self.skipped,
            duration_s=round(time.monotonic() - start, 3),
            interrupted=self.interrupted,
        )
        counts = {"total": len(self.plan.cells), "ok": result.ok, "failed": result.failed}
        write_manifest(
            self.plan.out_dir,
            {**manifest, "finished": _now(), "status": status, **counts, "skipped": self.skipped},
        )
        return result


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """While running cells are torn down, a second Ctrl-C must not cut that short (it would leave them
    running): it is ignored until they are gone (main thread only; elsewhere signals do not arrive)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _cell_detail(error: str | None) -> str:
    """A stopped cell's own error without its ``interrupted (SIGNAL): `` (the sweep says why it stopped)."""
    if not error:
        return "stopped"
    if error.startswith("interrupted (") and "): " in error:
        return error.split("): ", 1)[1]
    return error


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return str(exc) or "received SIGINT"
    return f"{type(exc).__name__}: {exc}"


class SweepHandle:
    """A sweep running in a background thread (``sweep(..., wait=False)``)."""

    def __init__(self, loop: _Loop, runner: Callable[[], SweepResult]) -> None:
        self._loop = loop
        self._result: SweepResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, args=(runner,), name="fsm-runner-sweep", daemon=True
        )
        self._thread.start()

    def _main(self, runner: Callable[[], SweepResult]) -> None:
        try:
            self._result = runner()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    @property
    def out_dir(self) -> Path:
        return self._loop.plan.out_dir

    def done(self) -> bool:
        return not self._thread.is_alive()

    def rows_so_far(self) -> list[CellResult]:
        """Rows of the cells finished so far (and of cells a resume kept), in cell order."""
        return self._loop.rows_so_far()

    def result(self, timeout: float | None = None) -> SweepResult:
        """Wait for the sweep; TimeoutError when it is still running after ``timeout`` seconds."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the sweep is still running after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self, timeout: float | None = None) -> SweepResult:
        """Stop launching cells, tear the running ones down, and return what the sweep did."""
        self._loop.request_stop("cancelled")
        return self.result(timeout)


@overload
def sweep(
    targets: Sequence[str | os.PathLike[str]] | str,
    llms: Sequence[str | os.PathLike[str]] | str,
    *,
    mode: str = "smoke",
    executor: str | Executor = "local",
    concurrency: int | None = None,
    env_overrides: Mapping[str, str] | None = None,
    repair_iters: int = 0,
    repair_agent: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: float = 1.0,
    wait: Literal[True] = True,
    progress: bool | ProgressSink | None = None,
) -> SweepResult: ...


@overload
def sweep(
    targets: Sequence[str | os.PathLike[str]] | str,
    llms: Sequence[str | os.PathLike[str]] | str,
    *,
    mode: str = "smoke",
    executor: str | Executor = "local",
    concurrency: int | None = None,
    env_overrides: Mapping[str, str] | None = None,
    repair_iters: int = 0,
    repair_agent: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: float = 1.0,
    wait: Literal[False],
    progress: bool | ProgressSink | None = None,
) -> SweepHandle: ...


@overload
def sweep(
    targets: Sequence[str | os.PathLike[str]] | str,
    llms: Sequence[str | os.PathLike[str]] | str,
    *,
    mode: str = "smoke",
    executor: str | Executor = "local",
    concurrency: int | None = None,
    env_overrides: Mapping[str, str] | None = None,
    repair_iters: int = 0,
    repair_agent: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: float = 1.0,
    wait: bool = True,
    progress: bool | ProgressSink | None = None,
) -> SweepResult | SweepHandle: ...


def sweep(
    targets: Sequence[str | os.PathLike[str]] | str,
    llms: Sequence[str | os.PathLike[str]] | str,
    *,
    mode: str = "smoke",
    executor: str | Executor = "local",
    concurrency: int | None = None,
    env_overrides: Mapping[str, str] | None = None,
    repair_iters: int = 0,
    repair_agent: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: float = 1.0,
    wait: bool = True,
    progress: bool | ProgressSink | None = None,
) -> SweepResult | SweepHandle:
    """Score every target for every llm, one isolated run per cell (setup, rollout when the pipeline has
    one, evaluate, close), ``concurrency`` cells at a time on ``executor`` (``"local"``, ``"ray"``, or an
    executor object, which the caller keeps and closes).

    A target is anything :func:`fsm_runner.setup` takes; an llm is a model name or a checkpoint directory.
    Relative paths are read from the working directory. Rows go to ``out_dir/results.jsonl`` as cells finish
    (default ``out_dir``: ``./sweeps/<timestamp>``); ``resume=True`` does not run again the cells whose
    latest row there succeeded in this mode with the commit and contract hash the target has now.
    A failing cell is a failed row, never an exception. ``progress=True`` reports on stderr; a callable
    receives the same lines. ``wait=False`` returns a :class:`SweepHandle` at once.
    """
    plan = plan_sweep(
        targets,
        llms,
        mode=mode,
        executor=executor,
        concurrency=concurrency,
        env_overrides=env_overrides,
        repair_iters=repair_iters,
        repair_agent=repair_agent,
        out_dir=out_dir,
        resume=resume,
        address=address,
        num_cpus=num_cpus,
    )
    return run_plan(plan, executor=executor, wait=wait, progress=progress)


def run_plan(
    plan: SweepPlan,
    *,
    executor: str | Executor | None = None,
    wait: bool = True,
    progress: bool | ProgressSink | Progress | None = None,
) -> SweepResult | SweepHandle:
    """Run a resolved sweep (what :func:`sweep` and ``fsm-runner sweep`` share)."""
    start = time.monotonic()
    own = executor is None or isinstance(executor, str)
    chosen: Executor = (
        make_executor(
            plan.executor, concurrency=plan.concurrency, address=plan.address, num_cpus=plan.num_cpus
        )
        if own
        else executor  # type: ignore[assignment]
    )
    total = len(plan.cells)
    if isinstance(progress, Progress):
        reporter: Progress | None = progress
    elif progress is True:
        reporter = Progress.to_stderr(total)
    elif callable(progress):
        reporter = Progress(total, sink=progress)
    else:
        reporter = None
    loop = _Loop(plan, chosen, reporter, start)

    def runner() -> SweepResult:
        try:
            with holding(plan.out_dir):
                return loop.run()
        finally:
            if own:
                chosen.close()

    if not wait:
        return SweepHandle(loop, runner)
    with sigterm_raises():
        return runner()
