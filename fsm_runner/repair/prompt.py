"""The brief a repair agent reads: the failure, tails of its evidence, and what it may change.

Bounded in size whatever the evidence holds, and fenced so that backticks in output cannot end a block.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from fsm_runner.evidence.confine import ConfinementError, open_inside, open_regular, regular_file

MAX_EVIDENCE_FILES = 4
TAIL_LINES = 60
_TAIL_BYTES = 32 * 1024
_MAX_LINE = 400
_MAX_ERROR_CHARS = 4000


def _fence(text: str) -> str:
    """Wrap ``text`` in a code fence longer than any backtick run inside it."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}\n{text.rstrip()}\n{ticks}"


def _tail(path: Path, mask: Callable[[str], str], repo: Path) -> tuple[str, bool]:
    """The last :data:`TAIL_LINES` lines of ``path`` (reading at most the final 32 KiB), and whether cut.

    ``mask`` runs on the text before any line is cut short, so a secret is never half left in the tail. A
    file of the repository is read without following a symlink out of it.
    """
    inside = path.is_relative_to(repo)
    opened = (
        regular_file(open_inside(repo, str(path.relative_to(repo))), path) if inside else open_regular(path)
    )
    with opened as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - _TAIL_BYTES))
        data = fh.read()
    lines = mask(data.decode("utf-8", errors="replace")).splitlines()
    if size > _TAIL_BYTES and lines:
        lines = lines[1:]  # the first line is probably partial
    cut = size > _TAIL_BYTES or len(lines) > TAIL_LINES
    lines = [ln if len(ln) <= _MAX_LINE else ln[:_MAX_LINE] + " [...]" for ln in lines[-TAIL_LINES:]]
    return "\n".join(lines), cut


def render_prompt(
    phase: str,
    error_kind: str,
    error_message: str,
    evidence_paths: Sequence[str],
    allowed_globs: Sequence[str],
    repo: Path,
    mask: Callable[[str], str] = str,
) -> str:
    """A bounded markdown brief for a coding agent: the failure, evidence tails, and what it may edit.

    ``mask`` (the run's :meth:`~fsm_runner.evidence.redaction.Redactor.mask`) is applied to the message and
    to each evidence file before they are cut to size: the tails quote repository files as they are.
    """
    repo = Path(repo)
    message = mask(error_message).strip() or "(no message)"
    if len(message) > _MAX_ERROR_CHARS:
        message = "[...]\n" + message[-_MAX_ERROR_CHARS:]
    out = [
        f"# Repair: the `{phase}` phase failed",
        "",
        f"Repository: `{repo}` (your working directory).",
        f"Error kind: `{error_kind}`",
        "",
        "## Error",
        "",
        _fence(message),
        "",
        "## Evidence",
        "",
    ]
    shown = 0
    for raw in evidence_paths:
        path = Path(raw) if Path(raw).is_absolute() else repo / raw
        if shown >= MAX_EVIDENCE_FILES or not path.is_file():
            note = "not shown" if path.is_file() else "missing"
            out.append(f"- `{raw}` ({note})")
            continue
        try:
            text, cut = _tail(path, mask, repo)
        except ConfinementError:
            out.append(f"- `{raw}` (not shown: a symbolic link out of the repository)")
            continue
        except OSError as exc:
            out.append(f"- `{raw}` (unreadable: {exc.strerror})")
            continue
        shown += 1
        label = f"last {TAIL_LINES} lines" if cut else "whole file"
        out += ["", f"### `{raw}` ({label})", "", _fence(text or "(empty)"), ""]
    if not evidence_paths:
        out.append("(none recorded)")
    out += [
        "",
        "## What you may change",
        "",
        "Edit only files matching these globs (relative to the repository root; `**` spans directories):",
        "",
        *[f"- `{g}`" for g in allowed_globs],
        "",
        "After you finish, the runner reverts every edit outside these globs and deletes files you added "
        "outside them. `pipeline.yml` is owned by humans: do not edit it; any change to it is restored byte "
        "for byte.",
        "",
        "## What to do",
        "",
        f"Find the cause of the failure and fix it so the `{phase}` phase passes when the runner re-runs it. "
        "Do not fake results (for example writing `ok: true` or a score without really computing it) and do "
        "not weaken the checks. Exit when done; you do not need to re-run the phase yourself.",
        "",
    ]
    return "\n".join(out)
