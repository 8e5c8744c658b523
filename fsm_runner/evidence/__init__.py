"""Evidence: everything a run leaves in its run directory, and the one way each file is written and read.

``layout`` names every file; ``atomic`` writes them whole; ``records`` gives journal lines and run.json
their types (``structure`` reads and writes them as JSON); ``journal``, ``events`` and ``lock`` are the
run's durable record, its log and its liveness; ``redaction`` keeps secrets out of all of it; ``store``
finds runs and reads them back.
"""

from __future__ import annotations

from fsm_runner.evidence.journal import Journal, JournalRead, read_journal
from fsm_runner.evidence.records import ErrorInfo, Outcome, ResolvedTarget, RunState, TransitionRecord
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.evidence.store import RunInfo, list_runs, read_run, resolve_run, run_info

__all__ = [
    "ErrorInfo",
    "Journal",
    "JournalRead",
    "Outcome",
    "Redactor",
    "ResolvedTarget",
    "RunInfo",
    "RunState",
    "TransitionRecord",
    "list_runs",
    "read_journal",
    "read_run",
    "resolve_run",
    "run_info",
]
