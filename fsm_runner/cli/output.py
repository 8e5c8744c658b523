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
from fsm_runner.targets import url_runs_root


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_lines(lines: Sequence[str]) -> None:
    if lines:
        print("\n".join(lines), flush=True)


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def runs_root(
    repo: str | Path,
    artifacts_dir: Path | None,
    pipeline_rel: str = PIPELINE_REL,
    clones_dir: Path | None = None,
) -> Path:
    """Where a target keeps its runs: ``--artifacts-dir``; for a git URL (``URL`` or ``URL@REF``) the runs
    directory beside its clone (found without network); else the repository's ``artifacts.out_dir``."""
    if artifacts_dir is not None:
        return Path(artifacts_dir).resolve()
    url_runs = url_runs_root(str(repo), clones_dir)
    if url_runs is not None:
        return url_runs
    return artifacts_root(Path(repo).resolve(), pipeline_rel)


def find_run(args: argparse.Namespace, spec: str) -> Path:
    """The run ``spec`` names (a path, a run id or ``latest``), looked up under ``--repo`` (a directory
    or a git URL)."""
    root = runs_root(args.repo, args.artifacts_dir, clones_dir=args.clones_dir)
    return resolve_run(spec, root, start_hint=args.repo)
