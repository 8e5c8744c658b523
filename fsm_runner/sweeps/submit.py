"""``submit()``: one run started in the background, so a training loop goes on while a checkpoint is
scored."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from fsm_runner.errors import UsageError
from fsm_runner.evidence.layout import new_run_id
from fsm_runner.sweeps.cells import CellResult, CellSpec
from fsm_runner.sweeps.executors import CellHandle, Executor, make_executor
from fsm_runner.sweeps.spec import check_arguments, resolve_llm, resolve_target_spec
from fsm_runner.sweeps.sweep import POLL_S, STOP_GRACE_S


class RunHandle:
    """A run started by :func:`submit`: ``done()``, ``result()`` (its row) and ``cancel()``."""

    def __init__(
        self, handle: CellHandle, executor: Executor, *, own: bool, log_dir: Path, temporary: bool = False
    ) -> None:
        self._handle = handle
        self._executor = executor
        self._own = own
        self._row: CellResult | None = None
        self._lock = threading.Lock()
        self._temporary = temporary
        self.log_dir = log_dir

    def _settle(self, row: CellResult | None) -> CellResult | None:
        if row is not None and self._row is None:
            self._row = row
            if self._own:
                self._executor.close()
            if self._temporary and row.ok:  # a failed run's error may point at its log: that one stays
                shutil.rmtree(self.log_dir, ignore_errors=True)
        return self._row

    def done(self) -> bool:
        with self._lock:
            return self._settle(self._row or self._handle.poll()) is not None

    def result(self, timeout: float | None = None) -> CellResult:
        """The run's row once it has finished (a failed run is a row with ``ok`` false and its error);
        TimeoutError when it is still running after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                row = self._settle(self._row or self._handle.poll())
            if row is not None:
                return row
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"the run is still going after {timeout} s")
            time.sleep(POLL_S)

    def cancel(self, grace: float = STOP_GRACE_S) -> CellResult:
        """Tear the run down (what it deployed included; nothing it started is left running); its row, failed
        unless it had already finished."""
        with self._lock:
            if self._row is None:
                row = self._handle.stop(grace)
                if not row.ok:
                    row = CellResult.from_json(
                        {**row.to_json(), "error": f"cancelled: {row.error or 'stopped'}"}
                    )
                self._settle(row)
            assert self._row is not None
            return self._row


def submit(
    target: str | os.PathLike[str],
    llm: str | os.PathLike[str],
    *,
    executor: str | Executor = "local",
    mode: str = "smoke",
    env_overrides: Mapping[str, str] | None = None,
    repair_iters: int = 0,
    repair_agent: str | None = None,
    artifacts_dir: str | os.PathLike[str] | None = None,
    sandbox: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    address: str | None = None,
    num_cpus: float = 1.0,
) -> RunHandle:
    """Start one isolated run of ``target`` for ``llm`` (setup, rollout when the pipeline has one, evaluate,
    close) on ``executor`` and return at once. Relative paths are read from the working directory. The run's
    process log and result file go to ``log_dir`` (default: a new directory under the system temp dir,
    removed once the run has succeeded); its evidence goes where a run of ``target`` keeps it (or
    ``artifacts_dir``). An executor object passed in is
    the caller's to close."""
    if not isinstance(repair_agent, (str, type(None))):
        raise UsageError(
            "repair_agent of a submitted run is a command line (a string): the run is in a process of its own"
        )
    base = Path.cwd()
    check_arguments(
        [target],
        [llm],
        mode=mode,
        repair_iters=repair_iters,
        num_cpus=num_cpus,
        env_overrides=env_overrides,
        base=base,
    )
    spec = CellSpec(
        target=resolve_target_spec(os.fspath(target), base),
        llm=resolve_llm(os.fspath(llm), base),
        mode=mode,
        env_overrides=dict(env_overrides or {}),
        repair_iters=repair_iters,
        repair_agent=repair_agent,
        artifacts_dir=os.path.abspath(artifacts_dir) if artifacts_dir is not None else None,
        sandbox=sandbox,
    )
    own = isinstance(executor, str)
    chosen: Executor = (
        make_executor(executor, concurrency=1, address=address, num_cpus=num_cpus)  # type: ignore[arg-type]
        if own
        else executor  # type: ignore[assignment]
    )
    temporary = log_dir is None
    logs = Path(tempfile.mkdtemp(prefix="fsm-runner-run-")) if log_dir is None else Path(log_dir).absolute()
    try:
        handle = chosen.start(spec, logs, f"run-{new_run_id()}")
    except BaseException:
        if own:
            chosen.close()
        raise
    return RunHandle(handle, chosen, own=own, log_dir=logs, temporary=temporary)
