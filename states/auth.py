"""auth: log in to whatever the benchmark needs, never waiting for a person unless guided."""

from __future__ import annotations

from pathlib import Path

from fsm_runner.contract.pipeline import AuthSpec
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.states._command import CommandPhase


class AuthPhase(CommandPhase[AuthSpec]):
    name = "auth"
    section_name = "auth"

    def prepare(self, ctx: RunContext, section: AuthSpec, stage_dir: Path) -> ErrorInfo | None:
        if section.interactive and ctx.unattended != "guided":
            return ErrorInfo(
                "contract",
                f"auth.interactive is true but the run is unattended={ctx.unattended!r}; "
                'pass unattended="guided" to allow interactive auth, or make the auth steps non-interactive',
                self.name,
                str(ctx.pipeline_path),
            )
        return None
