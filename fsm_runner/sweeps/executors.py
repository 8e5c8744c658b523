"""Where the cells of a sweep run: the executor interface."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from fsm_runner.errors import UsageError
from fsm_runner.sweeps.cells import CellResult, CellSpec


class CellHandle(Protocol):
    def poll(self) -> CellResult | None: ...

    def stop(self, grace: float = 30.0) -> CellResult: ...


class Executor(Protocol):
    name: str
    capacity: int

    def start(self, spec: CellSpec, workdir: Path, name: str) -> CellHandle: ...

    def close(self) -> None: ...


def _ray_executor(concurrency: int | None, address: str | None, num_cpus: float) -> Executor:
    """Ray is an optional extra: imported only when a sweep asks for it."""
    from fsm_runner.sweeps.ray_executor import RayExecutor

    return RayExecutor(concurrency=concurrency, address=address, num_cpus=num_cpus)


def make_executor(
    name: str, *, concurrency: int | None = None, address: str | None = None, num_cpus: float = 1.0
) -> Executor:
    if name == "ray":
        return _ray_executor(concurrency, address, num_cpus)
    raise UsageError(f"unknown executor {name!r}")
