"""Execution: how contract commands run. One process primitive (``process``: a group per child, stopped as a
whole), the command runner with its evidence files and budgets (``commands``), the command policy and the
shell lexer it reads commands with (``policy``, ``shellwords``), and the environment every stage gets
(``stage_env``)."""

from __future__ import annotations

from fsm_runner.execution.commands import CommandResult, StageRun, run_command, run_commands
from fsm_runner.execution.policy import SecurityPolicy
from fsm_runner.execution.process import kill_group, run_captured, spawn_group

__all__ = [
    "CommandResult",
    "SecurityPolicy",
    "StageRun",
    "kill_group",
    "run_captured",
    "run_command",
    "run_commands",
    "spawn_group",
]
