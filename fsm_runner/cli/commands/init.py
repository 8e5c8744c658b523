"""``fsm-runner init [DIR]``: a commented skeleton contract that validates."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsm_runner.cli.errors import EXIT_OK, EXIT_USAGE
from fsm_runner.cli.output import print_lines
from fsm_runner.contract import validate_repo
from fsm_runner.contract.skeleton import write_skeleton


def command(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    written = write_skeleton(root, force=args.force)
    print_lines([f"wrote {path}" for path in written])
    problems = validate_repo(root.resolve())
    if problems:  # the skeleton is ours: this would be a bug, but say so rather than hide it
        print_lines([str(p) for p in problems])
        return EXIT_USAGE
    print_lines(
        [
            f"next: replace the evaluation placeholder in {written[0]}, then "
            f"`fsm-runner validate {args.dir}` and `fsm-runner run {args.dir} --llm MODEL`"
        ]
    )
    return EXIT_OK
