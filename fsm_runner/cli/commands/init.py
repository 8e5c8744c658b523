"""``fsm-runner init [DIR] [--from-pytest]``: a commented skeleton contract that validates, or the contract
that scores the pass rate of DIR's pytest suite."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsm_runner.cli.errors import EXIT_OK, EXIT_USAGE
from fsm_runner.cli.output import print_lines
from fsm_runner.contract import validate_repo
from fsm_runner.contract.skeleton import pytest_suite, write_skeleton


def command(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    written = write_skeleton(root, force=args.force, from_pytest=args.from_pytest)
    found = [f"found a pytest suite: {pytest_suite(root)}"] if args.from_pytest else []
    print_lines(found + [f"wrote {path}" for path in written])
    problems = validate_repo(root.resolve())
    if problems:  # the skeleton is ours: this would be a bug, but say so rather than hide it
        print_lines([str(p) for p in problems])
        return EXIT_USAGE
    if args.from_pytest:
        print_lines([f"next: `fsm-runner run {args.dir}` reports the suite's pass rate as the score"])
        return EXIT_OK
    print_lines(
        [
            f"next: replace the evaluation placeholder in {written[0]}, then "
            f"`fsm-runner validate {args.dir}` and `fsm-runner run {args.dir} --llm MODEL`"
        ]
    )
    return EXIT_OK
