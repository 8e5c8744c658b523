"""What a phase reports back to the driver: an :class:`Outcome`, with an :class:`ErrorInfo` when it failed.

The classes are the journal's own record types (:mod:`fsm_runner.evidence.records`), so what a phase
returns is exactly what the journal keeps and every reader gets back.
"""

from __future__ import annotations

from fsm_runner.evidence.records import FAILED, OK, SKIPPED, CommandRef, ErrorInfo, Outcome

__all__ = ["FAILED", "OK", "SKIPPED", "CommandRef", "ErrorInfo", "Outcome", "skipped"]


def skipped(phase: str, reason: str) -> Outcome:
    """A phase with nothing to do: the skip is still a journaled transition, with its reason."""
    return Outcome(phase=phase, status=SKIPPED, reason=reason)
