"""SIGTERM to a process whose sessions run in worker threads: every session is torn down, the process dies
of SIGTERM, and a host with its own handler gets the same through ``fsm_runner.shutdown()``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fsm_runner.engine import lifecycle
from fsm_runner.engine.lifecycle import Interrupted, register_live, session_use, shutdown, unregister_live
from fsm_runner.evidence.journal import read_journal
from fsm_runner.evidence.records import TransitionRecord
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution import interrupts
from fsm_runner.execution.commands import run_command
from fsm_runner.execution.policy import SecurityPolicy
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid, wait_for_file
from tests.helpers import target_files as files

HOLD = "echo $$ > .aider_fsm/cmd.pid && touch .aider_fsm/holding && sleep 60"
#: The fixture pipeline with the rollout held by a command that records its pid.
HELD = files.PIPELINE.replace("    - python3 rollout.py\n", f"    - {HOLD}\n    - python3 rollout.py\n")

HOST_HANDLER = textwrap.dedent(
    """
    def on_sigterm(signum, frame):
        fsm_runner.shutdown()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    """
)

#: argv: handler (default | host), then one or more "thread:repo" (thread: main | worker).
DRIVER = textwrap.dedent(
    """
    import signal, sys, threading, time
    import fsm_runner

    if sys.argv[1] == "host":
        exec(sys.argv[2])

    def use(repo):
        try:
            with fsm_runner.setup(repo) as sess:
                print("run_dir", sess.run_dir, flush=True)
                sess.rollout(llm="m")
                print("idle", flush=True)
                time.sleep(60)  # a training step between calls
        except fsm_runner.Interrupted as exc:
            print("interrupted", repo, exc, flush=True)

    for spec in sys.argv[3:]:
        where, repo = spec.split(":", 1)
        if where == "main":
            use(repo)
        else:
            threading.Thread(target=use, args=(repo,), daemon=True).start()
    while True:
        time.sleep(0.1)
    """
)


def start(handler: str, *specs: str) -> subprocess.Popen[str]:
    script = HOST_HANDLER if handler == "host" else ""
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, handler, script, *specs],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def records(run_dir: Path) -> list[TransitionRecord]:
    read = read_journal(run_dir / "journal.jsonl")
    assert read.problem is None, read.problem
    return list(read.records)


def run_dir_of(repo: Path) -> Path:
    [run_dir] = (repo / ".aider_fsm" / "artifacts").iterdir()
    return run_dir


def wait_idle(proc: subprocess.Popen[str], count: int = 1) -> None:
    assert proc.stdout is not None
    seen = 0
    while seen < count:
        line = proc.stdout.readline()
        assert line, f"the driver exited ({proc.wait()}) before its sessions went idle: {proc.stderr}"
        seen += line.strip() == "idle"


def exit_status(proc: subprocess.Popen[str], handler: str) -> None:
    code = proc.wait(timeout=60)
    assert code == (-signal.SIGTERM if handler == "default" else 128 + signal.SIGTERM), proc.stderr


def assert_interrupted_in_rollout(repo: Path) -> None:
    run_dir = run_dir_of(repo)
    run = json.loads((run_dir / "run.json").read_text())
    assert (run["status"], run["deployed"], run["deploy_pgids"]) == ("interrupted", False, [])
    journal = records(run_dir)
    interrupt = next(r for r in journal if r.trigger == "interrupt")
    assert (interrupt.source, interrupt.status, interrupt.reason) == ("rollout", "interrupted", "received SIGTERM")
    assert journal[-1].trigger == "cleanup" and journal[-1].outcome is not None
    assert journal[-1].outcome.status == "ok"  # the contract's teardown ran


def assert_closed(repo: Path) -> None:
    run_dir = run_dir_of(repo)
    run = json.loads((run_dir / "run.json").read_text())
    assert (run["status"], run["deployed"]) == ("closed", False)
    journal = records(run_dir)
    [wind_down] = [r for r in journal if r.trigger == "wind_down"]
    assert wind_down.reason == "session closed: received SIGTERM"
    assert (journal[-1].source, journal[-1].dest) == ("teardown", "done")


@pytest.mark.parametrize("handler", ["default", "host"])
def test_sigterm_during_a_command_of_a_worker_thread_session(make_target: TargetFactory, handler: str) -> None:
    repo = make_target(pipeline=HELD)
    proc = start(handler, f"worker:{repo}")
    try:
        wait_for_file(repo / ".aider_fsm" / "holding", proc)
        service, command = service_pid(repo), int((repo / ".aider_fsm" / "cmd.pid").read_text())
        assert service is not None and pid_alive(service) and pid_alive(command)
        proc.send_signal(signal.SIGTERM)
        exit_status(proc, handler)
    finally:
        proc.kill()
    assert not pid_alive(service) and not pid_alive(command)
    assert procs_in(repo) == [], "a process of the run survived"
    assert_interrupted_in_rollout(repo)


@pytest.mark.parametrize("handler", ["default", "host"])
def test_sigterm_while_a_worker_thread_session_is_idle(make_target: TargetFactory, handler: str) -> None:
    repo = make_target()
    proc = start(handler, f"worker:{repo}")
    try:
        wait_idle(proc)
        service = service_pid(repo)
        assert service is not None and pid_alive(service)
        proc.send_signal(signal.SIGTERM)
        exit_status(proc, handler)
    finally:
        proc.kill()
    assert not pid_alive(service) and procs_in(repo) == []
    assert_closed(repo)


def test_every_session_of_every_thread_is_torn_down(make_target: TargetFactory) -> None:
    """A busy worker, an idle worker and a call in the main thread: the main thread's call raises
    Interrupted as it always has, after the other threads' sessions are gone."""
    busy, idle, main = make_target("busy", pipeline=HELD), make_target("idle"), make_target("main", pipeline=HELD)
    proc = start("default", f"worker:{idle}", f"worker:{busy}", f"main:{main}")
    try:
        wait_idle(proc)
        wait_for_file(busy / ".aider_fsm" / "holding", proc)
        wait_for_file(main / ".aider_fsm" / "holding", proc)
        services = [service_pid(repo) for repo in (busy, idle, main)]
        assert all(pid is not None and pid_alive(pid) for pid in services)
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        out = ""
        while f"interrupted {main} received SIGTERM" not in out:  # the main thread caught Interrupted
            assert time.monotonic() < deadline and proc.poll() is None, out
            out += proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert not any(pid_alive(pid) for pid in services if pid is not None)
    assert procs_in(busy) == procs_in(idle) == procs_in(main) == []
    assert_interrupted_in_rollout(busy)
    assert_interrupted_in_rollout(main)
    assert_closed(idle)


@pytest.mark.parametrize("opened", [False, True], ids=["never", "closed"])
def test_a_process_with_no_live_session_still_dies_of_sigterm(make_target: TargetFactory, opened: bool) -> None:
    script = (
        "import signal, sys, time, fsm_runner\n"
        "assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # taken at import\n"
        "if sys.argv[1]:\n"
        "    fsm_runner.setup(sys.argv[1]).close()\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    target = str(make_target()) if opened else ""
    proc = subprocess.Popen([sys.executable, "-c", script, target], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM


# -- in one process: who tears down what ------------------------------------------------------------------


class Stub:
    """A live session as the lifecycle sees it; records what happened to it."""

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self.closed = 0
        self.abandoned = 0
        self.on_close = on_close

    def close(self) -> None:
        self.closed += 1
        if self.on_close is not None:
            self.on_close()

    def _end_processes(self) -> None:
        self.abandoned += 1


@pytest.fixture
def live() -> Iterator[Callable[[Stub], Stub]]:
    registered: list[Stub] = []

    def add(stub: Stub) -> Stub:
        register_live(stub)
        registered.append(stub)
        return stub

    yield add
    for stub in registered:
        unregister_live(stub)


def in_thread(body: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    raised: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def test_a_session_is_used_by_one_thread_at_a_time() -> None:
    stub, order, inside = Stub(), [], threading.Event()

    def first() -> None:
        with session_use(stub):
            inside.set()
            time.sleep(0.2)
            order.append("first")

    def second() -> None:
        inside.wait()
        with session_use(stub, new_work=False), session_use(stub):  # and it nests in one thread
            order.append("second")

    threads = [in_thread(first)[0], in_thread(second)[0]]
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["first", "second"]


def test_shutdown_stops_busy_sessions_in_their_thread_and_closes_idle_ones(
    live: Callable[[Stub], Stub], tmp_path: Path
) -> None:
    refused: list[BaseException] = []

    def try_new_work_elsewhere() -> None:  # runs while the shutdown closes the idle session
        def attempt() -> None:
            with session_use(Stub(), new_work=False):
                pass  # closing is still allowed
            with session_use(Stub()):
                pass

        thread, raised = in_thread(attempt)
        thread.join(timeout=10)
        refused.extend(raised)

    busy, idle = live(Stub()), live(Stub(try_new_work_elsewhere))

    def call() -> None:
        with session_use(busy):
            run_command(
                "sleep 30",
                cwd=tmp_path,
                env={"PATH": "/usr/bin:/bin"},
                out_dir=tmp_path,
                name="cmd",
                timeout=60,
                policy=SecurityPolicy(),
                redactor=Redactor(),
            )

    worker, raised = in_thread(call)
    deadline = time.monotonic() + 10
    while not interrupts._WAITS.get(worker.ident or 0):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    shutdown(timeout=10)
    assert time.monotonic() - started < 5
    assert not worker.is_alive()
    assert [type(exc) for exc in raised] == [Interrupted]  # the busy call ended in its own thread
    assert (busy.closed, busy.abandoned, idle.closed) == (0, 0, 1)
    assert [type(exc) for exc in refused] == [Interrupted]
    with session_use(Stub()):  # the shutdown is over: sessions may be used again
        pass


def test_a_session_still_busy_when_time_is_up_has_its_processes_ended(live: Callable[[Stub], Stub]) -> None:
    stuck, release = live(Stub()), threading.Event()

    def call() -> None:
        with session_use(stuck):
            release.wait(30)  # Python code that never reaches a stop check

    worker, _ = in_thread(call)
    time.sleep(0.05)
    started = time.monotonic()
    shutdown(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    assert (stuck.closed, stuck.abandoned) == (0, 1)
    release.set()
    worker.join(timeout=10)


def test_a_close_that_fails_does_not_stop_the_shutdown(live: Callable[[Stub], Stub]) -> None:
    def boom() -> None:
        raise RuntimeError("close failed")

    failing, fine = live(Stub(boom)), live(Stub())
    shutdown(timeout=1)
    assert (failing.closed, fine.closed) == (1, 1)


def test_a_forked_child_leaves_its_parents_sessions_alone(live: Callable[[Stub], Stub], tmp_path: Path) -> None:
    marker = tmp_path / "closed-in-child"
    live(Stub(lambda: marker.write_text(str(os.getpid()))))
    pid = os.fork()
    if pid == 0:  # the child: SIGTERM through the runner's handler, with no session of its own
        try:
            signal.signal(signal.SIGTERM, lifecycle._on_sigterm)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert not marker.exists()
