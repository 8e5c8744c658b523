"""evaluate: compute the score; the metrics file is checked by the has_required_keys guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsm_runner.contract.outputs import check_metrics
from fsm_runner.contract.pipeline import EvaluationSpec
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.evidence.layout import metrics_copy
from fsm_runner.states._command import CommandPhase
from fsm_runner.states._outputs import set_aside


class EvaluatePhase(CommandPhase[EvaluationSpec]):
    name = "evaluate"
    section_name = "evaluation"

    def commands(self, section: EvaluationSpec) -> tuple[str, ...]:
        return tuple(section.run_cmds)

    def required(self, ctx: RunContext) -> str | None:
        if self.name == "evaluate" and ctx.require_metrics:
            return (
                "metrics are required but pipeline.yml has no evaluation.run_cmds; add an evaluation section "
                "or pass require_metrics=False"
            )
        return None

    def prepare(self, ctx: RunContext, section: EvaluationSpec, stage_dir: Path) -> ErrorInfo | None:
        if not section.metrics_path:
            if self.name == "evaluate" and ctx.require_metrics:
                return ErrorInfo(
                    "contract",
                    "evaluation.metrics_path is not set but metrics are required; declare where the "
                    "evaluation writes its metrics JSON (or pass require_metrics=False)",
                    self.name,
                    str(ctx.pipeline_path),
                )
            return None
        set_aside(Path(ctx.repo_root, section.metrics_path), stage_dir)
        return None

    def after(self, ctx: RunContext, section: EvaluationSpec) -> dict[str, Any]:
        if not section.metrics_path:
            return {}
        path = Path(ctx.repo_root, section.metrics_path)
        check = check_metrics(path, section.required_keys)
        if check.metrics is not None:
            # The latest metrics at a fixed path; every round's are also in its summary.json.
            ctx.write_json(ctx.run_dir / metrics_copy(self.name), check.metrics)
        return {"metrics": check.metrics, "metrics_path": str(path)}
