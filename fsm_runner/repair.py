"""Hand a failed phase to a repair agent, then hold the agent to the guardrails.

An agent is anything with ``repair(request) -> RepairReply``; plain callables and external coding-agent
command lines are adapted. :func:`run_repair` is the one entry point the engine uses: it snapshots the repo,
records the request, calls the agent (agent failures become ``ok=False``, never exceptions), undoes forbidden
edits and writes provenance into the ``repair_NN`` evidence directory.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from attrs import define, field, validators

from fsm_runner.errors import UsageError
from fsm_runner.evidence import write_json_atomic, write_text_atomic
from fsm_runner.guardrails import (
    DEFAULT_EXCLUDE,
    DEFAULT_PROTECTED,
    Provenance,
    enforce_guardrails,
    snapshot_repo,
)

PROMPT_FILE = "prompt.md"
REQUEST_FILE = "request.json"
AGENT_OUTPUT_FILE = "agent_output.log"
MAX_EVIDENCE_FILES = 4
TAIL_LINES = 60
_TAIL_BYTES = 32 * 1024
_MAX_LINE = 400
_MAX_ERROR_CHARS = 4000

WriteJson = Callable[[Path, Any], None]


def _str_tuple(value: Iterable[str] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(v) for v in value)


@define(frozen=True)
class RepairRequest:
    """Everything an agent needs to fix a failed phase; ``work_dir`` is the ``repair_NN`` evidence dir."""

    repo: Path = field(converter=Path)
    phase: str = field(validator=validators.instance_of(str))
    error_kind: str = field(validator=validators.instance_of(str))
    error_message: str = field(validator=validators.instance_of(str))
    evidence_paths: tuple[str, ...] = field(converter=_str_tuple)
    attempt: int = field(validator=[validators.instance_of(int), validators.ge(1)])
    max_attempts: int = field(validator=[validators.instance_of(int), validators.ge(1)])
    allowed_globs: tuple[str, ...] = field(converter=_str_tuple)
    run_id: str = field(validator=validators.instance_of(str))
    prompt: str = field(validator=validators.instance_of(str))
    work_dir: Path = field(converter=Path)

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
            "prompt_file": str(self.work_dir / PROMPT_FILE),
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


# --- prompt ---


def _fence(text: str) -> str:
    """Wrap ``text`` in a code fence longer than any backtick run inside it."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}\n{text.rstrip()}\n{ticks}"


def _tail(path: Path) -> tuple[str, bool]:
    """The last :data:`TAIL_LINES` lines of ``path`` (reading at most the final 32 KiB), and whether cut."""
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - _TAIL_BYTES))
        data = fh.read()
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > _TAIL_BYTES and lines:
        lines = lines[1:]  # the first line is probably partial
    cut = size > _TAIL_BYTES or len(lines) > TAIL_LINES
    lines = [ln if len(ln) <= _MAX_LINE else ln[:_MAX_LINE] + " [...]" for ln in lines[-TAIL_LINES:]]
    return "\n".join(lines), cut


def render_prompt(
    phase: str,
    error_kind: str,
    error_message: str,
    evidence_paths: Sequence[str],
    allowed_globs: Sequence[str],
    repo: Path,
) -> str:
    """A bounded markdown brief for a coding agent: the failure, evidence tails, and what it may edit."""
    repo = Path(repo)
    message = error_message.strip() or "(no message)"
    if len(message) > _MAX_ERROR_CHARS:
        message = "[...]\n" + message[-_MAX_ERROR_CHARS:]
    out = [
        f"# Repair: the `{phase}` phase failed",
        "",
        f"Repository: `{repo}` (your working directory).",
        f"Error kind: `{error_kind}`",
        "",
        "## Error",
        "",
        _fence(message),
        "",
        "## Evidence",
        "",
    ]
    shown = 0
    for raw in evidence_paths:
        path = Path(raw) if Path(raw).is_absolute() else repo / raw
        if shown >= MAX_EVIDENCE_FILES or not path.is_file():
            note = "not shown" if path.is_file() else "missing"
            out.append(f"- `{raw}` ({note})")
            continue
        try:
            text, cut = _tail(path)
        except OSError as exc:
            out.append(f"- `{raw}` (unreadable: {exc.strerror})")
            continue
        shown += 1
        label = f"last {TAIL_LINES} lines" if cut else "whole file"
        out += ["", f"### `{raw}` ({label})", "", _fence(text or "(empty)"), ""]
    if not evidence_paths:
        out.append("(none recorded)")
    out += [
        "",
        "## What you may change",
        "",
        "Edit only files matching these globs (relative to the repository root; `**` spans directories):",
        "",
        *[f"- `{g}`" for g in allowed_globs],
        "",
        "After you finish, the runner reverts every edit outside these globs and deletes files you added "
        "outside them. `pipeline.yml` is owned by humans: do not edit it; any change to it is restored byte "
        "for byte.",
        "",
        "## What to do",
        "",
        f"Find the cause of the failure and fix it so the `{phase}` phase passes when the runner re-runs it. "
        "Do not fake results (for example writing `ok: true` or a score without really computing it) and do "
        "not weaken the checks. Exit when done; you do not need to re-run the phase yourself.",
        "",
    ]
    return "\n".join(out)


# --- agents ---


def _coerce_reply(value: object) -> RepairReply:
    """Read any return value as a reply: a reply as is, a string as its summary, anything else as done."""
    if isinstance(value, RepairReply):
        return value
    if isinstance(value, str):
        return RepairReply(ok=True, summary=value)
    return RepairReply(ok=True)


def _describe(exc: BaseException) -> str:
    return f"repair agent raised {type(exc).__name__}: {exc}"


@define(frozen=True)
class CallableAgent:
    """Adapts ``fn(request)``: a falsy return still counts as done; an exception becomes ``ok=False``."""

    fn: Callable[[RepairRequest], object] = field(validator=validators.is_callable())

    def repair(self, request: RepairRequest) -> RepairReply:
        try:
            return _coerce_reply(self.fn(request))
        except Exception as exc:
            return RepairReply(ok=False, summary=_describe(exc))


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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@define(frozen=True)
class CommandAgent:
    """Runs an external coding agent CLI in the repo, in its own process group, with the prompt as a file.

    ``argv`` may use ``{prompt_file}``, ``{request_file}`` and ``{repo}``; output goes to
    ``agent_output.log`` in the repair directory. On timeout the whole group is killed.
    """

    argv: tuple[str, ...] = field(converter=_argv)
    timeout: float = field(default=900, kw_only=True, validator=validators.gt(0))
    env: Mapping[str, str] = field(default=None, kw_only=True, converter=_env)
    kill_grace: float = field(default=3.0, kw_only=True, validator=validators.ge(0))

    def repair(self, request: RepairRequest) -> RepairReply:
        work = request.work_dir.resolve()
        work.mkdir(parents=True, exist_ok=True)
        prompt_file, request_file = work / PROMPT_FILE, work / REQUEST_FILE
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
        env = {
            **os.environ,
            **self.env,
            "FSM_REPAIR_REQUEST": str(request_file),
            "FSM_REPAIR_PROMPT": str(prompt_file),
        }
        log = work / AGENT_OUTPUT_FILE
        start = time.monotonic()
        with log.open("wb") as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=request.repo,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as exc:
                return RepairReply(
                    ok=False, summary=f"cannot start repair agent {argv[0]!r}: {exc}", output_path=str(log)
                )
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self._kill(proc)
                return RepairReply(
                    ok=False,
                    summary=f"repair agent timed out after {self.timeout:g}s; its process group was killed",
                    output_path=str(log),
                )
            except BaseException:
                self._kill(proc)
                raise
            finally:
                _signal_group(proc.pid, signal.SIGKILL)  # nothing the agent spawned outlives it
        took = time.monotonic() - start
        summary = f"repair agent exited with code {code} after {took:.1f}s"
        return RepairReply(ok=code == 0, summary=summary, output_path=str(log))

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.kill_grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def as_agent(obj: object) -> RepairAgent:
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


# --- the repair step ---


def run_repair(
    agent: RepairAgent,
    request: RepairRequest,
    *,
    allowed_globs: Iterable[str] | None = None,
    protected: Iterable[str] = DEFAULT_PROTECTED,
    write_json: WriteJson | None = None,
) -> tuple[RepairReply, Provenance]:
    """Snapshot, record the request, call the agent, enforce guardrails, record reply and provenance.

    ``agent`` may be anything :func:`as_agent` accepts; ``allowed_globs`` defaults to the request's. Agent
    failures come back as ``reply.ok is False``; only evidence write failures (:class:`EvidenceError`), bad
    globs and unusable agents (:class:`UsageError`) raise.
    """
    agent = as_agent(agent)
    write = write_json or write_json_atomic
    globs = _str_tuple(request.allowed_globs if allowed_globs is None else allowed_globs)
    guarded = _str_tuple(protected)
    repo, work = request.repo.resolve(), request.work_dir
    work.mkdir(parents=True, exist_ok=True)
    exclude = DEFAULT_EXCLUDE
    work_abs = work.resolve()
    if work_abs != repo and work_abs.is_relative_to(repo):
        exclude += (work_abs.relative_to(repo).as_posix(),)
    before = snapshot_repo(repo, exclude=exclude)
    write(work / REQUEST_FILE, request.to_json())
    write_text_atomic(work / PROMPT_FILE, request.prompt)
    reply = RepairReply(ok=False, summary="repair agent was interrupted")
    try:
        try:
            reply = _coerce_reply(agent.repair(request))
        except Exception as exc:
            reply = RepairReply(ok=False, summary=_describe(exc))
    finally:
        provenance = enforce_guardrails(repo, before, allowed_globs=globs, protected=guarded)
        write(work / "reply.json", reply.to_json())
        write(work / "provenance.json", provenance.to_json())
    return reply, provenance
