"""``fsm-runner runs [REPO]``: the runs of a repository or git URL, newest first; damaged ones are flagged."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsm_runner.cli.errors import EXIT_OK
from fsm_runner.cli.output import emit_json, print_lines, runs_root
from fsm_runner.cli.report import runs_table
from fsm_runner.errors import UsageError
from fsm_runner.evidence.store import list_runs, run_info
from fsm_runner.targets import url_runs_root


def command(args: argparse.Namespace) -> int:
    repo = Path(args.repo)
    if not repo.is_dir() and url_runs_root(args.repo, args.clones_dir) is None:
        raise UsageError(
            f"{args.repo}: not a directory; give the repository root, or the git URL the runs were "
            "started with (with --clones-dir if `run` was given one)"
        )
    root = runs_root(args.repo, args.artifacts_dir, args.pipeline, args.clones_dir)
    infos = [run_info(p) for p in list_runs(root)][: args.limit or None]
    if args.json:
        emit_json([i.to_json() for i in infos])
    elif not infos:
        print_lines([f"no runs under {root}"])
    else:
        print_lines(runs_table(infos))
    return EXIT_OK
