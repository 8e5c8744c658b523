"""fsm-runner: drive a benchmark repository through its own contract as an explicit state machine.

Typical use from a training loop::

    import fsm_runner
    with fsm_runner.setup("path/or/git-url") as sess:
        sess.rollout(llm="my-model", mode="smoke")
        result = sess.evaluate()
        assert result.ok, result.error

A host with a SIGTERM handler of its own calls ``fsm_runner.shutdown()`` from it: every live session, in
every thread, is torn down.

After a failure: ``fsm_runner.can_replay(run_dir)``, ``fsm_runner.check_replay(run_dir)`` (a dry run),
``fsm_runner.replay(run_dir)`` and ``fsm_runner.diagram("mermaid", run_dir=run_dir)``.

Many targets x checkpoints: ``fsm_runner.sweep(targets, llms)`` (rows in ``results.jsonl``), and from a
training loop without blocking ``fsm_runner.submit(target, llm)`` or ``sweep(..., wait=False)``.
``fsm_runner.compare([results_or_run_dir, ...])`` turns them into a table of a metric per target and llm,
with deltas against a baseline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fsm_runner.api import setup
from fsm_runner.diagrams import diagram
from fsm_runner.engine.lifecycle import Interrupted, shutdown
from fsm_runner.engine.progress import Progress
from fsm_runner.errors import (
    ContractError,
    EvidenceError,
    FsmRunnerError,
    RepairError,
    ReplayError,
    TargetError,
    UsageError,
)
from fsm_runner.evidence.records import ErrorInfo
from fsm_runner.repair import CallableAgent, CommandAgent, RepairAgent, RepairReply, RepairRequest
from fsm_runner.replays import DryRunReport, can_replay, check_replay, replay
from fsm_runner.results import EvaluationResult, PhaseSummary, RolloutResult
from fsm_runner.session import Session

__all__ = [
    "CallableAgent",
    "CellResult",
    "CommandAgent",
    "ComparisonTable",
    "ContractError",
    "DryRunReport",
    "ErrorInfo",
    "EvaluationResult",
    "EvidenceError",
    "FsmRunnerError",
    "Interrupted",
    "PhaseSummary",
    "Progress",
    "RepairAgent",
    "RepairError",
    "RepairReply",
    "RepairRequest",
    "ReplayError",
    "RolloutResult",
    "RunHandle",
    "Session",
    "SweepHandle",
    "SweepResult",
    "TargetError",
    "UsageError",
    "can_replay",
    "check_replay",
    "compare",
    "diagram",
    "replay",
    "setup",
    "shutdown",
    "submit",
    "sweep",
]
__version__ = "0.1.0"

#: Sweep and compare names, imported on first use: ``import fsm_runner`` stays as quick as it was, and a
#: cell's own process (``python -m fsm_runner.sweeps.cells``) does not import its module twice.
_LAZY = {
    "CellResult": "fsm_runner.sweeps.cells",
    "ComparisonTable": "fsm_runner.sweeps.compare",
    "compare": "fsm_runner.sweeps.compare",
    "RunHandle": "fsm_runner.sweeps.submit",
    "submit": "fsm_runner.sweeps.submit",
    "SweepHandle": "fsm_runner.sweeps.sweep",
    "SweepResult": "fsm_runner.sweeps.sweep",
    "sweep": "fsm_runner.sweeps.sweep",
}

if TYPE_CHECKING:
    from fsm_runner.sweeps.cells import CellResult
    from fsm_runner.sweeps.compare import ComparisonTable, compare
    from fsm_runner.sweeps.submit import RunHandle, submit
    from fsm_runner.sweeps.sweep import SweepHandle, SweepResult, sweep


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fsm_runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
