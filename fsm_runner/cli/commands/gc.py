"""``fsm-runner gc [REPO]``: remove finished runs (and the checkouts they left), never a live one."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsm_runner.cli.errors import EXIT_OK
from fsm_runner.cli.output import emit_json, print_lines, repo_runs_root
from fsm_runner.prune import PruneEntry, plan_prune, remove_run
from fsm_runner.targets import url_clone


def _size(n: int) -> str:
    """Bytes for people: ``812 B``, ``3.4 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _line(entry: PruneEntry, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed" if entry.removed else "kept"
    line = f"{verb:<12} {entry.run_id}  {entry.status:<11} {_size(entry.bytes):>10}  {entry.run_dir}"
    if entry.checkout is not None:
        line += f" (and its checkout {entry.checkout})"
    if entry.problem:
        line += f": {entry.problem}"
    return line


def command(args: argparse.Namespace) -> int:
    root = repo_runs_root(args)
    clone = None if Path(args.repo).is_dir() else url_clone(args.repo, args.clones_dir)
    if clone is not None and not args.json and not root.is_dir() and not clone.exists():
        print_lines(
            [
                f"{args.repo} was never cloned into {clone.parent}, so it has no runs there; if `run` was "
                "given --clones-dir (or --artifacts-dir), give gc the same option"
            ]
        )
        return EXIT_OK
    plan = plan_prune(
        root, keep=args.keep, older_than=args.older_than, include_failed=args.include_failed, clone=clone
    )
    done = [e if not e.remove or args.dry_run else remove_run(e, clone) for e in plan]
    gone = [e for e in done if e.remove and (args.dry_run or e.removed)]
    freed = sum(e.bytes for e in gone)
    kept = len(done) - len(gone)
    if args.json:
        emit_json(
            {
                "root": str(root),
                "dry_run": args.dry_run,
                "removed": len(gone),
                "kept": kept,
                "bytes_freed": freed,
                "runs": [e.to_json() for e in done],
            }
        )
        return EXIT_OK
    lines = [_line(e, args.dry_run) for e in done if e.remove]
    reasons: dict[str, int] = {}
    for entry in done:
        if entry.remove and (args.dry_run or entry.removed):
            continue
        if entry.remove:
            reasons["could not be removed"] = reasons.get("could not be removed", 0) + 1
        else:
            why = (entry.kept_because or "").split(" (", 1)[0]
            why = "live" if why.startswith("live") else why
            reasons[why] = reasons.get(why, 0) + 1
    held = "; ".join(f"{n} {why}" for why, n in reasons.items())
    if any("--include-failed" in (e.kept_because or "") for e in done):
        held += " (--include-failed removes failed, interrupted and unreadable runs)"
    verb = "would remove" if args.dry_run else "removed"
    summary = f"{verb} {len(gone)} of {len(done)} runs under {root}, {_size(freed)} freed"
    if args.dry_run:
        summary = f"{verb} {len(gone)} of {len(done)} runs under {root}, {_size(freed)} would be freed"
    lines.append(summary + (f"; kept {kept}: {held}" if kept else ""))
    if any(e.remove and not e.removed and not args.dry_run for e in done):
        lines.append("some runs were not removed (see above); nothing else was touched")
    print_lines(lines)
    return EXIT_OK
