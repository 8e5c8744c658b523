"""Run contract commands: one ``bash -c`` per attempt, in its own process group, output straight to files.

The runner never holds a command's output in memory: the child's stdout and stderr *are* the evidence files.
That keeps memory flat for any output size and means a grandchild that keeps the files open cannot block the
runner. Every attempt leaves ``cmdNN_tryMM.{stdout,stderr,json}``; secrets are masked once the command is
done.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import define, field, validators

from fsm_runner.contract.fields import DEFAULT_MAX_OUTPUT_BYTES
from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.atomic import write_json_atomic
from fsm_runner.evidence.confine import open_regular
from fsm_runner.evidence.layout import (
    ATTEMPT_RESULT_GLOB,
    RESULT_SUFFIX,
    STDERR_SUFFIX,
    STDOUT_SUFFIX,
    attempt_name,
)
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.interrupts import deferred_signals
from fsm_runner.execution.outputs import finish_outputs, output_tail
from fsm_runner.execution.policy import SecurityPolicy
from fsm_runner.execution.process import (
    group_alive,
    kill_group,
    process_start_time,
    running_group,
    spawn_group,
    stop_and_reap,
    wait_or_stop,
)
from fsm_runner.execution.sandbox import CommandSandbox, Wrapped

#: What an attempt file of a command still running says (read without parsing every attempt file).
_RUNNING = re.compile(rb'"running":\s*true')
#: What an attempt file of a command that left its group running (for teardown) says.
_KEPT = re.compile(rb'"pgid":\s*\d')
DEFAULT_KILL_GRACE = 2.0


def _str_tuple(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(items)


def _int_tuple(items: Iterable[int]) -> tuple[int, ...]:
    return tuple(items)


def _results_tuple(items: Iterable[CommandResult]) -> tuple[CommandResult, ...]:
    return tuple(items)


_optional_str = validators.optional(validators.instance_of(str))
_optional_float = validators.optional(validators.instance_of((int, float)))


@define(frozen=True, kw_only=True)
class CommandResult:
    """What one attempt of one command did; ``to_json`` is what lands in ``cmdNN_tryMM.json``."""

    cmd: str = field(validator=validators.instance_of(str))
    argv: tuple[str, ...] = field(converter=_str_tuple)
    cwd: str = field(validator=validators.instance_of(str))
    index: int = field(default=1, validator=validators.ge(1))
    attempt: int = field(default=1, validator=validators.ge(1))
    exit_code: int | None = field(default=None, validator=validators.optional(validators.instance_of(int)))
    duration_s: float = field(default=0.0, validator=validators.ge(0))
    timed_out: bool = False
    blocked: str | None = field(default=None, validator=_optional_str)
    stdout_path: str | None = field(default=None, validator=_optional_str)
    stderr_path: str | None = field(default=None, validator=_optional_str)
    result_path: str | None = field(default=None, validator=_optional_str)
    tail: str = ""
    pgid: int | None = None
    timeout_s: float | None = field(default=None, validator=_optional_float)
    error: str | None = field(default=None, validator=_optional_str)  # the command could not be started
    leader_start: int | None = None  # start time of the group leader, to recognise ``pgid`` later
    #: The output file ``tail`` was read from: stderr, or stdout when stderr is blank (None: no output).
    tail_path: str | None = field(default=None, validator=_optional_str)
    stdout_cut_bytes: int = 0  # bytes cut from the middle of the stdout file (artifacts.max_output_bytes)
    stderr_cut_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.blocked is None

    @property
    def output_path(self) -> str | None:
        """The file to point a reader at: the stream that holds the output, else stderr, else the record."""
        return self.tail_path or self.stderr_path or self.result_path

    def outcome(self) -> str:
        """A few words on how the attempt ended: ``exit code 3``, ``timed out after 5s``, ``blocked: ...``."""
        if self.blocked is not None:
            return f"blocked by the security policy: {self.blocked}"
        if self.error is not None:
            return self.error
        if self.timed_out:
            return (
                f"timed out after {round(self.timeout_s, 2):g}s"
                if self.timeout_s is not None
                else "timed out"
            )
        if self.exit_code is not None and self.exit_code < 0:
            try:
                return f"killed by {signal.Signals(-self.exit_code).name}"
            except ValueError:
                return f"killed by signal {-self.exit_code}"
        return f"exit code {self.exit_code}"

    def to_json(self) -> dict[str, Any]:
        return {
            "cmd": self.cmd,
            "argv": list(self.argv),
            "cwd": self.cwd,
            "index": self.index,
            "attempt": self.attempt,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 6),
            "timeout_s": self.timeout_s,
            "timed_out": self.timed_out,
            "blocked": self.blocked,
            "error": self.error,
            "stdout_path": self.stdout_path,
            "stderr_path": self.stderr_path,
            "result_path": self.result_path,
            "pgid": self.pgid,
            "leader_start": self.leader_start,
            "running": False,
            "stdout_cut_bytes": self.stdout_cut_bytes,
            "stderr_cut_bytes": self.stderr_cut_bytes,
            "tail": self.tail,
            "tail_path": self.tail_path,
        }


@define(frozen=True, kw_only=True)
class StageRun:
    """The commands of one stage: every attempt, whether the stage passed, and why not in one line."""

    ok: bool
    results: tuple[CommandResult, ...] = field(default=(), converter=_results_tuple)
    duration_s: float = 0.0
    budget_exceeded: bool = False
    background_pgids: tuple[int, ...] = field(default=(), converter=_int_tuple)
    error: str | None = None

    @property
    def last(self) -> CommandResult | None:
        return self.results[-1] if self.results else None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "duration_s": round(self.duration_s, 6),
            "budget_exceeded": self.budget_exceeded,
            "background_pgids": list(self.background_pgids),
            "error": self.error,
            "results": [r.to_json() for r in self.results],
        }


def _check_env(env: Mapping[str, str]) -> dict[str, str]:
    clean: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError(
                f"environment entry {key!r}={value!r} must map a string to a string; quote it in the contract"
            )
        clean[key] = value
    return clean


def run_command(
    cmd: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    out_dir: Path,
    name: str,
    timeout: float | None,
    policy: SecurityPolicy,
    redactor: Redactor,
    interactive: bool = False,
    keep_background: bool = False,
    index: int = 1,
    attempt: int = 1,
    kill_grace: float = DEFAULT_KILL_GRACE,
    sandbox: CommandSandbox | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> CommandResult:
    """Run one attempt of ``cmd`` with ``bash -c`` and record it under ``out_dir/name.*``.

    A command the policy blocks is never started. On timeout the whole process group gets SIGTERM, then
    SIGKILL after ``kill_grace`` seconds. After a normal exit, processes left in the group are killed, unless
    ``keep_background`` is set: then the still-running group's id is returned in ``pgid`` (for teardown).
    With a ``sandbox`` (a run's :class:`~fsm_runner.execution.sandbox.Sandbox`, or its view for service
    commands), ``bash -c`` runs inside it; ``argv`` records the whole command line. Once the command has
    ended, each output file longer than ``max_output_bytes`` keeps its head and tail (:func:`cap_output`),
    after masking; the bytes cut are recorded. Output a service left running still writes is capped when
    it has been ended.
    """
    if timeout is not None and timeout <= 0:
        raise UsageError(f"timeout for {name} must be positive, got {timeout!r}")
    clean_env = _check_env(env)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(f"cannot create the evidence directory {out_dir}: {exc.strerror or exc}") from exc
    argv = ["bash", "-c", cmd]
    result_path = out_dir / f"{name}{RESULT_SUFFIX}"
    common: dict[str, Any] = {
        "cmd": cmd,
        "argv": argv,
        "cwd": str(cwd),
        "index": index,
        "attempt": attempt,
        "timeout_s": timeout,
        "result_path": str(result_path),
    }
    reason = policy.check(cmd, env=clean_env)
    if reason is not None:
        return _record(CommandResult(**common, blocked=reason), redactor)

    stdout_path = out_dir / f"{name}{STDOUT_SUFFIX}"
    stderr_path = out_dir / f"{name}{STDERR_SUFFIX}"
    files: dict[str, Any] = {"stdout_path": str(stdout_path), "stderr_path": str(stderr_path)}
    start = time.monotonic()
    proc: subprocess.Popen[bytes] | None = None
    timed_out = False
    try:
        # A signal waits until the command is started and on record: then the except below ends it.
        with deferred_signals():
            try:
                outputs = (stdout_path, stderr_path)
                proc, pumps = _spawn(argv, Path(cwd), clean_env, outputs, common, interactive, sandbox)
            except OSError as exc:
                where = "bash in the sandbox" if sandbox is not None else "bash"
                failed = CommandResult(**common, **files)
                return _not_started(failed, f"could not start {where} in {cwd}", exc, start, redactor)
            leader_start = process_start_time(proc.pid)
            # Written while the child starts up: if the runner dies now, this says which group to clean up.
            running = CommandResult(**common, **files, pgid=proc.pid, leader_start=leader_start)
            _record_running(running, redactor)
        if not wait_or_stop(proc, timeout):
            timed_out = True
            stop_and_reap(proc, kill_grace)
    except BaseException:  # Ctrl-C, a signal handler raising or a stop request: leave nothing behind
        if proc is not None:
            stop_and_reap(proc, 0.2)
            finish_outputs(redactor, max_output_bytes, stdout_path, stderr_path, quiet=True)
        raise
    duration = time.monotonic() - start

    background = _settle(proc, pumps, keep=keep_background and not timed_out, kill_grace=kill_grace)
    # A service left running still writes to these files: they are masked and capped once it has ended.
    cut = (0, 0)
    if background is None:
        cut = finish_outputs(redactor, max_output_bytes, stdout_path, stderr_path)
    tail, tail_path = output_tail(stdout_path, stderr_path, redactor)
    result = CommandResult(
        **common,
        **files,
        exit_code=proc.returncode,
        duration_s=duration,
        timed_out=timed_out,
        tail=tail,
        tail_path=tail_path,
        pgid=background,
        leader_start=leader_start if background is not None else None,
        stdout_cut_bytes=cut[0],
        stderr_cut_bytes=cut[1],
    )
    return _record(result, redactor)


def _spawn(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    outputs: tuple[Path, Path],
    common: dict[str, Any],
    interactive: bool,
    sandbox: CommandSandbox | None,
) -> tuple[subprocess.Popen[bytes], list[threading.Thread]]:
    """Start the command, in the sandbox when there is one (writing its evidence beside ``outputs``), its
    stdout and stderr going to ``outputs``; ``common["argv"]`` becomes the command line as it was started.
    Raises OSError when it cannot start."""
    wrapped = Wrapped(tuple(argv))
    if sandbox is not None:
        wrapped = sandbox.wrap(argv, cwd, evidence=outputs[0].parent)
    common["argv"] = wrapped.argv
    return spawn_group(list(wrapped.argv), cwd, env, *outputs, interactive, wrapped.pass_fds)


def _settle(
    proc: subprocess.Popen[bytes], pumps: list[threading.Thread], *, keep: bool, kill_grace: float
) -> int | None:
    """After the command's leader has ended: what is left in its group is kept (``keep``: a deploy's
    services, whose group is returned for teardown) or killed; the output copied to the terminal is done."""
    background: int | None = None
    if group_alive(proc.pid):
        if keep:
            background = proc.pid
        else:
            kill_group(proc.pid, grace=kill_grace)
    # A grandchild that left the group may hold the pipes open: bound the whole wait, not each join.
    pumps_deadline = time.monotonic() + 0.5
    for pump in pumps:
        pump.join(timeout=max(0.0, pumps_deadline - time.monotonic()))
    return background


def _not_started(
    result: CommandResult, what: str, exc: OSError, start: float, redactor: Redactor
) -> CommandResult:
    """Record an attempt whose process could not be started: the reason is its stderr and its error."""
    error = f"{what}: {exc.strerror or exc}"
    assert result.stdout_path is not None and result.stderr_path is not None
    Path(result.stdout_path).touch()
    Path(result.stderr_path).write_text(f"fsm-runner: {error}\n", encoding="utf-8")
    duration = time.monotonic() - start
    return _record(attrs.evolve(result, duration_s=duration, error=error, tail=error), redactor)


def _record(result: CommandResult, redactor: Redactor) -> CommandResult:
    assert result.result_path is not None
    # Atomic but not fsynced: one fsync per attempt was most of the executor's overhead, and the per-attempt
    # files are evidence, not state (the engine's journal is the durable record).
    write_json_atomic(Path(result.result_path), redactor.scrub(result.to_json()), fsync=False)
    return result


def _record_running(result: CommandResult, redactor: Redactor) -> None:
    assert result.result_path is not None
    doc = {**result.to_json(), "running": True}
    write_json_atomic(Path(result.result_path), redactor.scrub(doc), fsync=False)


def leftover_command_groups(run_dir: Path) -> list[int]:
    """Process groups of a dead run's commands that are still alive: those still running when its runner
    died, and those a command left running for teardown (a deploy's services).

    A runner killed with SIGKILL cannot stop the command it was waiting for; its ``cmdNN_tryMM.json`` still
    says ``"running": true`` with the group id and the leader's start time. A deploy command that has ended
    records the group it leaves (``pgid``, ``leader_start``) before the run records it as deployed: a kill
    in between leaves the services known only to that file. Whatever starts work on the run's tree again
    (setup, replay) calls this to find and end those groups first.
    """
    found: list[int] = []
    for folder, _dirs, names in sorted(os.walk(run_dir)):  # setup scans every dead run: os.walk is quick
        for name in sorted(fnmatch.filter(names, ATTEMPT_RESULT_GLOB)):
            try:
                with open_regular(Path(folder, name)) as fh:  # never a FIFO a command left
                    raw = fh.read()
                doc = json.loads(raw) if _RUNNING.search(raw) or _KEPT.search(raw) else None
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and doc.get("running") is False:
                doc = {**doc, "running": True}  # a group kept for teardown: still there while it lives
            pgid = running_group(doc)
            if pgid is not None and pgid not in found:
                found.append(pgid)
    return found


def _one_line(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _failure_message(stage: str, total: int, result: CommandResult, attempts: int, redactor: Redactor) -> str:
    where = f"{stage}: command {result.index}/{total} `{_one_line(redactor.mask(result.cmd))}`"
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    evidence = result.output_path if result.error is None else result.result_path
    return f"{where} {_one_line(redactor.mask(result.outcome()), 200)}{tries}; see {evidence}"


def run_commands(
    cmds: Sequence[str],
    *,
    stage: str,
    cwd: Path,
    env: Mapping[str, str],
    out_dir: Path,
    timeout: float | None,
    retries: int,
    total_budget: float | None,
    policy: SecurityPolicy,
    redactor: Redactor,
    interactive: bool = False,
    keep_background: bool = False,
    on_start: Callable[[str, int, int], None] | None = None,
    on_end: Callable[[CommandResult], None] | None = None,
    kill_grace: float = DEFAULT_KILL_GRACE,
    sandbox: CommandSandbox | None = None,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
) -> StageRun:
    """Run a stage's commands in order, each up to ``1 + retries`` times; stop at the first that never passes.

    ``total_budget`` (seconds, for the whole stage) caps each command's timeout by what is left of it; once it
    is spent the stage stops with ``budget_exceeded``. A blocked command is not retried (it would be blocked
    again). Writes one file set per attempt; the stage summary is the caller's job. ``sandbox`` and
    ``max_output_bytes`` are :func:`run_command`'s.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise UsageError(f"{stage}: retries must be a whole number >= 0, got {retries!r}")
    if total_budget is not None and total_budget <= 0:
        raise UsageError(f"{stage}: the total time budget must be positive, got {total_budget!r}")
    start = time.monotonic()
    total = len(cmds)
    results: list[CommandResult] = []
    error: str | None = None
    budget_exceeded = False
    for index, cmd in enumerate(cmds, 1):
        last: CommandResult | None = None
        attempts = 0
        for attempt in range(1, retries + 2):
            limit = timeout
            if total_budget is not None:
                remaining = total_budget - (time.monotonic() - start)
                if remaining <= 0:
                    budget_exceeded = True
                    break
                limit = remaining if timeout is None else min(timeout, remaining)
            if on_start is not None:
                on_start(cmd, index, attempt)
            last = run_command(
                cmd,
                cwd=cwd,
                env=env,
                out_dir=out_dir,
                name=attempt_name(index, attempt),
                timeout=limit,
                policy=policy,
                redactor=redactor,
                interactive=interactive,
                keep_background=keep_background,
                index=index,
                attempt=attempt,
                kill_grace=kill_grace,
                sandbox=sandbox,
                max_output_bytes=max_output_bytes,
            )
            attempts = attempt
            results.append(last)
            if on_end is not None:
                on_end(last)
            if last.ok or last.blocked is not None:
                break
            if total_budget is not None and time.monotonic() - start >= total_budget:
                budget_exceeded = True
                break
        if budget_exceeded:
            shown = _one_line(redactor.mask(cmd))
            error = (
                f"{stage}: the stage time budget of {total_budget:g}s (max_total_seconds) ran out at command "
                f"{index}/{total} `{shown}`"
            )
            if last is not None:
                error += f" ({_one_line(last.outcome(), 200)}); see {last.output_path}"
            break
        if last is None or not last.ok:
            assert last is not None
            error = _failure_message(stage, total, last, attempts, redactor)
            break
    return StageRun(
        ok=error is None,
        results=tuple(results),
        duration_s=time.monotonic() - start,
        budget_exceeded=budget_exceeded,
        background_pgids=tuple(r.pgid for r in results if r.pgid is not None),
        error=error,
    )
