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

Comparing checkpoints: ``fsm_runner.compare([run_dir_or_results, ...])`` is a table of a metric per target
and llm, with deltas against a baseline.
"""

from __future__ import annotations

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
from fsm_runner.sweeps import ComparisonTable, compare

__all__ = [
    "CallableAgent",
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
    "Session",
    "TargetError",
    "UsageError",
    "can_replay",
    "check_replay",
    "compare",
    "diagram",
    "replay",
    "setup",
    "shutdown",
]
__version__ = "0.1.0"
