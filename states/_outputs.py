"""Outputs left by an earlier run must never pass this run's guards: move them into the evidence first."""

from __future__ import annotations

import shutil
from pathlib import Path

from fsm_runner.evidence.layout import set_aside_name


def set_aside(path: Path, stage_dir: Path) -> Path | None:
    """Move ``path`` (if present) to ``stage_dir/previous.<name>``; returns where it went."""
    if not path.is_file():
        return None
    dest = stage_dir / set_aside_name(path.name)
    shutil.move(str(path), dest)
    return dest
