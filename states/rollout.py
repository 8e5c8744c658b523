"""rollout: let the model under test produce samples through the target's own scripts."""

from __future__ import annotations

from typing import Any

from fsm_runner.context import RunContext
from fsm_runner.contract.outputs import check_rollout
from states.base import CommandPhase


class RolloutPhase(CommandPhase):
    name = "rollout"
    section_name = "rollout"

    def commands(self, section: Any) -> tuple[str, ...]:
        return tuple(section.run_cmds)

    def after(self, ctx: RunContext, section: Any) -> dict[str, Any]:
        check = check_rollout(ctx.repo_root, require_samples=ctx.require_samples)
        return {
            "rollout": check.rollout,
            "samples_path": str(check.samples_path) if check.samples_path else None,
            "sample_count": check.sample_count,
        }
