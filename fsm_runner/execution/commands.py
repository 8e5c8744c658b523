"""Run contract commands: one ``bash -c`` per attempt, in its own process group, output straight to files.

The runner never holds a command's output in memory: the child's stdout and stderr *are* the evidence files.
That keeps memory flat for any output size and means a grandchild that keeps the files open cannot block the
runner. Every attempt leaves ``cmdNN_tryMM.{stdout,stderr,json}``; secrets are masked once the command is
done.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import define, field, validators

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.atomic import write_json_atomic
from fsm_runner.evidence.layout import (
    ATTEMPT_RESULT_GLOB,
    RESULT_SUFFIX,
    STDERR_SUFFIX,
    STDOUT_SUFFIX,
    attempt_name,
)
from fsm_runner.evidence.redaction import Redactor
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

TAIL_BYTES = 2048
#: What an attempt file of a command still running says (read without parsing every attempt file).
_RUNNING = re.compile(rb'"running":\s*true')
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

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.blocked is None

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
            "tail": self.tail,
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


def _tail(path: Path, redactor: Redactor, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``path``, secrets masked.

    The file may not be masked yet (a service still writes to it), so a little more is read and masked
    first, and the start of what was read is dropped after masking: a secret cut in two by the start of the
    tail never shows half of itself.
    """
    extra = redactor.longest
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:  # never through a link
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            start = max(0, size - limit - extra)
            fh.seek(start)
            data = redactor.mask_bytes(fh.read(limit + extra))
    except OSError:
        return ""
    if start:
        data = data[extra:]
    text = data[-limit:].decode("utf-8", errors="replace")
    return ("..." + text) if size > limit else text


def last_output_line(path: Path, redactor: Redactor) -> str:
    """The last non-blank line of a command's output file so far, secrets masked ("" when there is none).

    What a heartbeat shows of a command still running: its output is not masked on disk yet.
    """
    lines = _tail(path, redactor).splitlines()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


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
) -> CommandResult:
    """Run one attempt of ``cmd`` with ``bash -c`` and record it under ``out_dir/name.*``.

    A command the policy blocks is never started. On timeout the whole process group gets SIGTERM, then
    SIGKILL after ``kill_grace`` seconds. After a normal exit, processes left in the group are killed, unless
    ``keep_background`` is set: then the still-running group's id is returned in ``pgid`` (for teardown).
    With a ``sandbox`` (a run's :class:`~fsm_runner.execution.sandbox.Sandbox`, or its view for service
    commands), ``bash -c`` runs inside it; ``argv`` records the whole command line.
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
    try:
        wrapped = _in_sandbox(argv, Path(cwd), out_dir, sandbox)
        common["argv"] = wrapped.argv
        proc, pumps = spawn_group(
            list(wrapped.argv), Path(cwd), clean_env, stdout_path, stderr_path, interactive, wrapped.pass_fds
        )
    except OSError as exc:
        where = "bash in the sandbox" if sandbox is not None else "bash"
        return _not_started(
            CommandResult(**common, **files), f"could not start {where} in {cwd}", exc, start, redactor
        )

    leader_start = process_start_time(proc.pid)
    timed_out = False
    try:
        # Written while the child starts up: if the runner dies now, this says which group to clean up.
        _record_running(CommandResult(**common, **files, pgid=proc.pid, leader_start=leader_start), redactor)
        if not wait_or_stop(proc, timeout):
            timed_out = True
            stop_and_reap(proc, kill_grace)
    except BaseException:  # Ctrl-C, a signal handler raising or a stop request: leave nothing behind
        stop_and_reap(proc, 0.2)
        _mask_outputs(redactor, stdout_path, stderr_path, quiet=True)
        raise
    duration = time.monotonic() - start

    background: int | None = None
    if not timed_out and group_alive(proc.pid):
        if keep_background:
            background = proc.pid
        else:
            kill_group(proc.pid, grace=kill_grace)
    # A grandchild that left the group may hold the pipes open: bound the whole wait, not each join.
    pumps_deadline = time.monotonic() + 0.5
    for pump in pumps:
        pump.join(timeout=max(0.0, pumps_deadline - time.monotonic()))

    if background is None:
        # A service left running still writes to these files: they are masked when it has been ended.
        _mask_outputs(redactor, stdout_path, stderr_path)
    tail = _tail(stderr_path, redactor)
    if not tail.strip():
        tail = _tail(stdout_path, redactor)
    result = CommandResult(
        **common,
        **files,
        exit_code=proc.returncode,
        duration_s=duration,
        timed_out=timed_out,
        tail=tail,
        pgid=background,
        leader_start=leader_start if background is not None else None,
    )
    return _record(result, redactor)


def _in_sandbox(argv: list[str], cwd: Path, out_dir: Path, sandbox: CommandSandbox | None) -> Wrapped:
    """The command line as it is spawned: in the sandbox (writing its evidence to ``out_dir``), or as is."""
    return sandbox.wrap(argv, cwd, evidence=out_dir) if sandbox is not None else Wrapped(tuple(argv))


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


def _mask_outputs(redactor: Redactor, *paths: Path, quiet: bool = False) -> None:
    """Mask an ended command's output files; ``quiet`` when an interrupt is what the caller must see."""
    if redactor.active:
        for path in paths:
            with contextlib.suppress(*((EvidenceError,) if quiet else ())):
                redactor.mask_file(path)


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


def interrupted_command_groups(run_dir: Path) -> list[int]:
    """Process groups of commands that were still running when a runner died, and are still alive.

    A runner killed with SIGKILL cannot stop the command it was waiting for; its ``cmdNN_tryMM.json`` still
    says ``"running": true`` with the group id and the leader's start time. Whatever starts work on the
    run's tree again (setup, replay) calls this to find and end those groups first.
    """
    found: list[int] = []
    for folder, _dirs, names in sorted(os.walk(run_dir)):  # setup scans every dead run: os.walk is quick
        for name in sorted(fnmatch.filter(names, ATTEMPT_RESULT_GLOB)):
            try:
                raw = Path(folder, name).read_bytes()
                doc = json.loads(raw) if _RUNNING.search(raw) else None
            except (OSError, ValueError):
                continue
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
    evidence = result.stderr_path if result.stderr_path and result.error is None else result.result_path
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
) -> StageRun:
    """Run a stage's commands in order, each up to ``1 + retries`` times; stop at the first that never passes.

    ``total_budget`` (seconds, for the whole stage) caps each command's timeout by what is left of it; once it
    is spent the stage stops with ``budget_exceeded``. A blocked command is not retried (it would be blocked
    again). Writes one file set per attempt; the stage summary is the caller's job. ``sandbox`` is
    :func:`run_command`'s.
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
                error += f" ({_one_line(last.outcome(), 200)}); see {last.stderr_path or last.result_path}"
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
