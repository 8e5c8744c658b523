"""The diagram embedded in ``docs/state-machine.md``, and the ``python -m fsm_runner.diagram_docs`` command.

The docs page carries the machine's Mermaid diagram in one fenced block; these helpers find it, say when it
no longer matches :mod:`fsm_runner.machine` and rewrite it, so the page cannot silently drift.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fsm_runner.diagrams import FORMATS, RENDER_FORMATS, diagram, render
from fsm_runner.errors import FsmRunnerError, UsageError

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "state-machine.md"
REGENERATE = "python -m fsm_runner.diagram_docs --write-docs"
_FENCE = re.compile(r"^```mermaid[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def docs_diagram(text: str, path: Path = DOCS_PATH) -> str:
    """The body of the single fenced ``mermaid`` block of a Markdown text."""
    blocks = list(_FENCE.finditer(text))
    if len(blocks) != 1:
        raise UsageError(f"{path}: expected exactly one ```mermaid block, found {len(blocks)}")
    return blocks[0]["body"]


def stale_docs(path: Path = DOCS_PATH) -> str | None:
    """Why the diagram committed in the docs differs from the machine's, or ``None`` when it is current."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror or exc}; regenerate with `{REGENERATE}`"
    try:
        committed = docs_diagram(text, path)
    except UsageError as exc:
        return f"{exc}; add one and fill it with `{REGENERATE}`"
    if committed != diagram("mermaid"):
        return (
            f"{path}: the ```mermaid block is out of date with fsm_runner/machine.py; "
            f"regenerate it with `{REGENERATE}`"
        )
    return None


def write_docs(path: Path = DOCS_PATH) -> bool:
    """Replace the ``mermaid`` block of ``path`` with the current diagram; ``True`` when it changed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    old = docs_diagram(text, path)
    new = diagram("mermaid")
    if old == new:
        return False
    match = _FENCE.search(text)
    assert match is not None  # docs_diagram found exactly one block
    updated = text[: match.start("body")] + new + text[match.end("body") :]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(updated)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


# -- command line -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fsm_runner.diagram_docs",
        description="Print the fsm-runner state machine as Mermaid or DOT, optionally marked with a run.",
    )
    parser.add_argument("--format", choices=FORMATS, default="mermaid", help="text format (default: mermaid)")
    parser.add_argument("--run", metavar="RUN_DIR", help="mark the path this run took (its journal.jsonl)")
    parser.add_argument("--render", choices=RENDER_FORMATS, help="render the DOT text with Graphviz `dot`")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    parser.add_argument("--write-docs", action="store_true", help=f"refresh the diagram in {DOCS_PATH.name}")
    parser.add_argument("--check-docs", action="store_true", help="exit 1 when the docs diagram is stale")
    parser.add_argument(
        "--docs", metavar="FILE", default=str(DOCS_PATH), help="the docs file to write or check"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fsm_runner.diagram_docs``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.write_docs:
            changed = write_docs(Path(args.docs))
            sys.stdout.write(f"{args.docs}: {'updated' if changed else 'already up to date'}\n")
            return 0
        if args.check_docs:
            message = stale_docs(Path(args.docs))
            if message:
                sys.stderr.write(message + "\n")
                return 1
            sys.stdout.write(f"{args.docs}: up to date\n")
            return 0
        if args.render:
            data = render(diagram("dot", args.run), args.render)
        else:
            data = diagram(args.format, args.run).encode()
        if args.output:
            Path(args.output).write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    except FsmRunnerError as exc:
        sys.stderr.write(f"fsm_runner.diagram_docs: error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"fsm_runner.diagram_docs: error: {exc.filename or ''}: {exc.strerror or exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
