"""Keep the diagram in ``docs/state-machine.md`` in step with the machine (a developer tool, not shipped).

The docs page carries the machine's Mermaid diagram in one fenced block; these helpers find it, say when it
no longer matches :mod:`fsm_runner.engine.topology` and rewrite it, so the page cannot silently drift.

    python tools/diagram_docs.py --check     # exit 1 when the page is out of date
    python tools/diagram_docs.py --write     # rewrite the block
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fsm_runner.diagrams import diagram
from fsm_runner.errors import FsmRunnerError, UsageError

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "state-machine.md"
REGENERATE = "python tools/diagram_docs.py --write"
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
            f"{path}: the ```mermaid block is out of date with fsm_runner/engine/topology.py; "
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
        prog="python tools/diagram_docs.py",
        description="Check or refresh the state diagram embedded in docs/state-machine.md.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--write", action="store_true", help="rewrite the diagram block with the current machine"
    )
    action.add_argument("--check", action="store_true", help="exit 1 when the diagram block is out of date")
    parser.add_argument(
        "--docs", metavar="FILE", default=str(DOCS_PATH), help="the docs page (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when the page is (now) current, 1 when ``--check`` finds it stale, 2 on an error."""
    args = _parser().parse_args(argv)
    docs = Path(args.docs)
    try:
        if args.write:
            changed = write_docs(docs)
            sys.stdout.write(f"{docs}: {'updated' if changed else 'already up to date'}\n")
            return 0
        message = stale_docs(docs)
    except FsmRunnerError as exc:
        sys.stderr.write(f"diagram_docs: error: {exc}\n")
        return 2
    if message:
        sys.stderr.write(message + "\n")
        return 1
    sys.stdout.write(f"{docs}: up to date\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
