"""``fsm-runner runs [REPO]``: the runs of a repository or git URL, newest first; damaged ones are flagged."""

from __future__ import annotations

import argparse

from fsm_runner.cli.errors import EXIT_OK
from fsm_runner.cli.output import emit_json, print_lines, repo_runs_root
from fsm_runner.cli.report import runs_table
from fsm_runner.evidence.store import list_runs, run_info


def command(args: argparse.Namespace) -> int:
    root = repo_runs_root(args)
    infos = [run_info(p) for p in list_runs(root)][: args.limit or None]
    if args.json:
        emit_json([i.to_json() for i in infos])
    elif not infos:
        print_lines([f"no runs under {root}"])
    else:
        print_lines(runs_table(infos))
    return EXIT_OK
