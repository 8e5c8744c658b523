"""Stopping another thread's command: the request ends the group it waits on, and that thread raises."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution import interrupts
from fsm_runner.execution.commands import run_command
from fsm_runner.execution.interrupts import (
    Interrupted,
    check_stop,
    deferred_signals,
    drop_stop,
    request_stop,
    take_stop,
)
from fsm_runner.execution.policy import SecurityPolicy
from fsm_runner.execution.process import group_alive, kill_group, run_captured, spawn_group


class Worker(threading.Thread):
    """Runs ``body`` and keeps what it raised (or returned)."""

    def __init__(self, body: object) -> None:
        super().__init__(daemon=True)
        self.body = body
        self.raised: BaseException | None = None
        self.result: object = None

    def run(self) -> None:
        try:
            self.result = self.body()  # type: ignore[operator]
        except BaseException as exc:
            self.raised = exc


def command(tmp_path: Path, cmd: str) -> Worker:
    return Worker(
        lambda: run_command(
            cmd,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
            out_dir=tmp_path / "out",
            name="cmd01_try01",
            timeout=60,
            policy=SecurityPolicy(),
            redactor=Redactor(),
        )
    )


def waiting_groups(thread: Worker, deadline: float = 10.0) -> list[int]:
    """Once ``thread`` waits on a group, ask it to stop; returns the groups to end (what a shutdown does)."""
    end = time.monotonic() + deadline
    while not interrupts._WAITS.get(thread.ident or 0):
        assert time.monotonic() < end, "the command never started"
        time.sleep(0.01)
    return request_stop(thread.ident or 0, 15)


@pytest.mark.parametrize("cmd", ["sleep 30", "trap '' TERM; sleep 30 & wait"], ids=["plain", "ignores-TERM"])
def test_a_stop_ends_the_command_and_raises_in_its_own_thread(tmp_path: Path, cmd: str) -> None:
    worker = command(tmp_path, cmd)
    worker.start()
    [pgid] = waiting_groups(worker)
    started = time.monotonic()
    kill_group(pgid, grace=0.5)  # what the shutdown does with the groups it gets back
    worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert isinstance(worker.raised, Interrupted) and worker.raised.signum == 15
    assert str(worker.raised) == "received SIGTERM"
    assert not group_alive(pgid)
    doc = json.loads((tmp_path / "out" / "cmd01_try01.json").read_text())
    assert doc["pgid"] == pgid  # the evidence names the group, for a runner that dies before it reaps it


def test_a_thread_asked_to_stop_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    request_stop(threading.get_ident(), 15)
    with pytest.raises(Interrupted):
        spawn_group(["touch", str(marker)], tmp_path, {}, tmp_path / "o", tmp_path / "e")
    assert take_stop() is None  # the request was used up by raising
    time.sleep(0.1)
    assert not marker.exists()


def test_a_helper_program_is_stopped_too(tmp_path: Path) -> None:
    worker = Worker(lambda: run_captured(["sleep", "30"], timeout=60, cwd=tmp_path))
    worker.start()
    [pgid] = waiting_groups(worker)
    kill_group(pgid, grace=0.5)
    worker.join(timeout=10)
    assert not worker.is_alive() and isinstance(worker.raised, Interrupted)
    assert not group_alive(pgid)


def test_requests_are_per_thread_and_used_once() -> None:
    other = Worker(lambda: time.sleep(0.2))
    other.start()
    request_stop(other.ident or 0, 15)
    check_stop()  # a request for another thread does not stop this one
    request_stop(threading.get_ident(), 2)
    with pytest.raises(Interrupted, match="received SIGINT"):
        check_stop()
    check_stop()
    drop_stop(other.ident or 0)
    other.join()


# -- signals held while a command starts --------------------------------------------------------------------


@pytest.fixture
def term_handler() -> Iterator[list[int]]:
    """A SIGTERM handler that records what it was called for (the main thread's, restored afterwards)."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGTERM, previous)


def test_held_signals_are_all_delivered_after_the_block_even_when_one_raises(term_handler: list[int]) -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # a signal arrives soon after kill(): give it the time it needs
        reached.append("the end of the block")
    assert reached == ["the end of the block"]
    assert term_handler == [signal.SIGTERM]  # delivered although SIGINT's handler raised first


def test_a_held_signal_reaches_a_wakeup_fd_once(term_handler: list[int]) -> None:
    """An event loop (asyncio's add_signal_handler) reads signals from a wakeup fd: one signal, one byte."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    previous = signal.set_wakeup_fd(write)
    try:
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert term_handler == [signal.SIGTERM]
        assert os.read(read, 64) == bytes([signal.SIGTERM])
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read)
        os.close(write)


def test_a_held_signal_at_its_default_disposition_still_ends_the_process() -> None:
    script = (
        "import os, signal, time\n"
        "from fsm_runner.execution.interrupts import deferred_signals\n"
        "with deferred_signals():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.05)\n"
        "    print('finished the block', flush=True)\n"
        "print('never', flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (-signal.SIGTERM, "finished the block\n")


def test_outside_the_main_thread_nothing_is_held() -> None:
    seen: list[object] = []

    def body() -> None:
        with deferred_signals():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGINT)]
