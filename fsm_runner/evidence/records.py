"""The typed shapes of the evidence a run leaves: journal records and run.json.

Everything the runner reads back from a run directory goes through these classes, so a file of the wrong
shape fails in one place, with one message naming the file (and line) and the key that is wrong, whoever
reads it: replay, the dry run, ``show``, ``runs``, the diagram or a result. Reading and writing them is
:mod:`fsm_runner.evidence.structure`.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from attrs import define, field, validators

from fsm_runner.evidence.layout import (
    PIPELINE_REL,
    clone_runs_dir,
    contract_rel_problem,
    single_name_problem,
)
from fsm_runner.evidence.redaction import MASK, Redactor
from fsm_runner.evidence.structure import structure, unstructure

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
#: What a run can be, in run.json: running, finished ok, failed, interrupted by a signal, or closed early.
RUN_STATUSES = ("running", OK, FAILED, "interrupted", "closed")
#: How much of the benchmark a run evaluates (AIDER_EVAL_MODE).
MODES = ("smoke", "full")
#: strict: never wait for a person; guided: interactive auth steps are allowed.
UNATTENDED = ("strict", "guided")
#: none: commands run as the user runs them; bwrap: under bubblewrap (fsm_runner.execution.sandbox).
SANDBOXES = ("none", "bwrap")
#: host: the machine's network; none: a network namespace of the run's own (loopback only).
NETWORKS = ("host", "none")
_CREDENTIALS = re.compile(r"(://)[^/\s]*@")
_WEB_SCHEME = re.compile(r"(?i)\bhttps?:\Z")


# -- what a phase reports ----------------------------------------------------------------------------------


@define(frozen=True)
class ErrorInfo:
    """Why a phase failed: ``kind`` is a stable word (command, guard, contract, timeout, internal, ...)."""

    kind: str
    message: str
    phase: str
    evidence: str | None = None

    def to_json(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], unstructure(self))

    @classmethod
    def from_json(cls, data: Any, where: str = "error") -> ErrorInfo:
        return structure(cls, data, where)

    def __str__(self) -> str:
        tail = f" (evidence: {self.evidence})" if self.evidence else ""
        return f"{self.phase}: {self.message}{tail}"

    def redacted(self, redactor: Redactor) -> ErrorInfo:
        """Secrets masked in the free text; ``kind`` and ``phase`` are vocabulary and stay as they are."""
        evidence = redactor.mask(self.evidence) if self.evidence else self.evidence
        return attrs.evolve(self, message=redactor.mask(self.message), evidence=evidence)


@define(frozen=True)
class CommandRef:
    """One command attempt as the journal remembers it; ``result`` points at its ``cmdNN_tryMM.json``."""

    index: int
    attempt: int
    exit_code: int | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    blocked: str | None = None
    result: str | None = None


@define(frozen=True)
class Outcome:
    """The result of running one phase once. ``data`` holds the phase's outputs for the run context."""

    phase: str
    status: str = field(validator=validators.in_((OK, FAILED, SKIPPED)))
    duration_s: float = 0.0
    reason: str = ""
    commands: tuple[CommandRef, ...] = ()
    error: ErrorInfo | None = None
    data: dict[str, Any] = field(factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], unstructure(self))

    @classmethod
    def from_json(cls, data: Any, where: str = "outcome") -> Outcome:
        return structure(cls, data, where)

    def redacted(self, redactor: Redactor) -> Outcome:
        commands = tuple(
            attrs.evolve(
                c,
                blocked=redactor.mask(c.blocked) if c.blocked else c.blocked,
                result=redactor.mask(c.result) if c.result else c.result,
            )
            for c in self.commands
        )
        return attrs.evolve(
            self,
            reason=redactor.mask(self.reason),
            commands=commands,
            error=self.error.redacted(redactor) if self.error else None,
            data=redactor.scrub(self.data),
        )


# -- journal.jsonl -----------------------------------------------------------------------------------------


@define(frozen=True)
class TransitionRecord:
    """One line of journal.jsonl: a fired trigger, what the guards said, and the phase outcome behind it."""

    seq: int = field(validator=validators.ge(1))
    ts: str
    trigger: str
    source: str
    dest: str
    guards: dict[str, bool] = field(factory=dict)
    outcome: Outcome | None = None
    reason: str = ""
    round: int = 1
    repairs_used: int = 0
    repair_iters: int = 0
    redrive_count: int = 0
    status: str = ""
    error: ErrorInfo | None = None

    def to_json(self) -> dict[str, Any]:
        return typing.cast(dict[str, Any], unstructure(self))

    @classmethod
    def from_json(cls, data: Any, where: str = "journal record") -> TransitionRecord:
        return structure(cls, data, where)

    def redacted(self, redactor: Redactor) -> TransitionRecord:
        """Secrets masked in what can carry them (reasons, errors, outputs); names and states untouched."""
        return attrs.evolve(
            self,
            reason=redactor.mask(self.reason),
            outcome=self.outcome.redacted(redactor) if self.outcome else None,
            error=self.error.redacted(redactor) if self.error else None,
        )

    @property
    def failure(self) -> ErrorInfo | None:
        """The error this record reports: the run's, else the phase's."""
        return self.error or (self.outcome.error if self.outcome else None)


# -- run.json ----------------------------------------------------------------------------------------------


@define(frozen=True)
class RoundRecord:
    """One rollout + evaluate round of a session (run.json ``rounds``): which model, how it ended, what it
    produced. ``samples`` is the round's copy of the samples file, relative to the run dir; ``metrics`` and
    ``benchmark`` are the metrics of the phases that passed in this round (their files are in ``round_N/``).
    """

    round: int = field(validator=validators.ge(1))
    started: str
    llm: str | None = None
    mode: str = field(default="smoke", validator=validators.in_(MODES))
    status: str = field(default="running", validator=validators.in_(RUN_STATUSES))
    finished: str | None = None
    phases: tuple[str, ...] = ()
    metrics: dict[str, Any] | None = None
    score: Any = None
    benchmark: dict[str, Any] | None = None
    samples: str | None = None
    sample_count: int = 0

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        """The record with ``ok`` spelled out (``show --json``)."""
        data = typing.cast(dict[str, Any], unstructure(self))
        return {"round": self.round, "llm": self.llm, "ok": self.ok, **data}

    @classmethod
    def from_json(cls, data: Any, where: str = "round") -> RoundRecord:
        return structure(cls, data, where)

    def redacted(self, redactor: Redactor) -> RoundRecord:
        """Secrets masked in the model name and the metrics; the status, mode and phase names stay."""
        return attrs.evolve(
            self,
            llm=redactor.scrub(self.llm),
            metrics=redactor.scrub(self.metrics),
            score=redactor.scrub(self.score),
            benchmark=redactor.scrub(self.benchmark),
        )


def strip_credentials(text: str) -> str:
    """``https://user:token@host/x`` and ``https://token@host/x`` -> ``https://***@host/x``: a URL's secret
    never reaches evidence, whether it is the password or (as with many tokens) the user name."""
    return _CREDENTIALS.sub(r"\1***@", text)


def url_secrets(text: str | None) -> tuple[str, ...]:
    """The secrets in the user-info of the URLs in ``text``: the password of ``user:password@``, else the
    user name of ``token@`` (a token is often passed that way); for the redactor, which masks them wherever a
    command prints them (``git remote -v``, an error quoting the URL)."""
    found = []
    for match in _CREDENTIALS.finditer(text or ""):
        user, colon, password = match.group(0)[len("://") : -1].partition(":")
        if colon:
            found.append(password)
        elif _WEB_SCHEME.search(text or "", 0, match.start() + 1):
            found.append(user)  # ssh://git@host names an account, not a secret
    return tuple(value for value in found if value and value != MASK)


def _named(problem_of: Callable[[str], str | None]) -> Callable[[object, object, str], None]:
    """An attrs validator from a function that says what is wrong with a value (or None)."""

    def check(_: object, __: object, value: str) -> None:
        problem = problem_of(value)
        if problem:
            raise ValueError(problem)

    return check


def _absolute(_: object, __: object, path: Path) -> None:
    if not path.is_absolute():
        raise ValueError(f"repo_root must be absolute, got {path}")


@define(frozen=True)
class ResolvedTarget:
    """Where the target repository lives on disk and which commit it is at.

    For a git URL, ``repo_root`` is the run's own checkout (a worktree of the shared clone ``clone``), which
    goes away when the run ends well; the run's evidence lives beside the clone (:attr:`runs_root`).
    """

    spec: str
    repo_root: Path = field(validator=_absolute)
    kind: str = field(validator=validators.in_(("local", "git")))
    url: str | None = None
    ref: str | None = None
    commit: str | None = None
    cache_hit: bool = False
    clone: Path | None = None
    #: Set when ``repo_root`` is a private copy of this tree (``setup(isolate=True)``), removed at close.
    isolated_from: Path | None = None

    @property
    def runs_root(self) -> Path | None:
        """Where the runs of a git URL go unless ``artifacts_dir`` is given (None: the repo's own)."""
        return clone_runs_dir(self.clone) if self.clone is not None else None

    def to_json(self) -> dict[str, Any]:
        data = typing.cast(dict[str, Any], unstructure(self))
        for key in ("spec", "url"):
            if data[key] is not None:
                data[key] = strip_credentials(data[key])
        if data["isolated_from"] is None:
            del data["isolated_from"]  # only isolated runs say it
        return data


def target_secrets(target: ResolvedTarget) -> tuple[str, ...]:
    """The secrets of a git target's URL (see :func:`url_secrets`), for the run's redactor."""
    return (*url_secrets(target.url), *url_secrets(target.spec))


@define(kw_only=True)
class RunState:
    """What run.json holds: the part of a run that outlives the process (replay restores it).

    :class:`fsm_runner.engine.context.RunContext` extends it with what only a live run has (the loaded
    contract, the logger, the redactor, monotonic clocks).
    """

    run_id: str = field(validator=_named(single_name_problem))
    target: ResolvedTarget
    status: str = field(default="running", validator=validators.in_(RUN_STATUSES))
    phase: str = "clone"
    pipeline_rel: str = field(default=PIPELINE_REL, validator=_named(contract_rel_problem))
    contract_sha256: str = ""
    contract_hashes: list[str] = field(factory=list)
    unattended: str = field(default="strict", validator=validators.in_(UNATTENDED))
    #: The sandbox the run's commands ran in, and their network (absent in run.json of older runs: none).
    sandbox: str = field(default="none", validator=validators.in_(SANDBOXES))
    network: str = field(default="host", validator=validators.in_(NETWORKS))
    require_metrics: bool = True
    llm: str | None = None
    mode: str = field(default="smoke", validator=validators.in_(MODES))
    require_samples: bool = False
    env_overrides: dict[str, str] = field(factory=dict)
    #: AIDER_FSM_PORT: free when the run started, the same for its whole life (None in older run.json files).
    port: int | None = field(
        default=None, validator=validators.optional([validators.ge(1), validators.le(65535)])
    )
    repair_iters: int = field(default=0, validator=validators.ge(0))
    repairs_used: int = field(default=0, validator=validators.ge(0))
    round: int = field(default=1, validator=validators.ge(1))
    completed: dict[str, int] = field(factory=dict)
    outputs: dict[str, dict[str, Any]] = field(factory=dict)
    runs_of_phase: dict[str, int] = field(factory=dict)
    deploy_pgids: list[int] = field(factory=list)
    deploy_leaders: dict[str, int | None] = field(factory=dict)
    deployed_llm: str | None = None
    deployed: bool = False
    failed_phase: str | None = None
    last_error: ErrorInfo | None = None
    redrive_count: int = field(default=0, validator=validators.ge(0))
    #: One record per round, oldest first (absent in run.json written before rounds were recorded).
    rounds: list[RoundRecord] = field(factory=list)

    @classmethod
    def from_json(cls, data: Any, where: str = "run.json") -> RunState:
        return structure(RunState, data, where)

    def state_json(self, redactor: Redactor | None = None) -> dict[str, Any]:
        """The persisted fields only (a subclass's live-only fields are left out).

        With a ``redactor``, secrets are masked where they can occur (the target, the model name, the error,
        phase outputs, override values); names, states and counters are left as they are, so the file
        always reads back.
        """
        data = {a.name: unstructure(getattr(self, a.name)) for a in attrs.fields(RunState)}
        data["target"] = self.target.to_json()
        if redactor is not None:
            for key in ("llm", "deployed_llm"):
                data[key] = redactor.scrub(data[key])
            data["target"] = {k: v if k == "kind" else redactor.scrub(v) for k, v in data["target"].items()}
            data["outputs"] = {phase: redactor.scrub(out) for phase, out in data["outputs"].items()}
            data["rounds"] = [unstructure(r.redacted(redactor)) for r in self.rounds]
            data["last_error"] = self.last_error.redacted(redactor).to_json() if self.last_error else None
            data["env_overrides"] = redactor.redact_env(self.env_overrides)
        return data
