"""``fsm-runner diagram``: the machine as Mermaid or DOT text (readable or ``--full``), a run marked."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsm_runner.cli.errors import EXIT_OK
from fsm_runner.cli.output import find_run, print_lines, terminal_text
from fsm_runner.diagrams import diagram, render
from fsm_runner.errors import UsageError


def command(args: argparse.Namespace) -> int:
    run_dir = find_run(args, args.run) if args.run else None
    if args.render and not args.output:
        raise UsageError("--render writes an image: give the file with --output FILE")
    text = diagram(format="dot" if args.render else args.format, run_dir=run_dir, full=args.full)
    data = render(text, args.render) if args.render else text.encode("utf-8")
    if not args.output:
        sys.stdout.write(terminal_text(text if text.endswith("\n") else text + "\n"))
        return EXIT_OK
    try:
        Path(args.output).write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print_lines([f"wrote {args.output}"])
    return EXIT_OK
