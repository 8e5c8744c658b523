"""``fsm-runner validate [PATH]``: every problem of the contract files, with file:line."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsm_runner.cli.errors import EXIT_OK, EXIT_USAGE
from fsm_runner.cli.output import emit_json, print_error, print_lines
from fsm_runner.contract import validate_repo
from fsm_runner.errors import UsageError
from fsm_runner.evidence.layout import ACTIONS_REL, BOOTSTRAP_REL


def command(args: argparse.Namespace) -> int:
    root = Path(args.path).resolve()
    if not root.is_dir():
        raise UsageError(f"{args.path}: not a directory (give the repository root)")
    problems = validate_repo(root, args.pipeline)
    if args.json:
        emit_json([{"path": p.path, "line": p.line, "key": p.key, "problem": p.problem} for p in problems])
    else:
        print_lines([str(p) for p in problems])
    if problems:
        print_error(f"error: {len(problems)} problem(s) in the contract of {root}")
        return EXIT_USAGE
    checked = [args.pipeline, *(rel for rel in (BOOTSTRAP_REL, ACTIONS_REL) if (root / rel).exists())]
    if not args.json:
        print_lines([f"ok: {root}: {', '.join(checked)} valid"])
    return EXIT_OK
