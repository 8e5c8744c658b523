"""Pruning old runs: which runs of a runs directory may go, and removing them with what they left behind.

A run is only ever removed under its own lock (:func:`~fsm_runner.evidence.lock.hold_lock`), so a live run,
or one a replay picks up while the pruner looks at it, is never touched. Runs that ended ok (or were closed)
may go; failed, interrupted and damaged ones only when asked, since replay continues them. A git target's
run also leaves a checkout (a worktree of the clone cache) when it did not end ok: it goes with the run.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from attrs import define, evolve

from fsm_runner.errors import FsmRunnerError, TargetError, UsageError
from fsm_runner.evidence.layout import RUN_JSON, clone_checkouts_dir
from fsm_runner.evidence.lock import hold_lock, lock_holder, release_lock
from fsm_runner.evidence.records import OK
from fsm_runner.evidence.store import list_runs, read_run, run_info
from fsm_runner.targets import checkout_problem, remove_run_checkout

#: Statuses of runs that nothing continues: pruned by default.
FINISHED = frozenset({OK, "closed"})
#: Statuses of runs replay may continue (or that cannot be read): pruned only with ``include_failed``.
UNFINISHED = frozenset({"failed", "interrupted", "stale", "unreadable"})
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])\Z")


def parse_duration(text: str) -> float:
    """``30m``, ``12h``, ``7d`` (also ``s`` and ``w``) as seconds; a clear :class:`UsageError` otherwise."""
    match = _DURATION.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(
            f"{text!r} is not a duration; write a positive number and a unit: s, m, h, d or w (30m, 12h, 7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


@define(frozen=True)
class PruneEntry:
    """One run the pruner looked at: what it decided (``remove`` or why it keeps it) and the bytes involved.

    ``checkout`` is the git checkout the run left, removed with it; ``problem`` says what could not be done.
    """

    run_id: str
    run_dir: Path
    status: str
    age_s: float
    bytes: int = 0
    remove: bool = False
    kept_because: str | None = None
    checkout: Path | None = None
    removed: bool = False
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "status": self.status,
            "age_s": round(self.age_s, 1),
            "bytes": self.bytes,
            "remove": self.remove,
            "kept_because": self.kept_because,
            "checkout": str(self.checkout) if self.checkout else None,
            "removed": self.removed,
            "problem": self.problem,
        }


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed; unreadable parts count as 0)."""
    if path.is_symlink() or not path.exists():
        return 0
    if not path.is_dir():
        return path.lstat().st_size
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total


def _age(run_dir: Path, now: float) -> float:
    """Seconds since the run last wrote its run.json (its end, for a run that ended)."""
    for path in (run_dir / RUN_JSON, run_dir):
        try:
            return max(0.0, now - path.stat().st_mtime)
        except OSError:
            continue
    return 0.0


def _left_checkout(run_dir: Path, clone: Path | None) -> tuple[Path | None, str | None]:
    """The checkout a git run left that goes with it, or why what its run.json names is not removed.

    run.json is not trusted (a stage command can write it): the checkout is derived from ``clone`` (the
    clone cache entry whose runs are pruned, None for a local repository's runs) and the run id, and
    must pass :func:`~fsm_runner.targets.checkout_problem`.
    """
    try:
        target = read_run(run_dir).target
    except FsmRunnerError:
        return None, None
    if target.kind != "git" or target.clone is None:
        return None, None
    recorded = target.repo_root
    if clone is None:
        if not os.path.lexists(recorded):
            return None, None
        return (
            None,
            f"its checkout {recorded} was not removed: only `fsm-runner gc URL` removes a URL's checkouts",
        )
    path = clone_checkouts_dir(clone) / run_dir.name
    if os.path.lexists(path):
        problem = checkout_problem(clone, path)
        return (None, f"its checkout was not removed: {problem}") if problem else (path, None)
    if recorded != path and os.path.lexists(recorded):
        return None, f"its checkout {recorded} was not removed: the checkout of this run would be {path}"
    return None, None


def plan_prune(
    root: Path,
    *,
    keep: int = 0,
    older_than: float | None = None,
    include_failed: bool = False,
    now: float | None = None,
    clone: Path | None = None,
) -> list[PruneEntry]:
    """Every run under ``root``, newest first (by when it last wrote its run.json, as ``older_than`` counts;
    runs started in the same second have no other order), each marked ``remove`` or with the reason it stays.

    Stays: the ``keep`` newest runs, runs younger than ``older_than`` seconds, live runs (their lock is
    held), unfinished runs unless ``include_failed``, and run dirs that are symbolic links. Checkouts are
    removed only for ``clone``'s runs (the clone cache entry of the URL whose runs ``root`` holds).
    """
    if keep < 0:
        raise UsageError(f"--keep must be 0 or more, got {keep}")
    now = time.time() if now is None else now
    entries = []
    ages = {run_dir: _age(run_dir, now) for run_dir in list_runs(root)}
    for position, run_dir in enumerate(sorted(ages, key=ages.__getitem__)):
        info = run_info(run_dir)
        age = ages[run_dir]
        link = run_dir.is_symlink()
        holder = None if link else lock_holder(run_dir)
        reason = None
        if link:
            reason = "a symbolic link (not followed)"
        elif holder is not None or info.status == "running":
            reason = f"live ({holder})" if holder else "live"
        elif position < keep:
            reason = f"among the {keep} newest"
        elif older_than is not None and age < older_than:
            reason = "too recent"
        elif info.status in UNFINISHED and not include_failed:
            reason = f"{info.status} (replay may continue it; --include-failed removes it)"
        elif info.status not in FINISHED | UNFINISHED:
            reason = f"status {info.status}"
        checkout, problem = _left_checkout(run_dir, clone) if reason is None else (None, None)
        size = tree_size(run_dir) + (tree_size(checkout) if checkout else 0) if reason is None else 0
        entries.append(
            PruneEntry(
                run_id=run_dir.name,
                run_dir=run_dir,
                status=info.status,
                age_s=age,
                bytes=size,
                remove=reason is None,
                kept_because=reason,
                checkout=checkout,
                problem=problem,
            )
        )
    return entries


def remove_run(entry: PruneEntry, clone: Path | None = None) -> PruneEntry:
    """Remove a planned run and the checkout it left (of ``clone``, see :func:`plan_prune`), under the
    run's lock; a run that has become live since it was planned, or a run dir that is a symbolic link, is
    kept (``problem`` says so)."""
    if entry.run_dir.is_symlink():
        return evolve(entry, problem="not removed: it is a symbolic link")
    try:
        handle = hold_lock(entry.run_dir)
    except FsmRunnerError as exc:
        return evolve(entry, problem=f"not removed: {exc}")
    problem = entry.problem
    try:
        checkout, skipped = _left_checkout(entry.run_dir, clone)
        problem = skipped or problem
        if checkout is not None and clone is not None:
            try:
                remove_run_checkout(clone, entry.run_dir.name)
            except TargetError as exc:
                problem = f"checkout not removed: {exc}"
        shutil.rmtree(entry.run_dir)
    except OSError as exc:
        return evolve(entry, problem=f"not removed: {exc.strerror or exc}")
    finally:
        release_lock(handle)
    return evolve(entry, removed=True, problem=problem)
