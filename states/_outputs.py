"""Outputs left by an earlier run or round must never pass this run's guards: move them into the evidence
first, and say so."""

from __future__ import annotations

import os
from pathlib import Path

from fsm_runner.engine.context import RunContext
from fsm_runner.evidence.confine import move_out
from fsm_runner.evidence.layout import set_aside_name


def set_aside(root: Path, rel: str, stage_dir: Path) -> Path | None:
    """Move the file ``root/rel`` (if present) to ``stage_dir/previous.<name>``; returns where it went.

    The move is done without leaving ``root`` (a symlink out of it raises
    :class:`~fsm_runner.evidence.confine.ConfinementError`), and the moved file is readable by its owner
    only, like the rest of the evidence.
    """
    name = Path(rel).name
    dest = stage_dir / set_aside_name(name)
    count = 1
    while dest.exists():  # two outputs with one file name: keep both
        count += 1
        dest = stage_dir / set_aside_name(f"{count}.{name}")
    if not move_out(root, rel, dest):
        return None
    os.chmod(dest, 0o600)
    return dest


def set_aside_all(
    ctx: RunContext, phase: str, rels: tuple[str, ...], stage_dir: Path
) -> list[dict[str, str]]:
    """Set aside every leftover output in ``rels`` (relative to the repo), secrets masked; each move is
    logged as an ``output.set_aside`` event and returned for the phase's outcome (``path``, ``moved_to``)."""
    moved = []
    for rel in rels:
        dest = set_aside(ctx.repo_root, rel, stage_dir)
        if dest is not None:
            ctx.redactor.mask_file(dest)
            entry = {"path": rel, "moved_to": ctx.relpath(dest)}
            ctx.log.bind(phase=phase).info("output.set_aside", **entry)
            moved.append(entry)
    return moved
