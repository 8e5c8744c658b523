"""Repairs: agents (callables or coding-agent command lines), the prompt they read, the guardrails that
undo what they may not change, and the step that ties them together for the engine's repair phase."""

from __future__ import annotations

from fsm_runner.repair.agents import (
    AgentLike,
    CallableAgent,
    CommandAgent,
    RepairAgent,
    RepairReply,
    RepairRequest,
    as_agent,
)
from fsm_runner.repair.step import RepairStep, run_repair

__all__ = [
    "AgentLike",
    "CallableAgent",
    "CommandAgent",
    "RepairAgent",
    "RepairReply",
    "RepairRequest",
    "RepairStep",
    "as_agent",
    "run_repair",
]
