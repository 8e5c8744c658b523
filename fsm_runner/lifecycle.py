"""What keeps a live run safe: its lock, SIGTERM turned into an exception, and cleanup at interpreter exit."""

from __future__ import annotations

import atexit
import fcntl
import os
import signal
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

from fsm_runner.errors import UsageError

LOCK_NAME = ".lock"


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


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives during a session call."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def hold_lock(run_dir: Path) -> IO[str]:
    """Held while the run is live so that replay refuses to touch it."""
    handle = (run_dir / LOCK_NAME).open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(f"{run_dir} is in use by another live run") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def release_lock(handle: IO[str]) -> None:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


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
