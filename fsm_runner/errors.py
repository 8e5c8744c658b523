"""The exceptions fsm-runner raises to its callers.

Every error a user can cause derives from :class:`FsmRunnerError`, so a caller can catch one type; each
subclass's message says what went wrong and what to do about it.
"""

from __future__ import annotations


class FsmRunnerError(Exception):
    """Base of every error fsm-runner raises on purpose."""


class ContractError(FsmRunnerError):
    """A contract file (pipeline.yml, bootstrap.yml, actions.yml) or a stage output is invalid.

    ``path``, ``line`` and ``key`` locate the problem when known; the message already contains them.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.problem = message
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.problem}"


class TargetError(FsmRunnerError):
    """The target repository cannot be resolved, cloned or checked out."""


class EvidenceError(FsmRunnerError):
    """The evidence directory cannot be created or written (permissions, disk full)."""


class ReplayError(FsmRunnerError):
    """A run cannot be replayed; the message gives the reason."""


class UsageError(FsmRunnerError):
    """The library or CLI was called with arguments that cannot work together."""


class RepairError(FsmRunnerError):
    """The runner could not hold a repair to its guardrails (an edit it could not undo, a tree it could not
    check); the repair loop stops and the run fails with this error."""
