"""rollout: let the model under test produce samples through the target's own scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsm_runner.contract.outputs import check_rollout
from fsm_runner.contract.pipeline import RolloutSpec
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.evidence.layout import ROLLOUT_REL
from fsm_runner.states._command import CommandPhase
from fsm_runner.states._outputs import set_aside


class RolloutPhase(CommandPhase[RolloutSpec]):
    name = "rollout"
    section_name = "rollout"

    def commands(self, section: RolloutSpec) -> tuple[str, ...]:
        return tuple(section.run_cmds)

    def required(self, ctx: RunContext) -> str | None:
        if ctx.require_samples:
            return "require_samples is set but pipeline.yml has no rollout.run_cmds to produce samples"
        return None

    def prepare(self, ctx: RunContext, section: RolloutSpec, stage_dir: Path) -> ErrorInfo | None:
        set_aside(ctx.repo_root / ROLLOUT_REL, stage_dir)
        return None

    def after(self, ctx: RunContext, section: RolloutSpec) -> dict[str, Any]:
        check = check_rollout(ctx.repo_root, require_samples=ctx.require_samples)
        count = check.sample_count
        if not count and check.samples_path is not None and check.samples_path.is_file():
            count = _count_lines(check.samples_path)
        return {
            "rollout": check.rollout,
            "samples_path": str(check.samples_path) if check.samples_path else None,
            "sample_count": count,
        }


def _count_lines(path: Path) -> int:
    """Non-blank lines, streamed: samples are only validated when require_samples is set."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())
