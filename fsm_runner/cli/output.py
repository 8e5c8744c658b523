"""How commands print: JSON documents, plain lines, and the run lookup shared by show, replay and diagram."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsm_runner.contract.pipeline import artifacts_root
from fsm_runner.engine.progress import escape_controls
from fsm_runner.errors import UsageError
from fsm_runner.evidence.layout import PIPELINE_REL
from fsm_runner.evidence.store import resolve_run
from fsm_runner.targets import url_runs_root


def terminal_text(text: str) -> str:
    """``text`` with every control character a terminal would act on shown as an escape (``\\x1b``).

    What the CLI prints quotes text a target controls (command output in error tails, metrics strings,
    names read from disk): an escape sequence in it could erase lines, retitle the terminal or fake output.
    Every line the commands print passes through here; JSON output is escaped by the JSON encoder instead.
    """
    return escape_controls(text)


def emit_json(data: Any) -> None:
    # ensure_ascii: every control and non-ASCII character is written as a \u escape.
    print(json.dumps(data, indent=2, default=str, ensure_ascii=True))


def print_lines(lines: Sequence[str]) -> None:
    if lines:
        print(terminal_text("\n".join(lines)), flush=True)


def print_error(text: str) -> None:
    """One line (or block) on stderr, control characters neutralised."""
    print(terminal_text(text), file=sys.stderr, flush=True)


def note(text: str) -> None:
    print_error(f"note: {text}")


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


def repo_runs_root(args: argparse.Namespace) -> Path:
    """The runs of ``REPO`` (a directory, or the git URL its runs were started with): ``runs``, ``gc``."""
    if not Path(args.repo).is_dir() and url_runs_root(args.repo, args.clones_dir) is None:
        raise UsageError(
            f"{args.repo}: not a directory; give the repository root, or the git URL the runs were "
            "started with (with --clones-dir if `run` was given one)"
        )
    return runs_root(args.repo, args.artifacts_dir, args.pipeline, args.clones_dir)


def find_run(args: argparse.Namespace, spec: str) -> Path:
    """The run ``spec`` names (a path, a run id or ``latest``), looked up under ``--repo`` (a directory
    or a git URL)."""
    root = runs_root(args.repo, args.artifacts_dir, clones_dir=args.clones_dir)
    return resolve_run(spec, root, start_hint=args.repo)
