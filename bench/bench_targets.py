"""What ``fsm_runner.setup()`` costs for a git URL already in the clone cache, against a local directory.

A small target (a one-command contract and ``--files`` files of 1 KiB, committed) is served from a bare
repository through a ``file://`` URL. After one cold setup that clones it, each timed round opens a session
on the URL with no new commits (fetch under the cache lock, prune, a fresh ``git worktree`` checkout, the run
dir, the ``clone`` phase) and closes it (the checkout is removed again), then does the same on a local
directory holding the same files (used in place). The two alternate for ``--runs`` rounds; median and p95 of
each are reported. No checkout may be left when the rounds are done.

    python bench/bench_targets.py [--runs 20] [--files 200] [--json]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import Figure, median, report

import fsm_runner
from fsm_runner.evidence.layout import clone_checkouts_dir

TARGET_GIT_MEDIAN_S = 0.3
TARGET_GIT_P95_S = 0.6
TARGET_LOCAL_MEDIAN_S = 0.1
GIT_ID = ("-c", "user.email=bench@example.invalid", "-c", "user.name=bench", "-c", "commit.gpgsign=false")


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, *args], cwd=cwd, check=True, capture_output=True)


def _write_target(root: Path, files: int) -> Path:
    root.mkdir(parents=True)
    (root / "pipeline.yml").write_text("version: 1\ntests:\n  cmds: 'true'\n", encoding="utf-8")
    data = root / "data"
    data.mkdir()
    for i in range(files):
        (data / f"f{i:04d}.txt").write_text(f"{i}\n" * 512, encoding="utf-8")
    return root


def _setup_close(target: str | Path, clones: Path) -> float:
    start = time.perf_counter()
    session = fsm_runner.setup(target, clones_dir=clones, require_metrics=False)
    session.close()
    return time.perf_counter() - start


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (the largest value for fewer than 20 samples)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="timed setups of each kind (default 20)")
    parser.add_argument("--files", type=int, default=200, help="1 KiB files in the target (default 200)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    runs = max(1, args.runs)
    os.environ.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")  # no user config in the timing
    with tempfile.TemporaryDirectory(prefix="fsm-bench-targets-") as tmp:
        base = Path(tmp)
        work = _write_target(base / "work", args.files)
        _git(work, "init", "-q", "-b", "main")
        _git(work, "add", "-A")
        _git(work, "commit", "-q", "-m", "target")
        _git(base, "clone", "-q", "--bare", str(work), str(base / "origin.git"))
        local = _write_target(base / "local", args.files)
        url, clones = (base / "origin.git").as_uri(), base / "clones"
        cold = _setup_close(url, clones)
        _setup_close(local, clones)  # warm the page cache and imports for the local case too
        git_times, local_times = [], []
        for _ in range(runs):
            git_times.append(_setup_close(url, clones))
            local_times.append(_setup_close(local, clones))
        (clone,) = [p for p in clones.iterdir() if (p / ".git").is_dir()]
        left = [p for p in clone_checkouts_dir(clone).iterdir() if p.is_dir()]
        if left:
            raise SystemExit(f"checkouts left after closed sessions: {left}")
    note = f"{runs} runs, {args.files} files"
    figures = [
        Figure("setup+close, cached git URL, median", median(git_times), "s", TARGET_GIT_MEDIAN_S, note=note),
        Figure("setup+close, cached git URL, p95", p95(git_times), "s", TARGET_GIT_P95_S, note=note),
        Figure("setup+close, local dir, median", median(local_times), "s", TARGET_LOCAL_MEDIAN_S, note=note),
        Figure("setup+close, local dir, p95", p95(local_times), "s", note=note),
        Figure("git URL minus local dir, median", median(git_times) - median(local_times), "s",
               note="fetch, prune, checkout, remove"),  # fmt: skip
        Figure("first setup+close of the URL (clone)", cold, "s", note="cold cache"),
    ]
    details = [("url", url), ("clone cache", str(clones)), ("checkouts left", "0")]
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
