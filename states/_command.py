"""Shared shape of the phases that run a list of contract commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from fsm_runner.contract.pipeline import StageCommon
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo, Outcome, skipped
from fsm_runner.engine.phase import finish
from fsm_runner.evidence.confine import ConfinementError
from fsm_runner.states._outputs import set_aside_all

Section = TypeVar("Section", bound=StageCommon)


class CommandPhase(Generic[Section]):
    """Runs ``commands(section)`` of one pipeline section; an absent or empty section is skipped.

    ``section_name`` names the pipeline.yml section (``evaluation`` for the evaluate phase).
    """

    name = ""
    section_name = ""
    keep_background = False

    def section(self, ctx: RunContext) -> Section | None:
        return cast("Section | None", getattr(ctx.pipeline, self.section_name))

    def commands(self, section: Section) -> tuple[str, ...]:
        return tuple(getattr(section, "cmds", ()))

    def required(self, ctx: RunContext) -> str | None:
        """Why this phase may not be skipped when its section is absent (None: skipping is fine)."""
        return None

    def outputs(self, ctx: RunContext, section: Section) -> tuple[str, ...]:
        """Files the commands write (relative to the repo); one left there is moved to the evidence first."""
        return ()

    def prepare(self, ctx: RunContext, section: Section, stage_dir: Path) -> ErrorInfo | None:
        """Work before the commands run; a returned error fails the phase without running them."""
        return None

    def after(self, ctx: RunContext, section: Section) -> dict[str, Any]:
        """Outputs to keep in the run context once the commands passed."""
        return {}

    def run(self, ctx: RunContext) -> Outcome:
        section = self.section(ctx)
        cmds = self.commands(section) if section is not None else ()
        started = time.monotonic()
        if section is None or not cmds:
            needed = self.required(ctx)
            if needed is None:
                return skipped(self.name, f"pipeline.yml has no {self.section_name} commands")
            error = ErrorInfo("contract", needed, self.name, str(ctx.pipeline_path))
            return finish(ctx, self.name, ctx.new_stage_dir(self.name), started, None, error=error)
        stage_dir = ctx.new_stage_dir(self.name)
        problem = self.prepare(ctx, section, stage_dir)
        if problem is not None:
            return finish(ctx, self.name, stage_dir, started, None, error=problem)
        try:
            moved = set_aside_all(ctx, self.name, self.outputs(ctx, section), stage_dir)
        except ConfinementError as exc:
            error = ErrorInfo("output", str(exc), self.name, str(ctx.repo_root))
            return finish(ctx, self.name, stage_dir, started, None, error=error)
        run = ctx.run_stage(
            self.name,
            cmds,
            stage_dir,
            timeout_seconds=section.timeout_seconds,
            retries=section.retries,
            env=dict(section.env),
            workdir=section.workdir,
            interactive=bool(getattr(section, "interactive", False)),
            keep_background=self.keep_background,
        )
        data = self.after(ctx, section) if run.ok else {}
        if moved:
            data = {**data, "set_aside": moved}
        return finish(ctx, self.name, stage_dir, started, run, data=data)
