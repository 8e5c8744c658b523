"""rollout: let the model under test produce samples through the target's own scripts."""

from __future__ import annotations

from typing import Any

from fsm_runner.contract.outputs import check_rollout, count_json_lines, rollout_outputs
from fsm_runner.contract.pipeline import RolloutSpec
from fsm_runner.engine.context import RunContext
from fsm_runner.evidence.layout import ROUND_ROLLOUT, ROUND_SAMPLES
from fsm_runner.states._command import CommandPhase


class RolloutPhase(CommandPhase[RolloutSpec]):
    name = "rollout"
    section_name = "rollout"

    def commands(self, section: RolloutSpec) -> tuple[str, ...]:
        return tuple(section.run_cmds)

    def required(self, ctx: RunContext) -> str | None:
        if ctx.require_samples:
            return "require_samples is set but pipeline.yml has no rollout.run_cmds to produce samples"
        return None

    def outputs(self, ctx: RunContext, section: RolloutSpec) -> tuple[str, ...]:
        # rollout.json, and the samples file an earlier rollout.json names: evaluate reads only this round's.
        return tuple(out.rel for out in rollout_outputs(ctx.repo_root))

    def after(self, ctx: RunContext, section: RolloutSpec) -> dict[str, Any]:
        check = check_rollout(ctx.repo_root, require_samples=ctx.require_samples)
        count = check.sample_count
        if not count and check.samples_path is not None and check.samples_path.is_file():
            count = count_json_lines(check.samples_path)
        data: dict[str, Any] = {
            "rollout": check.rollout,
            "samples_path": str(check.samples_path) if check.samples_path else None,
            "sample_count": count,
        }
        # The round keeps its own copies: the next round (or the end of a git checkout) removes the originals.
        if check.rollout is not None:
            ctx.keep_in_round(ROUND_ROLLOUT, data=check.rollout)
        if check.samples_path is not None and check.samples_path.is_file():
            data["samples_copy"] = ctx.keep_in_round(ROUND_SAMPLES, source=check.samples_path)
        return data
