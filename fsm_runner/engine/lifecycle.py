"""What keeps live runs safe: SIGTERM tears down every live session, whichever thread runs it, and teardown
at interpreter exit.

One SIGTERM handler, in the main thread (Python runs handlers there only), serves every session of the
process. It is installed when the main thread's SIGTERM is at its default: when this module is imported from
the main thread, and again at each session registration there. A session busy in another thread is asked to
stop (its running command's process group is ended, so its wait returns) and tears itself down in its own
thread; the handler waits for that, up to a bound. Idle sessions are closed. Then the process dies of SIGTERM.
With no live session the handler only restores the default and dies of SIGTERM, as before.

A host with a SIGTERM handler of its own calls :func:`shutdown` from it. The run's lock lives in
:mod:`fsm_runner.evidence.lock` (readers of runs probe it too).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Protocol, runtime_checkable

from fsm_runner.execution.interrupts import Interrupted, drop_stop, request_stop
from fsm_runner.execution.process import kill_group

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "Closable",
    "Interrupted",
    "closing_reason",
    "register_live",
    "session_use",
    "shutdown",
    "sigterm_raises",
    "unregister_live",
]

#: How long a shutdown waits for sessions busy in other threads to tear themselves down (seconds).
SHUTDOWN_TIMEOUT = 20.0
#: SIGTERM to SIGKILL for a running command a shutdown ends (its own thread then reaps it).
_KILL_GRACE = 1.0


class Closable(Protocol):
    def close(self) -> None: ...


@runtime_checkable
class _Abandonable(Protocol):
    def _end_processes(self) -> None: ...


# Re-entrant: the handler runs in the main thread, possibly while that thread is inside one of these blocks.
_COND = threading.Condition(threading.RLock())
_LIVE: weakref.WeakSet[Closable] = weakref.WeakSet()
#: Sessions inside a call or a close: [the thread using it, nesting depth].
_USERS: weakref.WeakKeyDictionary[Closable, list[int]] = weakref.WeakKeyDictionary()
#: While a shutdown runs: its signal and the thread running it (None otherwise).
_stop_signum: int | None = None
_stopper: int | None = None
#: Depth of sigterm_raises blocks in the main thread: SIGTERM there raises Interrupted.
_raising = 0


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> None:
    """Take SIGTERM in the main thread if nobody else has; a host's own handler is left alone."""
    if _in_main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _refuse_new_work() -> None:
    """During a shutdown only the thread running it may use sessions; others get the signal's exception."""
    if _stop_signum is not None and threading.get_ident() != _stopper:
        raise Interrupted(_stop_signum)


def register_live(session: Closable) -> None:
    """Track a live session: SIGTERM (unless the host handles it) and interpreter exit tear it down."""
    with _COND:
        _refuse_new_work()
        _LIVE.add(session)
    _install()


def unregister_live(session: Closable) -> None:
    with _COND:
        _LIVE.discard(session)


def live_sessions() -> list[Closable]:
    """The sessions of this process that are open (replay looks for the one holding the run it continues)."""
    with _COND:
        return list(_LIVE)


@contextmanager
def session_use(session: Closable, *, new_work: bool = True) -> Iterator[None]:
    """Mark ``session`` as used by this thread for the block: one thread at a time, nesting allowed.

    A shutdown stops busy sessions in their own thread and closes only idle ones, so this is what tells them
    apart; another thread's use waits until this one ends. ``new_work`` (a call, not a close) is refused
    with :class:`Interrupted` while a shutdown runs.
    """
    use = _acquire(session, new_work=new_work, deadline=None)
    assert use is not None
    try:
        yield
    finally:
        _release(session, use)


def _acquire(session: Closable, *, new_work: bool, deadline: float | None) -> list[int] | None:
    """Take ``session`` for this thread (None when another thread still has it at ``deadline``)."""
    me = threading.get_ident()
    with _COND:
        while (use := _USERS.get(session)) is not None and use[0] != me:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            _COND.wait(left)
        if new_work:
            _refuse_new_work()
        if use is None:
            use = _USERS[session] = [me, 0]
        use[1] += 1
        return use


def _release(session: Closable, use: list[int]) -> None:
    with _COND:
        use[1] -= 1
        if use[1] == 0:
            _USERS.pop(session, None)
            if all(user[0] != use[0] for user in _USERS.values()):
                drop_stop(use[0])  # a stop request ends with the calls it was meant for
        _COND.notify_all()


def closing_reason() -> str:
    """Why a session is being closed: by its host, or by a shutdown on a signal."""
    if _stop_signum is None:
        return "session closed"
    return f"session closed: received {signal.Signals(_stop_signum).name}"


# -- shutdown -------------------------------------------------------------------------------------------


def shutdown(timeout: float = SHUTDOWN_TIMEOUT) -> None:
    """Tear down every live session of this process, whichever thread created it: what SIGTERM does.

    For a host with its own SIGTERM handler: call this from the handler, then exit as you see fit. Sessions
    busy in other threads have their running command ended and tear down in their own thread (their call
    raises :class:`Interrupted`, run.json says ``interrupted``); this waits up to ``timeout`` seconds for
    them. Idle sessions are closed (run.json says ``closed``). A call of the calling thread that the handler
    interrupted has its command ended too, and raises :class:`Interrupted` (after its teardown) once the
    handler returns. Never raises; a second call while one runs returns at once.
    """
    if _begin(signal.SIGTERM):
        try:
            _teardown_all(signal.SIGTERM, timeout, stop_own=True)
        finally:
            _end()


def _begin(signum: int) -> bool:
    global _stop_signum, _stopper
    with _COND:
        if _stop_signum is not None:
            return False
        _stop_signum, _stopper = signum, threading.get_ident()
        return True


def _end() -> None:
    global _stop_signum, _stopper
    with _COND:
        _stop_signum = _stopper = None
        _COND.notify_all()


def _teardown_all(signum: int, timeout: float, *, stop_own: bool, reason: str | None = None) -> None:
    """Stop busy sessions in their own threads (waiting up to ``timeout``), close idle ones, and end the
    processes of those still busy after that."""
    me = threading.get_ident()
    deadline = time.monotonic() + timeout
    with _COND:
        live = list(_LIVE)
        busy = {session: use[0] for session, use in _USERS.items() if session in _LIVE}
    groups: list[int] = []
    for thread in set(busy.values()):
        if thread != me or stop_own:
            groups += request_stop(thread, signum, reason)
    _end_groups(groups)
    others = [session for session, thread in busy.items() if thread != me]
    with _COND:
        while any(session in _USERS for session in others) and time.monotonic() < deadline:
            _COND.wait(max(0.0, deadline - time.monotonic()))
        stuck = [session for session in others if session in _USERS]
    for session in live:
        if session in busy:
            continue  # its own thread tears it down (or it is stuck, below)
        if not _close_idle(session, deadline):
            stuck.append(session)
    for session in stuck:
        _abandon(session, signum)


def _abandon(session: Closable, signum: int) -> None:
    """The last resort for a session still busy when the process must go: end its processes from here and
    leave its state alone (its own thread may still be using it)."""
    with _COND:
        use = _USERS.get(session)
    if use is not None:
        _end_groups(request_stop(use[0], signum))
    if isinstance(session, _Abandonable):
        with contextlib.suppress(Exception):  # shutting down: best effort, never raise
            session._end_processes()


def _close_idle(session: Closable, deadline: float) -> bool:
    """Close a session no other thread uses (waiting until ``deadline`` for one that does)."""
    use = _acquire(session, new_work=False, deadline=deadline)
    if use is None:
        return False
    try:
        session.close()
    except Exception:  # shutting down: best effort, the next sessions still get closed
        pass
    finally:
        _release(session, use)
    return True


def _end_groups(groups: list[int]) -> None:
    for pgid in groups:
        try:
            kill_group(pgid, grace=_KILL_GRACE)
        except ValueError:  # not a command's own group
            continue


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in the main thread: tear down every live session, then die of SIGTERM.

    Inside a ``sigterm_raises`` block (a session call in the main thread, the command line) the main
    thread's part ends by raising :class:`Interrupted` instead, as it always has; other threads' sessions
    are torn down first. A second SIGTERM while the teardown runs is ignored: the teardown is bounded.
    """
    with _COND:
        nested = _stop_signum is not None and _stopper == threading.get_ident()
        anything = bool(_LIVE)
    if nested:
        return
    raising = _raising > 0
    if anything and _begin(signum):
        try:
            _teardown_all(signum, SHUTDOWN_TIMEOUT, stop_own=False)
        finally:
            if raising:
                _end()
    if raising:
        raise Interrupted(signum)
    with _COND:  # a close this thread was in the middle of: it will not finish, its processes must
        own = [s for s, use in _USERS.items() if use[0] == threading.get_ident() and s in _LIVE]
    for session in own:
        _abandon(session, signum)
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception for the duration of a call, when the host left it at the default."""
    global _raising
    if not _in_main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None, _on_sigterm):
        yield
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    _raising += 1
    try:
        yield
    finally:
        _raising -= 1
        signal.signal(signal.SIGTERM, previous)


@atexit.register
def _close_live_sessions() -> None:
    """Interpreter exit: close live sessions; one still busy in a daemon thread is stopped there first."""
    _teardown_all(signal.SIGTERM, SHUTDOWN_TIMEOUT, stop_own=False, reason="the interpreter is exiting")


def _forget_after_fork() -> None:
    """A forked child owns none of its parent's sessions: its SIGTERM and exit must not tear them down."""
    global _COND, _stop_signum, _stopper
    _COND = threading.Condition(threading.RLock())
    _LIVE.clear()
    _USERS.clear()
    _stop_signum = _stopper = None


os.register_at_fork(after_in_child=_forget_after_fork)
_install()
