"""What the session calls return: frozen, JSON-able snapshots of a run at the end of a call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrs import define, field

from fsm_runner.outcome import ErrorInfo


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

    def _base_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "phase": self.phase,
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "error": self.error.to_json() if self.error else None,
            "phases": [p.to_json() for p in self.phases],
            "repairs_used": self.repairs_used,
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
