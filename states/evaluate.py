"""evaluate: compute the score; the metrics file is checked by the has_required_keys guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsm_runner.contract.outputs import check_metrics
from fsm_runner.contract.pipeline import EvaluationSpec
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.evidence.layout import ROUND_METRICS, metrics_copy
from fsm_runner.states._command import CommandPhase


class EvaluatePhase(CommandPhase[EvaluationSpec]):
    name = "evaluate"
    section_name = "evaluation"

    def commands(self, section: EvaluationSpec) -> tuple[str, ...]:
        return tuple(section.run_cmds)

    def required(self, ctx: RunContext) -> str | None:
        if self.name == "evaluate" and ctx.require_metrics:
            return (
                "metrics are required but pipeline.yml has no evaluation.run_cmds; add an evaluation section "
                "or run without metrics (setup(require_metrics=False), fsm-runner run --no-require-metrics)"
            )
        return None

    def outputs(self, ctx: RunContext, section: EvaluationSpec) -> tuple[str, ...]:
        return (section.metrics_path,) if section.metrics_path else ()

    def prepare(self, ctx: RunContext, section: EvaluationSpec, stage_dir: Path) -> ErrorInfo | None:
        if not section.metrics_path and self.name == "evaluate" and ctx.require_metrics:
            return ErrorInfo(
                "contract",
                "evaluation.metrics_path is not set but metrics are required; declare where the "
                "evaluation writes its metrics JSON (or run without metrics: setup(require_metrics=False), "
                "fsm-runner run --no-require-metrics)",
                self.name,
                str(ctx.pipeline_path),
            )
        return None

    def after(self, ctx: RunContext, section: EvaluationSpec) -> dict[str, Any]:
        if not section.metrics_path:
            return {}
        path = Path(ctx.repo_root, section.metrics_path)
        check = check_metrics(path, section.required_keys, root=ctx.repo_root)
        data: dict[str, Any] = {"metrics": check.metrics, "metrics_path": str(path)}
        if check.metrics is not None:
            # The latest metrics at a fixed path, and this round's in round_N/.
            ctx.write_json(ctx.run_dir / metrics_copy(self.name), check.metrics)
            data["metrics_copy"] = ctx.keep_in_round(ROUND_METRICS[self.name], data=check.metrics)
        return data
