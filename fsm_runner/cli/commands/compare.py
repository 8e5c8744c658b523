"""``fsm-runner compare RESULTS_OR_RUNS...``: a metric per target and checkpoint, or two runs key by key."""

from __future__ import annotations

import argparse
import warnings

from fsm_runner.cli.errors import EXIT_OK
from fsm_runner.cli.output import emit_json, note, print_lines
from fsm_runner.sweeps.compare import SCORE, ComparisonTable, RunDiff, compare, diff_runs
from fsm_runner.sweeps.html import write_html
from fsm_runner.sweeps.sources import run_dir_of


def command(args: argparse.Namespace) -> int:
    sources: list[str] = args.sources
    two_runs = len(sources) == 2 and all(run_dir_of(s) is not None for s in sources)
    # Two runs alone are diffed key by key; --metric or --baseline asks for the table instead.
    shown: RunDiff | ComparisonTable
    if two_runs and args.metric is None and args.baseline is None:
        shown = diff_runs(*sources)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shown = compare(sources, baseline=args.baseline, metric=args.metric or SCORE)
        for warning in caught:
            note(str(warning.message))
    if args.html:
        table = shown if isinstance(shown, ComparisonTable) else compare(sources)
        note(f"wrote {write_html(table, args.html)}")
    if args.json:
        emit_json(shown.to_json())
    else:
        print_lines(shown.lines())
    return EXIT_OK
