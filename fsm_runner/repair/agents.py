"""Repair agents: the request they get, the reply they give, and the adapters for callables and CLIs.

An agent is anything with ``repair(request) -> RepairReply``; :func:`as_agent` adapts a plain callable or an
external coding-agent command line. Agent failures become ``ok=False`` replies, never exceptions.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from attrs import define, field, validators

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.atomic import write_json_atomic, write_text_atomic
from fsm_runner.evidence.layout import AGENT_OUTPUT, AGENT_PROCESS, REPAIR_PROMPT, REPAIR_REQUEST
from fsm_runner.execution.interrupts import deferred_signals
from fsm_runner.execution.process import (
    kill_group,
    live_processes,
    process_start_time,
    spawn_group,
    stop_and_reap,
    wait_or_stop,
)
from fsm_runner.execution.sandbox import Sandbox


def str_tuple(value: Iterable[str] | str) -> tuple[str, ...]:
    """A lone string is one item (one glob, one path), not its characters."""
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


@define(frozen=True)
class RepairRequest:
    """Everything an agent needs to fix a failed phase; ``work_dir`` is the ``repair_NN`` evidence dir.

    ``sandbox`` is the run's sandbox when it has one: :class:`CommandAgent` runs the agent in it, and an agent
    of your own may wrap the programs it starts with :meth:`Sandbox.wrap` too.
    """

    repo: Path = field(converter=Path)
    phase: str = field(validator=validators.instance_of(str))
    error_kind: str = field(validator=validators.instance_of(str))
    error_message: str = field(validator=validators.instance_of(str))
    evidence_paths: tuple[str, ...] = field(converter=str_tuple)
    attempt: int = field(validator=[validators.instance_of(int), validators.ge(1)])
    max_attempts: int = field(validator=[validators.instance_of(int), validators.ge(1)])
    allowed_globs: tuple[str, ...] = field(converter=str_tuple)
    run_id: str = field(validator=validators.instance_of(str))
    prompt: str = field(validator=validators.instance_of(str))
    work_dir: Path = field(converter=Path)
    sandbox: Sandbox | None = field(default=None, kw_only=True, eq=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "repo": str(self.repo),
            "phase": self.phase,
            "error_kind": self.error_kind,
            "error_message": self.error_message,
            "evidence_paths": list(self.evidence_paths),
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "allowed_globs": list(self.allowed_globs),
            "run_id": self.run_id,
            "work_dir": str(self.work_dir),
            "prompt_file": str(self.work_dir / REPAIR_PROMPT),
        }


def _optional_path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


@define(frozen=True)
class RepairReply:
    """The agent's answer. ``ok`` only says the agent finished; the re-run phase decides if the fix worked."""

    ok: bool = field(validator=validators.instance_of(bool))
    summary: str = field(default="", converter=str)
    output_path: str | None = field(default=None, converter=_optional_path)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary, "output_path": self.output_path}


@runtime_checkable
class RepairAgent(Protocol):
    def repair(self, request: RepairRequest) -> RepairReply: ...


def as_reply(value: object) -> RepairReply:
    """Read any return value as a reply: a reply as is, a string as its summary, anything else as done."""
    if isinstance(value, RepairReply):
        return value
    if isinstance(value, str):
        return RepairReply(ok=True, summary=value)
    return RepairReply(ok=True)


def failure_summary(exc: BaseException) -> str:
    """An agent that raised is a failed repair, described in one line (never an exception for the run)."""
    return f"repair agent raised {type(exc).__name__}: {exc}"


@define(frozen=True)
class CallableAgent:
    """Adapts ``fn(request)``: a falsy return still counts as done; an exception becomes ``ok=False``."""

    fn: Callable[[RepairRequest], object] = field(validator=validators.is_callable())

    def repair(self, request: RepairRequest) -> RepairReply:
        try:
            return as_reply(self.fn(request))
        except Exception as exc:
            return RepairReply(ok=False, summary=failure_summary(exc))


def _argv(value: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            argv = tuple(shlex.split(value))
        except ValueError as exc:
            raise UsageError(f"repair agent command {value!r} cannot be parsed: {exc}") from None
    elif isinstance(value, Sequence) and all(isinstance(a, str) for a in value):
        argv = tuple(value)
    else:
        raise UsageError(f"repair agent command must be a string or a list of strings, got {value!r}")
    if not argv or not argv[0]:
        raise UsageError(
            "repair agent command is empty; give the agent's command line, e.g. 'aider --yes ...'"
        )
    return argv


def _env(value: Mapping[str, str] | None) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError(f"repair agent env must map strings to strings, got {value!r}")
    return dict(value)


#: Set, to a value of its own, in the environment of each command agent: a process that still carries it
#: once the agent exited was started by the agent, whatever session or process group it moved to.
AGENT_MARK_ENV = "FSM_REPAIR_AGENT_MARK"


def _agent_groups(session: int | None, leader_start: int | None, mark: str | None) -> set[int]:
    """Process groups of the live processes an agent left: those in its session, those carrying its mark,
    and those in a session a marked process is in.

    Session ``session`` is the agent's only while its leader is the recorded process or is gone: the kernel
    does not reuse a number that still names a session, so members of a session whose leader exited are
    the leader's.
    """
    if session is not None and leader_start is not None:
        started = process_start_time(session)
        if started is not None and started != leader_start:
            session = None  # the number names another process now
    needle = f"{AGENT_MARK_ENV}={mark}".encode() if mark else None
    procs: list[tuple[int, int]] = []
    sessions = {session} if session is not None else set()
    for pid, fields in live_processes():
        pgid, sid = int(fields[2]), int(fields[3])
        procs.append((pgid, sid))
        if needle is not None and sid not in sessions:
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    environ = fh.read()
            except OSError:
                continue  # another user's process, or gone
            if needle in environ.split(b"\0"):
                sessions.add(sid)
    own = {os.getsid(0), os.getpgrp()}
    return {
        pgid for pgid, sid in procs if sid in sessions and sid not in own and pgid not in own and pgid > 1
    }


def end_agent_processes(
    session: int | None, leader_start: int | None, mark: str | None, *, timeout: float = 5.0
) -> list[int]:
    """End everything a command agent left running (see :func:`_agent_groups`), including helpers that left
    its process group with ``setsid``; returns the process groups ended.

    A helper that also dropped the mark from its environment and left the agent's session is out of reach
    (under the sandbox its PID namespace ends it).
    """
    ended: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        groups = _agent_groups(session, leader_start, mark)
        if not groups:
            break
        for pgid in sorted(groups):
            with contextlib.suppress(ValueError):
                kill_group(pgid, grace=0)
            if pgid not in ended:
                ended.append(pgid)
    return ended


@define(frozen=True)
class CommandAgent:
    """Runs an external coding agent CLI in the repo, in its own process group, with the prompt as a file.

    ``argv`` may use ``{prompt_file}``, ``{request_file}`` and ``{repo}``; output goes to
    ``agent_output.log`` in the repair directory. On timeout the whole group is killed. With the request's
    ``sandbox``, the agent runs in it: it may write the repo (not the contract files) and its repair directory
    only, and nothing it starts outlives it; it keeps the host's network, which it needs to reach its model.
    """

    argv: tuple[str, ...] = field(converter=_argv)
    timeout: float = field(default=900, kw_only=True, validator=validators.gt(0))
    env: Mapping[str, str] = field(default=None, kw_only=True, converter=_env)
    kill_grace: float = field(default=3.0, kw_only=True, validator=validators.ge(0))

    def repair(self, request: RepairRequest) -> RepairReply:
        work = request.work_dir.resolve()
        work.mkdir(parents=True, exist_ok=True)
        prompt_file, request_file = work / REPAIR_PROMPT, work / REPAIR_REQUEST
        if not prompt_file.exists():
            write_text_atomic(prompt_file, request.prompt)
        if not request_file.exists():
            write_json_atomic(request_file, request.to_json())
        values = {
            "{prompt_file}": str(prompt_file),
            "{request_file}": str(request_file),
            "{repo}": str(request.repo),
        }
        argv = []
        for arg in self.argv:
            for key, val in values.items():
                arg = arg.replace(key, val)
            argv.append(arg)
        mark = os.urandom(12).hex()
        env = {
            **os.environ,
            **self.env,
            "FSM_REPAIR_REQUEST": str(request_file),
            "FSM_REPAIR_PROMPT": str(prompt_file),
            AGENT_MARK_ENV: mark,
        }
        log = work / AGENT_OUTPUT
        record = work / AGENT_PROCESS
        start = time.monotonic()
        proc: subprocess.Popen[bytes] | None = None
        group: dict[str, Any] = {}
        left: list[int] = []
        try:
            # A signal waits until the agent is started and on record: then the cleanup below ends it.
            with deferred_signals():
                try:
                    proc = self._spawn(argv, request, env, log)
                except OSError as exc:
                    why = f"cannot start repair agent {argv[0]!r}: {exc}"
                    return RepairReply(ok=False, summary=why, output_path=str(log))
                # Recorded while it runs: a runner killed meanwhile leaves this behind, and the next setup
                # or replay of the tree ends the agent (see fsm_runner.engine.leftovers).
                group = {"pgid": proc.pid, "leader_start": process_start_time(proc.pid), "mark": mark}
                write_json_atomic(record, {**group, "running": True})
            if not wait_or_stop(proc, self.timeout):
                stop_and_reap(proc, self.kill_grace)
                return RepairReply(
                    ok=False,
                    summary=f"repair agent timed out after {self.timeout:g}s; its process group was killed",
                    output_path=str(log),
                )
        except BaseException:
            if proc is not None:
                stop_and_reap(proc, self.kill_grace)
            raise
        finally:
            if proc is not None:
                # Nothing the agent started outlives it: its group, its session, and what carries its mark
                # (a setsid helper), all gone before the guardrails look at the tree.
                kill_group(proc.pid, grace=0)
                left = end_agent_processes(proc.pid, group.get("leader_start"), mark)
            if group:  # a record left saying "running" names a dead group, which readers skip: never fail
                with contextlib.suppress(EvidenceError):
                    write_json_atomic(record, {**group, "running": False})
        took = time.monotonic() - start
        summary = f"repair agent exited with code {proc.returncode} after {took:.1f}s"
        if left:
            summary += f"; ended {len(left)} process group(s) it left running outside its own"
        return RepairReply(ok=proc.returncode == 0, summary=summary, output_path=str(log))

    def _spawn(
        self, argv: list[str], request: RepairRequest, env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        """Start the agent in the repository, in the run's sandbox when there is one (its evidence dir, where
        ``log`` is, writable), its output to ``log``. Raises OSError when it cannot start."""
        command: list[str] = argv
        fds: tuple[int, ...] = ()
        if request.sandbox is not None:
            program = [Path(argv[0])] if os.path.isabs(argv[0]) else []  # visible even in the host's /tmp
            wrapped = request.sandbox.wrap(
                argv, request.repo, evidence=log.parent, network="host", also_read=program
            )
            command, fds = list(wrapped.argv), wrapped.pass_fds
        proc, _ = spawn_group(command, request.repo, env, log, None, pass_fds=fds)
        return proc


#: What ``setup(repair_agent=...)`` and ``replay(repair_agent=...)`` accept.
AgentLike = RepairAgent | Callable[[RepairRequest], object] | str | Sequence[str] | os.PathLike[str]


def as_agent(obj: AgentLike | object) -> RepairAgent:
    """Accept an agent, a callable, or a command line (string or list of strings)."""
    if isinstance(obj, RepairAgent) and not isinstance(obj, type):
        return obj
    if isinstance(obj, (str, list, tuple)):
        return CommandAgent(obj)
    if isinstance(obj, os.PathLike):
        return CommandAgent([os.fspath(obj)])
    if callable(obj):
        return CallableAgent(obj)
    raise UsageError(
        f"repair agent {obj!r} is not usable: give an object with repair(request), a callable taking a "
        "RepairRequest, or a command line such as 'aider --yes --message-file {prompt_file}'"
    )
