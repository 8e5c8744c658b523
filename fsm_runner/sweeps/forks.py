"""Cells forked from a preloaded server: a cell starts without paying for the runner's imports again.

A new interpreter per cell spends most of a short cell's CPU importing the runner. The local executor
instead starts one server process (``python -m fsm_runner.sweeps.forks``) that imports the runner once and
forks a child per cell. Nothing of the caller's program is imported there (unlike multiprocessing's fork
server and spawn, which import the caller's ``__main__`` again: a script without a main guard would run
twice). Each child is what ``python -m fsm_runner.sweeps.cells`` is: a session of its own, its log on
stdout and stderr, the caller's working directory and environment, the runner's SIGTERM handling (the
server imported it from its main thread, and a fork keeps it); it writes its row to its result file.

The server speaks JSON lines: on its stdin a request per cell ``{"id", "spec", "result", "log", "cwd",
"env"}``, answered on its stdout by ``{"id", "pid"}`` (or ``{"id", "error"}``); each child's exit is
reported as ``{"pid", "code"}`` (``code`` as ``Popen.returncode``: negative when a signal killed it). It
ignores SIGINT (a Ctrl-C in the caller's terminal is the caller's to handle) and exits when its stdin
ends: when the executor is closed (which stops its cells first) or the caller went away. Cells still
running then lost their caller (killed, crashed): the server stops them as the caller would have, SIGTERM
(the run tears down what it deployed and the cell writes its row) and, after ``ORPHAN_GRACE`` seconds,
SIGKILL for the cell and everything its run started. A cell outlives a server that is itself killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fsm_runner.errors import FsmRunnerError
from fsm_runner.execution.process import kill_tree, process_alive
from fsm_runner.sweeps.cells import ORPHAN_GRACE, CellProcess, CellRun, CellSpec, cell_mark_in, run_to_file

#: How long a request waits for the server's answer (the first one includes the server's imports).
FORK_TIMEOUT = 60.0
#: How often a cell whose server died is checked for being gone.
_ORPHAN_POLL_S = 0.05


class ForkError(FsmRunnerError):
    """The fork server could not start a cell (it did not start, died, or could not fork)."""


# --- the server ---------------------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _child(request: dict[str, Any], spec: CellSpec, inherited: Iterable[int]) -> None:
    """The forked cell: become what ``python -m fsm_runner.sweeps.cells`` would be, run, and exit."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        for fd in (log, null, *inherited):
            with contextlib.suppress(OSError):
                os.close(fd)
        # The server's text files (and their locks) are not this process's: fresh ones over the same fds.
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # TMPDIR is read again from the cell's environment
        run_to_file(spec, Path(request["result"]))
        code = 0
    except BaseException:  # an interrupt too (SIGTERM through the runner's handler): code 1, as ``-m`` gives
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class _Server:
    """The server's loop: requests on ``requests``, answers and exits on ``replies``."""

    def __init__(self, requests: int, replies: int) -> None:
        self.requests = requests
        self.replies = replies
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(requests, selectors.EVENT_READ, "requests")
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, "children")
        self.pending = b""
        #: The cells forked and not yet reaped, with their marks (None: the request had none).
        self.children: dict[int, str | None] = {}

    def reply(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(BrokenPipeError):  # the caller is gone: nobody to tell
            _write_all(self.replies, (json.dumps(message) + "\n").encode())

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        while True:
            for key, _events in self.selector.select():
                if key.data == "children":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wakeup_r, 4096):
                            pass
                    self.reap()
                elif not self.read_requests():
                    self.stop_orphans(ORPHAN_GRACE)
                    return

    def stop_orphans(self, grace: float) -> None:
        """Stop the cells still running once stdin has ended: their caller went away without stopping them.
        SIGTERM first (each tears its run down), then kill what is left after ``grace`` seconds: a cell still
        running with its tree (not yet reaped, its pid is still its own), and whatever carries a cell's mark,
        for the cells that ended too (what their runs started in sessions of their own)."""
        self.selector.unregister(self.requests)  # at its end: always readable
        orphans = dict(self.children)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.children and (left := deadline - time.monotonic()) > 0:
            if self.selector.select(min(left, 1.0)):
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wakeup_r, 4096):
                        pass
            self.reap()
        for pid, mark in orphans.items():
            kill_tree(pid if pid in self.children else None, mark)
        deadline = time.monotonic() + 5.0
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(_ORPHAN_POLL_S)

    def read_requests(self) -> bool:
        """Fork a child per complete request line; False once stdin has ended."""
        chunk = os.read(self.requests, 1 << 16)
        if not chunk:
            return False
        self.pending += chunk
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            if line.strip():
                self.handle(line)
        return True

    def handle(self, line: bytes) -> None:
        request_id: object = None
        try:
            request = json.loads(line)
            request_id = request["id"]
            spec = CellSpec.from_json(request["spec"])
            for key in ("result", "log", "cwd"):
                if not isinstance(request[key], str):
                    raise TypeError(f"{key!r} must be a string")
            if not isinstance(request["env"], dict):
                raise TypeError("'env' must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            self.reply({"id": request_id, "error": f"not a valid request: {exc}"})
            return
        try:
            pid = os.fork()
        except OSError as exc:
            self.reply({"id": request_id, "error": f"fork failed: {exc}"})
            return
        if pid == 0:
            inherited = (self.requests, self.replies, self.wakeup_r, self.wakeup_w, self.selector.fileno())
            _child(request, spec, inherited)
        self.children[pid] = cell_mark_in(request["env"])
        self.reply({"id": request_id, "pid": pid})

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            self.reply({"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def serve() -> int:
    """``python -m fsm_runner.sweeps.forks``: import the runner once, then fork a cell per request."""
    import fsm_runner.api  # noqa: F401 - what every cell needs, imported once here

    if sys.path and sys.path[0] == os.getcwd():  # ``-m`` put / first: cells import nothing from there
        del sys.path[0]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Our own copies of the pipes; fds 0 and 1 become /dev/null and stderr, so that nothing the runner's
    # modules might print ends up in the replies.
    requests, replies = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    _Server(requests, replies).serve()
    return 0


# --- the client ---------------------------------------------------------------------------------------------


class _Child:
    """A forked cell as its server reports it: exited, and how (None: unknown)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exited = False
        self.code: int | None = None


def _server_env() -> dict[str, str]:
    """The caller's environment, plus where this package is when a new interpreter would not find it."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    site_dirs = {*site.getsitepackages(), site.getusersitepackages()}
    if root not in site_dirs:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class _ServerProcess:
    """One running fork server and the thread that reads its answers."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "fsm_runner.sweeps.forks"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd="/",
            env=_server_env(),
            start_new_session=True,
            close_fds=True,
        )
        self.pid = self._proc.pid
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        #: Per request: the child it started, or why none was.
        self._answers: dict[int, _Child | str] = {}
        self._children: dict[int, _Child] = {}
        self._next_id = 0
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="fsm-runner-forks", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                with self._cond:
                    if "id" in message:
                        answer: _Child | str = str(message.get("error"))
                        if isinstance(message.get("pid"), int):
                            # Answers and exits come in order: a reused pid's earlier child is already done.
                            answer = self._children[message["pid"]] = _Child(message["pid"])
                        self._answers[message["id"]] = answer
                    elif (child := self._children.pop(message.get("pid"), None)) is not None:
                        child.code, child.exited = message.get("code"), True
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self.alive = False
                self._cond.notify_all()

    def request(self, request: dict[str, Any]) -> int:
        """Ask for a cell; its id, for :meth:`answer`. Never waits for the server's imports."""
        with self._cond:
            if not self.alive:
                raise ForkError(f"the fork server (pid {self.pid}) has exited")
            self._next_id += 1
            request_id = self._next_id
        line = (json.dumps({"id": request_id, **request}) + "\n").encode()
        assert self._proc.stdin is not None
        with self._write_lock:
            try:
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise ForkError(f"the fork server (pid {self.pid}) does not take requests: {exc}") from exc
        return request_id

    def answer(self, request_id: int, timeout: float | None) -> _Child | None:
        """The forked child once the server has answered ``request_id``; None while it has not, after
        ``timeout`` seconds (None: up to :data:`FORK_TIMEOUT`). Raises ForkError when no child will come."""
        with self._cond:
            answered = self._cond.wait_for(
                lambda: request_id in self._answers or not self.alive,
                FORK_TIMEOUT if timeout is None else timeout,
            )
            answer = self._answers.pop(request_id, None)
        if answer is None:
            if answered:
                raise ForkError(f"the fork server (pid {self.pid}) exited before it started the cell")
            if timeout is not None:
                return None
            self.close(timeout=0)  # hung: a late answer would start a cell nobody watches
            raise ForkError(f"the fork server (pid {self.pid}) did not answer within {FORK_TIMEOUT:g}s")
        if isinstance(answer, str):
            raise ForkError(f"the fork server could not start the cell: {answer}")
        return answer

    def _gone(self, child: _Child) -> bool:
        """Whether ``child`` has exited; with its server dead, a child no longer running has (how: unknown).
        Call with the condition held."""
        if not child.exited and not self.alive and not process_alive(child.pid):
            child.exited = True
        return child.exited

    def exited(self, child: _Child) -> bool:
        with self._cond:
            return self._gone(child)

    def wait(self, child: _Child, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._gone(child):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if not self.alive:
                    remaining = _ORPHAN_POLL_S if remaining is None else min(remaining, _ORPHAN_POLL_S)
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """End the server: its stdin ends, it exits (killed after ``timeout`` seconds)."""
        with contextlib.suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5.0)


class CellForker:
    """Starts cells by asking a fork server, started on first use and ended by :meth:`close`. Thread-safe.

    Once the server fails to start a cell it is not asked again: :meth:`request` raises ForkError, and
    the caller starts a new interpreter instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: _ServerProcess | None = None
        self._failure: ForkError | None = None

    def request(self, request: dict[str, Any]) -> tuple[_ServerProcess, int]:
        """Send ``request`` to the server (started, or started again if it died); the server and the id."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            try:
                if self._server is None or not self._server.alive:
                    if self._server is not None:
                        self._server.close(timeout=0)
                    try:
                        self._server = _ServerProcess()
                    except OSError as exc:
                        raise ForkError(f"the fork server did not start: {exc}") from exc
                return self._server, self._server.request(request)
            except ForkError as exc:
                self._fail(exc)
                raise

    def failed(self, exc: ForkError) -> None:
        """The server could not start a cell: start no more cells there."""
        with self._lock:
            self._fail(exc)

    def _fail(self, exc: ForkError) -> None:
        if self._failure is None:
            self._failure = exc
            _warn_once(exc)

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.close(timeout)


_WARNED = False


def _warn_once(exc: ForkError) -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(
            f"{exc}; the local executor starts each cell as a new interpreter instead (slower to start)",
            RuntimeWarning,
            stacklevel=2,
        )


class ForkedCell(CellRun):
    """A cell forked by ``forker``'s server, in the caller's working directory and environment.

    Starting it does not wait for the server (whose imports take a moment the first time): the cell's pid
    is known once the server has answered. A cell the server could not start is started as a new
    interpreter (:class:`CellProcess`) instead.
    """

    def __init__(self, spec: CellSpec, workdir: Path, name: str, forker: CellForker) -> None:
        super().__init__(spec, workdir, name)  # the log is opened here, now: an error is the caller's
        self._where = (workdir, name)
        self._forker = forker
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._instead: CellProcess | None = None
        self._server, self._request = forker.request(
            {
                "spec": spec.to_json(),
                "result": os.path.abspath(self.result_path),
                "log": os.path.abspath(self.log_path),
                "cwd": os.getcwd(),
                "env": self.env,
            }
        )

    def _started(self, timeout: float | None) -> bool:
        """Whether the cell's process exists, waiting up to ``timeout`` seconds (None: until it does)."""
        with self._lock:
            if self._child is None and self._instead is None:
                try:
                    self._child = self._server.answer(self._request, timeout)
                except ForkError as exc:
                    self._forker.failed(exc)
                    self._instead = CellProcess(self.spec, *self._where, mark=self.mark)
            return self._child is not None or self._instead is not None

    @property
    def pid(self) -> int:
        self._started(None)
        if self._instead is not None:
            return self._instead.pid
        assert self._child is not None
        return self._child.pid

    def _exited(self) -> bool:
        if not self._started(0):
            return False
        if self._instead is not None:
            return self._instead._exited()
        assert self._child is not None
        return self._server.exited(self._child)

    def _returncode(self) -> int | None:
        if self._instead is not None:
            return self._instead._returncode()
        return self._child.code if self._child is not None else None

    def _wait_exit(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._started(timeout):
            return False
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if self._instead is not None:
            return self._instead._wait_exit(remaining)
        assert self._child is not None
        return self._server.wait(self._child, remaining)


if __name__ == "__main__":
    sys.exit(serve())
