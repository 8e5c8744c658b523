"""The ray executor: each cell of a sweep is a Ray task, on a local Ray cluster or on an existing one.

The task does what the local executor does, on the node Ray picks: it starts the cell as a
:class:`~fsm_runner.sweeps.cells.CellProcess` there, waits for it and returns its row. Cancelling the task
(``ray.cancel``) interrupts it, and the task stops its cell (the run tears down what it deployed) before it
returns, so a stopped sweep leaves nothing running on any node. Rows come back to the driver; the evidence of
each run stays on the node where the cell ran.

Ray is an optional extra: it is imported here only, when a ray executor is made (never by
``import fsm_runner``).
Ray's authentication token (on by default for local clusters in recent Ray releases) is Ray's own business:
the executor never reads it, and the cells never see it in their environment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsm_runner.errors import FsmRunnerError, UsageError
from fsm_runner.evidence.atomic import write_json_atomic
from fsm_runner.execution.process import (
    group_alive,
    kill_group,
    kill_tree,
    process_start_time,
    running_group,
)
from fsm_runner.sweeps.cells import (
    CELL_SECRET_ENV,
    CellProcess,
    CellResult,
    CellSpec,
    _failed,
    _now,
    is_cell_mark,
)

if TYPE_CHECKING:
    from fsm_runner.sweeps.executors import CellHandle, Executor

INSTALL = "pip install 'fsm-runner[ray]'"
#: How long a cancelled task gives its cell to tear its run down before the cell's group is killed.
TASK_STOP_GRACE = 30.0
#: How long a handle's ``stop(grace)`` waits, after the grace, for a cell on this machine to end before it
#: kills the cell's group.
FORCE_WAIT = 5.0
#: How often a task checks on its cell (and so how soon it notices a cancel).
POLL_SECONDS = 0.2
#: Variables that give access to the Ray cluster: a cell has no use for them, so it never gets them.
RAY_SECRET_ENV = CELL_SECRET_ENV
#: What Ray sets for its worker process itself; a cell is not a Ray worker. (``OMP_NUM_THREADS``, which Ray
#: sets to the task's CPUs, stays: it is what ``num_cpus`` asks for.)
RAY_WORKER_ENV = ("RAY_JOB_ID", "RAY_RAYLET_PID", "RAY_LD_PRELOAD_ON_WORKERS", "SPT_NOENV")


def import_ray() -> Any:
    """The ``ray`` module, or a UsageError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"the ray executor needs Ray, which is not installed here: {INSTALL}") from exc
    return ray


@contextlib.contextmanager
def _spawn_context(cwd: str) -> Iterator[None]:
    """Where and with what environment a cell starts on a node: in the driver's working directory when the
    node has it (relative targets and checkpoint paths then mean what they mean to the driver), without the
    cluster's credentials and without what Ray sets for its workers. A Ray worker runs one task at a time,
    so changing its process state around the spawn is safe; both are restored."""
    here = os.getcwd()
    drop = [*RAY_SECRET_ENV, *RAY_WORKER_ENV]
    if os.environ.get("PYTHONBREAKPOINT", "").startswith("ray."):  # Ray's remote debugger
        drop.append("PYTHONBREAKPOINT")
    saved = {name: os.environ.pop(name) for name in drop if name in os.environ}
    try:
        if os.path.isdir(cwd):
            os.chdir(cwd)
        yield
    finally:
        os.chdir(here)
        os.environ.update(saved)


def _group_file(workdir: Path, name: str) -> Path:
    """The record of a cell's process group while it runs: what the driver kills if the task is lost."""
    return workdir / f"{name}.group.json"


def record_cell(proc: CellProcess, workdir: Path, name: str) -> Path:
    """Write the record :func:`kill_lost_cell` reads: the cell's group, its leader's start, its mark."""
    group = _group_file(workdir, name)
    start = process_start_time(proc.pid)
    write_json_atomic(group, {"pgid": proc.pid, "leader_start": start, "running": True, "mark": proc.mark})
    return group


def kill_lost_cell(workdir: Path, name: str, wait: float) -> None:
    """A task that did not answer in time may still be stopping its cell, or may be gone. When the cell runs
    on this machine, its record names its group and its mark: give it ``wait`` seconds to end, then kill it
    with everything its run started (its commands lead sessions of their own: the group is not enough)."""
    path = _group_file(workdir, name)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    mark = doc.get("mark") if isinstance(doc, dict) else None
    pgid = running_group(doc)
    if pgid is not None and pgid != os.getpgrp():
        deadline = time.monotonic() + wait
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
    pgid = running_group(doc)  # read again: the cell may have ended meanwhile, and its pid been reused
    if pgid == os.getpgrp():
        pgid = None
    kill_tree(pgid, mark if is_cell_mark(mark) else None)
    if pgid is not None:
        kill_group(pgid, grace=0)
    path.unlink(missing_ok=True)


def run_cell_task(spec_data: dict[str, Any], workdir: str, name: str, cwd: str) -> dict[str, Any]:
    """The body of a cell's Ray task (it runs on a node of the cluster): the cell's row, as JSON."""
    spec = CellSpec.from_json(spec_data)
    where = Path(workdir)
    if not where.is_dir():  # another node: the driver's directory is not here
        where = Path(tempfile.mkdtemp(prefix="fsm-runner-cell-"))
    with _spawn_context(cwd):
        proc = CellProcess(spec, where, name)
    group = record_cell(proc, where, name)
    try:
        row = proc.wait(POLL_SECONDS)
        while row is None:
            row = proc.wait(POLL_SECONDS)
    except KeyboardInterrupt:  # ray.cancel(): the cell tears its run down, and its row still comes back
        row = proc.stop(TASK_STOP_GRACE)
    except BaseException:
        proc.stop(TASK_STOP_GRACE)
        group.unlink(missing_ok=True)
        raise
    group.unlink(missing_ok=True)
    return row.to_json()


class RayCellHandle:
    """A cell running as a Ray task; ``poll()`` never blocks, ``stop()`` is bounded."""

    def __init__(self, ray: Any, ref: Any, spec: CellSpec, workdir: Path, name: str) -> None:
        self._ray = ray
        self._ref = ref
        self.spec = spec
        self._workdir = workdir
        self._name = name
        self.started_at = _now()
        self._start = time.monotonic()
        self._row: CellResult | None = None

    def poll(self) -> CellResult | None:
        """The row once the task has finished, else None."""
        if self._row is None:
            ready, _ = self._ray.wait([self._ref], timeout=0)
            if ready:
                self._row = self._collect()
        return self._row

    def stop(self, grace: float = 30.0) -> CellResult:
        """Cancel the task (it stops its cell and returns the cell's row); after ``grace`` seconds without an
        answer, force-cancel it and, when the cell runs on this machine, see its group gone (``FORCE_WAIT``
        more seconds at most, then killed). A row that never came back is a failed row saying the cell was
        interrupted."""
        if self.poll() is not None:
            assert self._row is not None
            return self._row
        self._ray.cancel(self._ref)
        ready, _ = self._ray.wait([self._ref], timeout=max(grace, 0.0))
        if ready:
            self._row = self._collect()
            return self._row
        self._ray.cancel(self._ref, force=True)
        kill_lost_cell(self._workdir, self._name, FORCE_WAIT)
        self._ray.wait([self._ref], timeout=FORCE_WAIT)
        self._row = self._interrupted("it did not stop within the grace period and was killed")
        return self._row

    def _collect(self) -> CellResult:
        exceptions = self._ray.exceptions
        try:
            data = self._ray.get(self._ref)
        except exceptions.TaskCancelledError:
            return self._interrupted("it was cancelled before its row came back")
        except exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return _failed(self.spec, self.started_at, self._start, f"the cell's Ray task failed: {first}")
        try:
            return CellResult.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            why = f"the cell's Ray task returned no row: {exc}"
            return _failed(self.spec, self.started_at, self._start, why)

    def _interrupted(self, why: str) -> CellResult:
        log = self._workdir / f"{self._name}.log"
        where = f"; see {log}" if log.exists() else ""
        return _failed(self.spec, self.started_at, self._start, f"interrupted: {why}{where}")


class _Connection:
    """The Ray connection the executors of this process started: one, shared, counted. The first executor
    that needs Ray starts (or joins) it; it is shut down when the last executor using it closes, so one
    finished run never pulls Ray from under another. A connection the caller made is never counted, nor
    shut down."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        #: RAY_AUTH_MODE as it was before the connection was made (a local cluster sets it).
        self.auth_mode: str | None = None


_CONNECTION = _Connection()


class RayExecutor:
    """Cells as Ray tasks, ``num_cpus`` logical CPUs each.

    With no ``address`` it starts a local Ray cluster sized for ``concurrency`` cells (default: one per core)
    and the last ``close()`` shuts it down; with ``address`` it joins that cluster and the last ``close()``
    only disconnects. Executors of one process share the connection (see :class:`_Connection`). A process
    that is already connected to Ray keeps its connection: the executor uses it and leaves it open.
    """

    name = "ray"

    def __init__(
        self, concurrency: int | None = None, address: str | None = None, num_cpus: float = 1.0
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, got {concurrency}")
        if not num_cpus > 0:
            raise UsageError(f"num_cpus (CPUs per cell) must be more than 0, got {num_cpus}")
        ray = import_ray()
        self._ray = ray
        self._handles: list[RayCellHandle] = []
        self._closed = False
        self._connected = False
        with _CONNECTION.lock:
            if ray.is_initialized():
                # Ours (another executor started it: count this one in) or the caller's (never shut down).
                self._connected = _CONNECTION.users > 0
                cpus = float(ray.cluster_resources().get("CPU", 1.0))
            elif address is None:
                cpus = float(
                    max(math.ceil((concurrency or os.cpu_count() or 1) * num_cpus), math.ceil(num_cpus))
                )
                self._connect(num_cpus=int(cpus))
            else:
                self._connect(address=address)
                cpus = float(ray.cluster_resources().get("CPU", 1.0))
            if self._connected:
                _CONNECTION.users += 1
        self.address = address
        self.num_cpus = num_cpus
        self.capacity = concurrency or max(1, int(cpus // num_cpus))
        self._task = ray.remote(run_cell_task).options(num_cpus=num_cpus, max_retries=0)

    def _connect(self, **where: Any) -> None:
        """Start or join Ray for this process (under the connection lock): the connection every executor
        of the process then shares until the last one closes."""
        _CONNECTION.auth_mode = os.environ.get("RAY_AUTH_MODE")
        _CONNECTION.users = 0
        self._init(**where)

    def _init(self, **where: Any) -> None:
        try:
            self._ray.init(
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                configure_logging=True,
                **where,
            )
        except (ConnectionError, RuntimeError, ValueError, self._ray.exceptions.RayError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "address" in where:
                raise UsageError(
                    f"could not join the Ray cluster at {where['address']}: {detail} (check the address with "
                    "`ray status` on the head node; with token authentication on, this machine needs the "
                    "cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token)"
                ) from exc
            raise FsmRunnerError(f"could not start a local Ray cluster: {detail}") from exc
        self._connected = True

    def start(self, spec: CellSpec, workdir: Path, name: str) -> RayCellHandle:
        if self._closed:
            raise UsageError("this ray executor is closed: make a new one to start more cells")
        ref = self._task.remote(spec.to_json(), str(workdir), name, os.getcwd())
        handle = RayCellHandle(self._ray, ref, spec, workdir, name)
        self._handles.append(handle)
        return handle

    def close(self) -> None:
        """Stop the cells still running, then shut the local cluster down (or leave the joined one)."""
        self._closed = True
        running = [h for h in self._handles if h.poll() is None]
        for handle in running:
            self._ray.cancel(handle._ref)
        for handle in running:
            handle.stop(TASK_STOP_GRACE)
        self._handles.clear()
        if not self._connected:
            return
        self._connected = False
        with _CONNECTION.lock:
            _CONNECTION.users -= 1
            if _CONNECTION.users > 0:  # other executors of this process still use the connection
                return
            self._ray.shutdown()
            # A new local cluster turns token authentication on for this process; leave the setting as found.
            if _CONNECTION.auth_mode is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = _CONNECTION.auth_mode


if TYPE_CHECKING:  # the executor interface, checked by mypy

    def _is_an_executor(executor: RayExecutor) -> Executor:
        return executor

    def _is_a_handle(handle: RayCellHandle) -> CellHandle:
        return handle
