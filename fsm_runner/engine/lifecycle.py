"""What keeps a live run safe: SIGTERM turned into an exception, and teardown at interpreter exit.

The run's lock lives in :mod:`fsm_runner.evidence.lock` (readers of runs probe it too).
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


_LIVE: weakref.WeakSet[Closable] = weakref.WeakSet()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _terminate_between_calls(signum: int, frame: FrameType | None) -> None:
    """SIGTERM while no session call runs (say, during a training step): tear down, then die of SIGTERM."""
    _close_live_sessions()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def register_live(session: Closable) -> None:
    """Track a live session; while any is live, SIGTERM (if the host left it at the default) tears down."""
    _LIVE.add(session)
    if _in_main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate_between_calls)


def unregister_live(session: Closable) -> None:
    _LIVE.discard(session)
    if not _LIVE and _in_main_thread() and signal.getsignal(signal.SIGTERM) is _terminate_between_calls:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def live_sessions() -> list[Closable]:
    """The sessions of this process that are open (replay looks for the one holding the run it continues)."""
    return list(_LIVE)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives during a session call."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception for the duration of a call, when the host left it at the default."""
    if not _in_main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None, _terminate_between_calls):
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@atexit.register
def _close_live_sessions() -> None:
    for session in list(_LIVE):
        try:
            session.close()
        except Exception:  # interpreter exit: best effort, never raise
            continue
