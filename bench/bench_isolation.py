"""Four isolated runs of the bundled example at once, against the same four one after another.

``examples/arith_bench`` is copied to a temp dir once and its venv made by one warm-up run. Each timed run is
``fsm-runner run TREE --isolate --llm exact --json`` in its own process: a private copy of the tree, the
server on the run's own ``$AIDER_FSM_PORT``, the evidence back under the tree's runs. The figure is the wall
time of four started together divided by the wall time of four in a row (lower is better; 0.25 would be
perfect overlap on four free cores, 1.0 no gain at all). Every run must pass with its own score, or the
benchmark fails.

    python bench/bench_isolation.py [--runs 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Figure, report

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "arith_bench"
TARGET_RATIO = 0.9


def _start(tree: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "fsm_runner", "run", str(tree), "--isolate", "--llm", "exact", "--json"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"a run failed (exit {proc.returncode}):\n{err[-2000:]}")
    result: dict[str, object] = json.loads(out)
    if result.get("score") != 1.0:
        raise SystemExit(f"a run scored {result.get('score')!r}, expected 1.0: {result.get('run_dir')}")
    return result


def _together(tree: Path, runs: int) -> tuple[float, list[dict[str, object]]]:
    start = time.perf_counter()
    procs = [_start(tree) for _ in range(runs)]
    results = [_finish(p) for p in procs]
    return time.perf_counter() - start, results


def _in_a_row(tree: Path, runs: int) -> tuple[float, list[dict[str, object]]]:
    start = time.perf_counter()
    results = [_finish(_start(tree)) for _ in range(runs)]
    return time.perf_counter() - start, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=4, help="runs started together (default 4)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    runs = max(2, args.runs)
    with tempfile.TemporaryDirectory(prefix="fsm-bench-isolation-") as tmp:
        tree = Path(tmp) / "arith_bench"
        shutil.copytree(EXAMPLE, tree, ignore=shutil.ignore_patterns(".venv", "artifacts", "__pycache__"))
        _finish(_start(tree))  # warm-up: the example's venv, the page cache, the imports
        row, _ = _in_a_row(tree, runs)
        together, results = _together(tree, runs)
        ports = {json.loads(Path(str(r["run_dir"]), "run.json").read_text())["port"] for r in results}
        if len(ports) != runs:
            raise SystemExit(f"{runs} runs at once shared ports: {sorted(ports)}")
    note = f"{runs} runs of examples/arith_bench, --isolate"
    figures = [
        Figure(f"{runs} isolated runs at once / in a row", together / row, "x", TARGET_RATIO, note=note),
        Figure(f"{runs} isolated runs at once", together, "s", note="wall time"),
        Figure(f"{runs} isolated runs in a row", row, "s", note="wall time"),
    ]
    details = [("example", str(EXAMPLE)), ("distinct ports", str(len(ports)))]
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
