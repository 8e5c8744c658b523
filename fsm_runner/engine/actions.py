"""Run a repository's one-shot ``.aider_fsm/actions.yml`` under the run's policy, then remove it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fsm_runner.contract.actions import ActionsSpec, load_actions
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.outcome import ErrorInfo
from fsm_runner.errors import ContractError
from fsm_runner.evidence import layout
from fsm_runner.evidence.confine import ConfinementError, write_inside


def run_actions(ctx: RunContext, stage: str, out_dir: Path) -> tuple[list[dict[str, Any]], ErrorInfo | None]:
    """Execute the actions in order; the file is removed whatever happens so it never runs twice."""
    try:
        spec: ActionsSpec | None = load_actions(ctx.repo_root)
    except ContractError as exc:
        rejected = out_dir / layout.ACTIONS_REJECTED
        shutil.move(str(ctx.repo_root / layout.ACTIONS_REL), rejected)
        return [], ErrorInfo("contract", f"{exc} (the file was moved to {rejected})", stage, str(rejected))
    if spec is None:
        return [], None
    actions_dir = out_dir / layout.ACTIONS_DIR
    actions_dir.mkdir(parents=True, exist_ok=True)
    ctx.write_json(actions_dir / layout.ACTIONS_SNAPSHOT, {"path": spec.path, "count": len(spec.actions)})
    records: list[dict[str, Any]] = []
    error: ErrorInfo | None = None
    try:
        for number, action in enumerate(spec.actions, start=1):
            record: dict[str, Any] = {"id": action.id, "kind": action.kind, "rationale": action.rationale}
            if action.kind == "write_file" and action.path is not None:
                record["path"] = action.path
                try:
                    # Checked as it writes: an earlier action may have made a symlink since the file loaded.
                    write_inside(ctx.repo_root, action.path, (action.content or "").encode("utf-8"))
                    record["ok"] = True
                except ConfinementError as exc:
                    record["ok"] = False
                    error = ErrorInfo("action", f"action {action.id!r} refused: {exc}", stage, spec.path)
            elif action.cmd is not None:
                run = ctx.run_stage(
                    stage,
                    [action.cmd],
                    actions_dir / f"action{number:02d}",
                    timeout_seconds=action.timeout_seconds,
                    retries=action.retries,
                )
                record["ok"] = run.ok
                record["results"] = [r.to_json() for r in run.results]
                if not run.ok:
                    error = ErrorInfo("action", f"action {action.id!r} failed: {run.error}", stage, spec.path)
            records.append(record)
            if error:
                break
    finally:
        Path(spec.path).unlink(missing_ok=True)
        ctx.write_json(actions_dir / layout.ACTIONS_RECORD, records)
    return records, error
