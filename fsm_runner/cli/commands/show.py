"""``fsm-runner show RUN``: one run's timeline, transitions with their commands and evidence."""

from __future__ import annotations

import argparse

from fsm_runner.cli.errors import EXIT_OK
from fsm_runner.cli.output import emit_json, find_run, print_lines
from fsm_runner.cli.report import timeline_json, timeline_lines


def command(args: argparse.Namespace) -> int:
    run_dir = find_run(args, args.run)
    if args.json:
        emit_json(timeline_json(run_dir))
    else:
        print_lines(timeline_lines(run_dir))
    return EXIT_OK
