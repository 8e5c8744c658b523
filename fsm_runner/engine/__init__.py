"""The engine: the machine's topology, the driver loop, its guards, the run context phases work on, the phase
and repair protocols, and what keeps a live run safe (signals, teardown at exit).

Phases (``fsm_runner.states``) import only this package, the contract and the execution layer.
"""

from __future__ import annotations

from fsm_runner.engine import topology
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.driver import Driver
from fsm_runner.engine.outcome import FAILED, OK, SKIPPED, CommandRef, ErrorInfo, Outcome, skipped
from fsm_runner.engine.phase import Phase, Repairer, RepairReport, finish

__all__ = [
    "FAILED",
    "OK",
    "SKIPPED",
    "CommandRef",
    "Driver",
    "ErrorInfo",
    "Outcome",
    "Phase",
    "RepairReport",
    "Repairer",
    "RunContext",
    "finish",
    "skipped",
    "topology",
]
