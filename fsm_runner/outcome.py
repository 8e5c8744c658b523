"""What a phase reports back to the driver, and how an error is described to the user."""

from __future__ import annotations

from typing import Any

from attrs import define, field

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"


@define(frozen=True)
class ErrorInfo:
    """Why a phase failed: ``kind`` is a stable word (command, guard, contract, timeout, internal, ...)."""

    kind: str
    message: str
    phase: str
    evidence: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "phase": self.phase, "evidence": self.evidence}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(str(data["kind"]), str(data["message"]), str(data["phase"]), data.get("evidence"))

    def __str__(self) -> str:
        tail = f" (evidence: {self.evidence})" if self.evidence else ""
        return f"{self.phase}: {self.message}{tail}"


@define(frozen=True)
class Outcome:
    """The result of running one phase once. ``data`` holds the phase's outputs for the run context."""

    phase: str
    status: str
    duration_s: float = 0.0
    reason: str = ""
    commands: tuple[dict[str, Any], ...] = ()
    error: ErrorInfo | None = None
    data: dict[str, Any] = field(factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "status": self.status,
            "duration_s": round(self.duration_s, 4),
            "reason": self.reason,
            "commands": list(self.commands),
            "error": self.error.to_json() if self.error else None,
            "data": self.data,
        }


def skipped(phase: str, reason: str) -> Outcome:
    return Outcome(phase=phase, status=SKIPPED, reason=reason)
