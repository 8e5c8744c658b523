"""Stopping a thread's work from another thread: stop requests, and the process groups each thread waits on.

Python runs signal handlers in the main thread only, and an exception raised there cannot reach a session
that runs its commands in a worker thread. So the handler asks that thread to stop instead: it records a
stop request for the thread and ends the process group the thread is waiting on. The wait returns, and the
thread raises :class:`Interrupted` in its own stack, where the session records why and tears down.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: A signal handler as ``signal.getsignal`` returns one set from Python (a callable, SIG_DFL or SIG_IGN).
_Handler = Callable[[int, FrameType | None], Any] | int


class Interrupted(KeyboardInterrupt):
    """A signal (SIGTERM) ended a session call, in whichever thread the call was running.

    ``signum`` is the signal; ``str()`` says why ("received SIGTERM", unless a ``reason`` is given).
    """

    def __init__(self, signum: int, reason: str | None = None) -> None:
        super().__init__(reason or f"received {signal.Signals(signum).name}")
        self.signum = signum


# Re-entrant: a signal handler may run in the main thread while that thread is inside one of these blocks.
_LOCK = threading.RLock()
_STOPS: dict[int, Interrupted] = {}  # thread id -> what it raises when it stops
_WAITS: dict[int, set[int]] = {}  # thread id -> process groups it is waiting on


def request_stop(thread: int, signum: int, reason: str | None = None) -> list[int]:
    """Ask ``thread`` to stop (it raises ``Interrupted(signum, reason)``); returns the process groups it is
    waiting on (the caller ends them).

    A thread that starts waiting on a new group after this call raises at once instead (see
    :func:`waiting_on`), so no command starts unnoticed between the request and the end of its group.
    """
    with _LOCK:
        _STOPS[thread] = Interrupted(signum, reason)
        return sorted(_WAITS.get(thread, ()))


def drop_stop(thread: int) -> None:
    """Forget a request that has nothing left to stop (the thread's session call is over)."""
    with _LOCK:
        _STOPS.pop(thread, None)


def take_stop() -> Interrupted | None:
    """What this thread was asked to stop for, if anything; the request is used up."""
    with _LOCK:
        return _STOPS.pop(threading.get_ident(), None)


def check_stop() -> None:
    """Raise :class:`Interrupted` when this thread was asked to stop (once per request)."""
    stop = take_stop()
    if stop is not None:
        raise stop


@contextmanager
def waiting_on(pgid: int) -> Iterator[None]:
    """While the block waits for group ``pgid``, a stop request for this thread ends that group.

    Raises :class:`Interrupted` on entry when a stop is already requested (the caller ends the group in its
    ``except BaseException`` path). A request that arrives while waiting ends the group, so the wait returns;
    the caller then calls :func:`check_stop`.
    """
    me = threading.get_ident()
    with _LOCK:
        stop = _STOPS.pop(me, None)
        if stop is None:
            _WAITS.setdefault(me, set()).add(pgid)
    if stop is not None:
        raise stop
    try:
        yield
    finally:
        with _LOCK:
            waits = _WAITS.get(me)
            if waits is not None:
                waits.discard(pgid)
                if not waits:
                    del _WAITS[me]


@contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then act as they would have.

    Python raises a signal's exception in the main thread between any two bytecodes: one that lands after a
    command has started but before its caller holds it (and has it on record) would leave the command
    running with nobody to end it. The block spans that window; a signal received in it is acted on as the
    block ends, inside the caller's cleanup: its Python handler is called (once: a wakeup fd, as asyncio uses,
    was written when the signal arrived), or at the default disposition the signal is raised again. Every
    held signal is delivered, even when a handler raises. Only the main thread receives signals: elsewhere
    this does nothing. A handler not set from Python (``getsignal`` is None) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: object) -> None:
        held.append(signum)

    previous: dict[int, _Handler] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None and handler is not signal.SIG_IGN:
            previous[signum] = handler
            signal.signal(signum, hold)
    try:
        yield
    finally:
        for sig, saved in previous.items():
            signal.signal(sig, saved)
        _deliver([(received, previous[received]) for received in dict.fromkeys(held)])


def _deliver(held: list[tuple[int, _Handler]]) -> None:
    """Act on each held signal as its handler would have, the next one even when one raises."""
    if not held:
        return
    (signum, handler), rest = held[0], held[1:]
    try:
        if callable(handler):
            handler(signum, None)
        else:
            signal.raise_signal(signum)  # the default action
    finally:
        _deliver(rest)


def _forget_after_fork() -> None:
    """A forked child has only the forking thread, and none of the parent's commands."""
    global _LOCK
    _LOCK = threading.RLock()
    _STOPS.clear()
    _WAITS.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
