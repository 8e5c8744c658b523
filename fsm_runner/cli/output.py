"""How commands print: JSON documents, plain lines, and the run lookup shared by show, replay and diagram."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsm_runner.contract.pipeline import artifacts_root
from fsm_runner.evidence.layout import PIPELINE_REL
from fsm_runner.evidence.store import resolve_run


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_lines(lines: Sequence[str]) -> None:
    if lines:
        print("\n".join(lines), flush=True)


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def runs_root(repo: Path, artifacts_dir: Path | None, pipeline_rel: str = PIPELINE_REL) -> Path:
    """Where a repository keeps its runs: ``--artifacts-dir``, else its contract's ``artifacts.out_dir``."""
    if artifacts_dir is not None:
        return Path(artifacts_dir).resolve()
    return artifacts_root(repo.resolve(), pipeline_rel)


def find_run(args: argparse.Namespace, spec: str) -> Path:
    """The run ``spec`` names (a path, a run id or ``latest``), looked up under ``--repo``."""
    repo = Path(args.repo)
    return resolve_run(spec, runs_root(repo, args.artifacts_dir), start_hint=args.repo)
