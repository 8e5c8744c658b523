"""A tiny stand-in for a coding agent: it knows one bug, the one in examples/broken_target, and fixes it.

    python examples/repair_agent.py --request REQUEST_JSON --repo REPO
    FSM_REPAIR_REQUEST=REQUEST_JSON python examples/repair_agent.py

The request is the runner's repair request (a JSON file, or JSON text in FSM_REPAIR_REQUEST). The agent reads
the failed phase and error from it, rewrites .aider_fsm/scoring.py to the correct version, prints what it did
and exits 0. Exit 1: nothing it knows how to fix. Exit 2: bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

TARGET = Path(".aider_fsm") / "scoring.py"
FIXED_SCORING = '''"""Grade recorded samples: score = fraction of completions equal to meta.expected."""

from __future__ import annotations

from typing import Any


def score_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    correct = sum(s["completion"].strip() == s["meta"]["expected"] for s in samples)
    return {"score": correct / len(samples), "details": {"n": len(samples), "correct": correct}}
'''


def load_request(source: str) -> dict[str, Any]:
    """A path to a JSON file, or the JSON text itself."""
    try:
        text = source if source.lstrip().startswith("{") else Path(source).read_text(encoding="utf-8")
        request = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the request {source[:200]!r}: {exc}") from None
    if not isinstance(request, dict):
        raise ValueError(f"the request {source[:200]!r} is not a JSON object")
    return request


def repo_from(request: dict[str, Any]) -> str:
    for key in ("repo", "repo_path", "repo_root"):
        if isinstance(request.get(key), str):
            return str(request[key])
    return os.environ.get("AIDER_FSM_REPO_ROOT") or "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--request", default=os.environ.get("FSM_REPAIR_REQUEST"), help="repair request JSON")
    parser.add_argument("--repo", help="target repo (default: the request's repo, else the cwd)")
    parser.add_argument("--prompt", help="rendered prompt file (read for the log only)")
    args = parser.parse_args(argv)
    try:
        request = load_request(args.request) if args.request else {}
    except ValueError as exc:
        print(f"repair_agent: {exc}", file=sys.stderr)
        return 2
    repo = Path(args.repo or repo_from(request)).resolve()
    phase = request.get("phase") or request.get("failed_phase") or "?"
    error = request.get("message") or request.get("error_message") or request.get("error") or ""
    print(f"repair_agent: repo {repo}, failed phase {phase}, error: {str(error)[:200]}")
    if args.prompt:
        print(
            f"repair_agent: prompt {args.prompt} ({len(Path(args.prompt).read_text(encoding='utf-8'))} chars)"
        )

    path = repo / TARGET
    if not path.is_file():
        print(f"repair_agent: {path} does not exist; I only know the broken_target bug", file=sys.stderr)
        return 1
    if path.read_text(encoding="utf-8") == FIXED_SCORING:
        print(f"repair_agent: {TARGET} is already the correct version; nothing to do")
        return 0
    path.write_text(FIXED_SCORING, encoding="utf-8")
    print(f"repair_agent: rewrote {TARGET}: samples are graded against meta['expected'] (was meta['answer'])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
