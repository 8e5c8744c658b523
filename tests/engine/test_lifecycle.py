"""SIGTERM as an exception, and closing live sessions at interpreter exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from fsm_runner.engine import lifecycle
from fsm_runner.engine.lifecycle import Interrupted, register_live, sigterm_raises, unregister_live


@pytest.fixture
def default_sigterm() -> Iterator[None]:
    """Each test starts with SIGTERM at its default and leaves it as it found it."""
    saved = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def deliver_sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(200):  # the Python-level handler runs at the next bytecode boundary
        time.sleep(0.001)


# -- SIGTERM ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("default_sigterm")
def test_sigterm_inside_the_block_raises_interrupted() -> None:
    with pytest.raises(Interrupted) as info, sigterm_raises():
        deliver_sigterm()
    assert info.value.signum == int(signal.SIGTERM) == 15
    assert isinstance(info.value, KeyboardInterrupt)
    assert "SIGTERM" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.usefixtures("default_sigterm")
@pytest.mark.parametrize("exit_with", [None, ValueError])
def test_the_default_handler_is_restored_after_the_block(exit_with: type[Exception] | None) -> None:
    inside: list[Any] = []

    def body() -> None:
        with sigterm_raises():
            inside.append(signal.getsignal(signal.SIGTERM))
            if exit_with is not None:
                raise exit_with("body failed")

    if exit_with is None:
        body()
    else:
        with pytest.raises(exit_with):
            body()
    assert callable(inside[0]) and inside[0] not in (signal.SIG_DFL, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.usefixtures("default_sigterm")
def test_a_host_handler_is_left_alone() -> None:
    received: list[int] = []

    def host(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, host)
    with sigterm_raises():
        assert signal.getsignal(signal.SIGTERM) is host
        deliver_sigterm()  # no Interrupted: the host decides what SIGTERM means
    assert received == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is host


@pytest.mark.usefixtures("default_sigterm")
def test_an_ignored_sigterm_stays_ignored() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with sigterm_raises():
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        deliver_sigterm()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


@pytest.mark.usefixtures("default_sigterm")
def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[Any] = []

    def worker() -> None:
        with sigterm_raises():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=10)
    assert seen == [signal.SIG_DFL]


def test_sigterm_to_a_process_inside_the_block_exits_through_the_exception(tmp_path: Path) -> None:
    script = (
        "import os, signal, time\n"
        "from fsm_runner.engine.lifecycle import Interrupted, sigterm_raises\n"
        "try:\n"
        "    with sigterm_raises():\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(30)\n"
        "except Interrupted as exc:\n"
        "    print('interrupted', exc.signum, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert (out.strip(), proc.returncode) == ("interrupted 15", 0)


# -- live sessions at exit -------------------------------------------------------------------------------


class Closable:
    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self.closed = 0
        self.on_close = on_close

    def close(self) -> None:
        self.closed += 1
        if self.on_close is not None:
            self.on_close()


def _boom() -> None:
    raise RuntimeError("close failed")


def test_live_sessions_are_closed_at_exit_and_failures_do_not_stop_the_rest() -> None:
    failing, fine, gone = Closable(_boom), Closable(), Closable()
    for item in (failing, fine, gone):
        register_live(item)
    unregister_live(gone)
    try:
        lifecycle._close_live_sessions()
    finally:
        unregister_live(failing)
        unregister_live(fine)
    assert (failing.closed, fine.closed, gone.closed) == (1, 1, 0)


def test_the_live_set_does_not_keep_sessions_alive() -> None:
    register_live(Closable())
    assert all(not isinstance(item, Closable) for item in list(lifecycle._LIVE))
