"""What the session calls return: frozen, JSON-able snapshots of a run at the end of a call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import define, field

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.engine.topology import DONE, FAILED
from fsm_runner.evidence.store import whole_journal


@define(frozen=True)
class PhaseSummary:
    """One phase execution as a caller sees it."""

    phase: str
    status: str
    duration_s: float
    reason: str = ""
    error: ErrorInfo | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "status": self.status,
            "duration_s": self.duration_s,
            "reason": self.reason,
            "error": self.error.to_json() if self.error else None,
        }


@define(frozen=True)
class _Result:
    ok: bool
    phase: str
    run_id: str
    run_dir: Path
    error: ErrorInfo | None = None
    phases: tuple[PhaseSummary, ...] = ()
    repairs_used: int = 0
    #: The session's round this call ran in (run.json ``rounds``; its outputs are in ``round_N/``).
    round: int = 1

    def _base_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "phase": self.phase,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "error": self.error.to_json() if self.error else None,
            "phases": [p.to_json() for p in self.phases],
            "repairs_used": self.repairs_used,
            "round": self.round,
        }


@define(frozen=True)
class RolloutResult(_Result):
    """``rollout`` is the parsed rollout.json (or None); ``samples_path`` its samples file."""

    rollout: dict[str, Any] | None = field(default=None, eq=False)
    samples_path: Path | None = None
    sample_count: int = 0

    def to_json(self) -> dict[str, Any]:
        data = self._base_json()
        data.update(
            rollout=self.rollout,
            samples_path=str(self.samples_path) if self.samples_path else None,
            sample_count=self.sample_count,
        )
        return data


@define(frozen=True)
class EvaluationResult(_Result):
    """``metrics`` is the evaluation's metrics object; ``benchmark`` the benchmark's, when it ran."""

    metrics: dict[str, Any] | None = field(default=None, eq=False)
    benchmark: dict[str, Any] | None = field(default=None, eq=False)

    @property
    def score(self) -> Any:
        return (self.metrics or {}).get("score")

    def to_json(self) -> dict[str, Any]:
        data = self._base_json()
        data.update(metrics=self.metrics, benchmark=self.benchmark, score=self.score)
        return data


def _summaries(journal_path: Path, since: int) -> tuple[PhaseSummary, ...]:
    """The phases a call ran: every journaled outcome after record ``since`` (a damaged journal raises)."""
    return tuple(
        PhaseSummary(o.phase, o.status, o.duration_s, o.reason, o.error)
        for record in whole_journal(journal_path.parent)
        if record.seq > since and (o := record.outcome) is not None
    )


def _common(ctx: RunContext, state: str, journal_path: Path, since: int) -> dict[str, Any]:
    failed = state == FAILED
    # A guard quotes what it found ("ok must be true, got ..."), a command error its output: masked here as
    # in the evidence, so a result printed or logged by the caller carries no secret either.
    error = ctx.last_error.redacted(ctx.redactor) if failed and ctx.last_error else None
    return {
        "phase": ctx.failed_phase if failed and ctx.failed_phase else state,
        "run_id": ctx.run_id,
        "run_dir": ctx.run_dir,
        "error": error,
        "phases": _summaries(journal_path, since),
        "repairs_used": ctx.repairs_used,
        "round": ctx.round,
    }


def _this_round(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """This round's phase outputs, secrets masked (as run.json keeps them)."""
    return {
        phase: ctx.redactor.scrub(data)
        for phase, data in ctx.outputs.items()
        if ctx.completed.get(phase) == ctx.round
    }


def rollout_result(ctx: RunContext, state: str, journal_path: Path, *, since: int) -> RolloutResult:
    """The result of ``rollout()``: its ``phase`` is ``rollout``, or the phase the call failed in."""
    data = _this_round(ctx).get("rollout", {})
    samples = data.get("samples_path")
    common = _common(ctx, state, journal_path, since)
    if state != FAILED:
        common["phase"] = "rollout"  # where the call ended, not the state after it (evaluate)
    return RolloutResult(
        ok=state != FAILED,
        rollout=data.get("rollout"),
        samples_path=Path(samples) if samples else None,
        sample_count=int(data.get("sample_count", 0)),
        **common,
    )


def evaluation_result(
    ctx: RunContext, state: str, journal_path: Path, *, since: int, stopped_after: str | None = None
) -> EvaluationResult:
    """The result of a call that ran to the end, or (``stopped_after``) one that stopped after a phase."""
    current = _this_round(ctx)
    common = _common(ctx, state, journal_path, since)
    if stopped_after is not None and state != FAILED:
        common["phase"] = stopped_after
    return EvaluationResult(
        ok=state == DONE or (stopped_after is not None and state != FAILED),
        metrics=current.get("evaluate", {}).get("metrics"),
        benchmark=current.get("benchmark", {}).get("metrics"),
        **common,
    )
