"""``fsm-runner``: run a target, check or start a contract, and read, replay or draw past runs.

The parser is :mod:`fsm_runner.cli.parser`; each command's handler is ``fsm_runner.cli.commands.<name>``;
:mod:`fsm_runner.cli.errors` maps whatever a handler raises to one message and an exit code.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from fsm_runner.cli.errors import EXIT_USAGE, run_handled
from fsm_runner.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fsm-runner`` script and ``python -m fsm_runner``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler = importlib.import_module(f"fsm_runner.cli.commands.{args.command}")
    return run_handled(args, handler.command)
