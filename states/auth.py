"""auth: log in to whatever the benchmark needs, never waiting for a person unless guided."""

from __future__ import annotations

from typing import Any

from fsm_runner.context import RunContext
from fsm_runner.outcome import ErrorInfo
from states.base import CommandPhase


class AuthPhase(CommandPhase):
    name = "auth"
    section_name = "auth"

    def precheck(self, ctx: RunContext, section: Any) -> ErrorInfo | None:
        if section.interactive and ctx.unattended != "guided":
            return ErrorInfo(
                "contract",
                f"auth.interactive is true but the run is unattended={ctx.unattended!r}; "
                'pass unattended="guided" to allow interactive auth, or make the auth steps non-interactive',
                self.name,
                str(ctx.pipeline_path),
            )
        return None
