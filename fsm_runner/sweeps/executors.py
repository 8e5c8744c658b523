"""Where cells run: an executor starts a cell and hands back a handle to poll or stop it.

A sweep and ``submit()`` only speak these two protocols, so the local executor (a process per cell on this
machine, forked from a preloaded server) and the Ray executor (a Ray task per cell) are interchangeable:
both give the same rows.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from pathlib import Path
from typing import Protocol

from fsm_runner.errors import UsageError
from fsm_runner.sweeps import EXECUTORS
from fsm_runner.sweeps.cells import CellProcess, CellResult, CellRun, CellSpec
from fsm_runner.sweeps.forks import CellForker, ForkedCell, ForkError


class CellHandle(Protocol):
    """One started cell."""

    def poll(self) -> CellResult | None:
        """The row once the cell has finished, else None."""
        ...

    def stop(self, grace: float = 30.0) -> CellResult:
        """Tear the cell down (its run tears down what it deployed); its row, failed unless it had already
        finished."""
        ...


class Executor(Protocol):
    """Starts cells; ``capacity`` is how many it runs at once (a sweep never starts more)."""

    name: str
    capacity: int

    def start(self, spec: CellSpec, workdir: Path, name: str) -> CellHandle:
        """Start ``spec``; its log and result files are named ``name`` in ``workdir``."""
        ...

    def close(self) -> None:
        """Stop every cell it started that is still running, and release what it holds."""
        ...


class LocalHandle:
    """A cell in a process of its own (see :class:`~fsm_runner.sweeps.forks.ForkedCell`)."""

    def __init__(self, process: CellRun, owner: LocalExecutor) -> None:
        self.process = process
        self._owner = owner

    def poll(self) -> CellResult | None:
        row = self.process.poll()
        if row is not None:
            self._owner._forget(self)
        return row

    def stop(self, grace: float = 30.0) -> CellResult:
        try:
            return self.process.stop(grace)
        finally:
            self._owner._forget(self)


class LocalExecutor:
    """Each cell in a process of its own on this machine, ``capacity`` at a time (default: one per core).

    Cells are forked from a server process that has imported the runner once (started with the first cell,
    ended by :meth:`close`); when that server cannot start, each cell is a new interpreter instead. Cells it
    started and nobody stopped are stopped by :meth:`close`, and at interpreter exit: a sweep that dies
    leaves no cell running.
    """

    name = "local"

    def __init__(self, concurrency: int | None = None) -> None:
        if concurrency is not None and (isinstance(concurrency, bool) or concurrency < 1):
            raise UsageError(f"concurrency must be 1 or more, got {concurrency!r}")
        self.capacity = concurrency or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._running: set[LocalHandle] = set()
        self._forker = CellForker()
        weakref.finalize(self, self._forker.close)
        _LIVE.add(self)

    def start(self, spec: CellSpec, workdir: Path, name: str) -> LocalHandle:
        workdir.mkdir(parents=True, exist_ok=True)
        handle = LocalHandle(self._start_process(spec, workdir, name), self)
        with self._lock:
            self._running.add(handle)
        return handle

    def _start_process(self, spec: CellSpec, workdir: Path, name: str) -> CellRun:
        try:
            return ForkedCell(spec, workdir, name, self._forker)
        except ForkError:  # no server to fork it (said once): a new interpreter
            return CellProcess(spec, workdir, name)

    def _forget(self, handle: LocalHandle) -> None:
        with self._lock:
            self._running.discard(handle)

    def close(self, grace: float = 30.0) -> None:
        with self._lock:
            running = list(self._running)
        for handle in running:
            handle.stop(grace)
        self._forker.close()


_LIVE: weakref.WeakSet[LocalExecutor] = weakref.WeakSet()


@atexit.register
def _stop_cells_at_exit() -> None:
    for executor in list(_LIVE):
        executor.close(grace=10.0)


def make_executor(
    name: str,
    *,
    concurrency: int | None = None,
    address: str | None = None,
    num_cpus: float = 1.0,
) -> Executor:
    """The executor ``name`` names: ``local`` (processes here) or ``ray`` (the optional extra)."""
    if name == "local":
        if address is not None:
            raise UsageError(
                "address= is for the ray executor; the local executor runs cells on this machine"
            )
        return LocalExecutor(concurrency)
    if name == "ray":
        # Ray is an optional extra: imported only when a sweep asks for it (a missing Ray is a UsageError
        # that names the install command).
        from fsm_runner.sweeps.ray_executor import RayExecutor

        return RayExecutor(concurrency=concurrency, address=address, num_cpus=num_cpus)
    raise UsageError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
