"""Outputs left by an earlier run or round must never pass this run's guards: move them into the evidence
first, and say so."""

from __future__ import annotations

import shutil
from pathlib import Path

from fsm_runner.engine.context import RunContext
from fsm_runner.evidence.layout import set_aside_name


def set_aside(path: Path, stage_dir: Path) -> Path | None:
    """Move ``path`` (if present) to ``stage_dir/previous.<name>``; returns where it went."""
    if not path.is_file():
        return None
    dest = stage_dir / set_aside_name(path.name)
    count = 1
    while dest.exists():  # two outputs with one file name: keep both
        count += 1
        dest = stage_dir / set_aside_name(f"{count}.{path.name}")
    shutil.move(str(path), dest)
    return dest


def set_aside_all(
    ctx: RunContext, phase: str, rels: tuple[str, ...], stage_dir: Path
) -> list[dict[str, str]]:
    """Set aside every leftover output in ``rels`` (relative to the repo); each move is logged as an
    ``output.set_aside`` event and returned for the phase's outcome (``path``, ``moved_to``)."""
    moved = []
    for rel in rels:
        dest = set_aside(ctx.repo_root / rel, stage_dir)
        if dest is not None:
            entry = {"path": rel, "moved_to": ctx.relpath(dest)}
            ctx.log.bind(phase=phase).info("output.set_aside", **entry)
            moved.append(entry)
    return moved
