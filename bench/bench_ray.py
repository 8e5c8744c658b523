"""What does running sweep cells as Ray tasks cost over running them as local processes?

Runs the same N cells (a small target whose evaluation mostly waits, about a second per cell)
``--concurrency`` at a time, first as local cell processes, then as tasks of the ray executor on a local Ray
cluster (twice in the first round: the first pass starts Ray's worker processes, the second finds them
running), and reports the cluster's start time and Ray's added milliseconds per cell, cold and warm. Local
and Ray passes alternate for ``--rounds`` rounds; the best round of each is kept, which keeps noise from
other work on the machine out of the figures.

    python bench/bench_ray.py [-n 8] [--concurrency 4] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Figure, report

from fsm_runner.errors import FsmRunnerError
from fsm_runner.sweeps.cells import CellProcess, CellResult, CellSpec

PIPELINE = """\
version: 1
security:
  mode: safe
evaluation:
  run_cmds:
    - python3 evaluate.py
  metrics_path: .aider_fsm/metrics.json
  required_keys: [ok, score]
artifacts:
  out_dir: .aider_fsm/artifacts
"""

EVALUATE = """\
import json, time
time.sleep(0.8)
json.dump({"ok": True, "score": 1.0}, open(".aider_fsm/metrics.json", "w"))
"""


def _target(root: Path) -> Path:
    (root / ".aider_fsm").mkdir(parents=True)
    (root / "pipeline.yml").write_text(PIPELINE)
    (root / "evaluate.py").write_text(EVALUATE)
    return root


Start = Callable[[CellSpec, Path, str], Any]


def _sweep(start: Start, specs: list[CellSpec], workdir: Path, at_once: int) -> float:
    """Wall time of running every cell, ``at_once`` at a time; every cell must succeed."""
    workdir.mkdir(parents=True)
    pending = list(enumerate(specs))
    running: list[Any] = []
    rows: list[CellResult] = []
    begin = time.perf_counter()
    while pending or running:
        while pending and len(running) < at_once:
            i, spec = pending.pop(0)
            running.append(start(spec, workdir, f"cell{i}"))
        for handle in list(running):
            row = handle.poll()
            if row is not None:
                running.remove(handle)
                rows.append(row)
        time.sleep(0.01)
    elapsed = time.perf_counter() - begin
    failed = [r.error for r in rows if not r.ok]
    if failed:
        raise SystemExit(f"a benchmark cell failed: {failed[0]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=8, help="cells per sweep (default 8)")
    parser.add_argument("--concurrency", type=int, default=4, help="cells at once (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds, best kept (default 2)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (for bench/run_all)")
    args = parser.parse_args(argv)
    try:
        from fsm_runner.sweeps.ray_executor import RayExecutor

        with tempfile.TemporaryDirectory(prefix="fsm-bench-ray-") as tmp:
            root = Path(tmp)
            target = _target(root / "sleeper")
            specs = [CellSpec(target=str(target), llm=f"m{i}") for i in range(args.n)]
            begin = time.perf_counter()
            executor = RayExecutor(concurrency=args.concurrency)
            cluster_start = time.perf_counter() - begin
            auth = "token authentication " + ("on" if os.environ.get("RAY_AUTH_MODE") == "token" else "off")
            locals_: list[float] = []
            colds: list[float] = []
            warms: list[float] = []
            try:
                for round_ in range(max(1, args.rounds)):
                    locals_.append(_sweep(CellProcess, specs, root / f"local{round_}", args.concurrency))
                    if round_ == 0:  # the only pass that starts Ray's worker processes
                        colds.append(_sweep(executor.start, specs, root / "cold", args.concurrency))
                    warms.append(_sweep(executor.start, specs, root / f"warm{round_}", args.concurrency))
            finally:
                begin = time.perf_counter()
                executor.close()
                shutdown = time.perf_counter() - begin
    except FsmRunnerError as exc:
        raise SystemExit(f"bench_ray: {exc}") from exc
    local, cold, warm = min(locals_), min(colds), min(warms)
    per_cell_cold = (cold - local) / args.n * 1000
    per_cell_warm = (warm - local) / args.n * 1000
    setting = f"{args.n} cells, {args.concurrency} at once"
    figures = [
        Figure("ray: local cluster start", cluster_start, "s", note=f"ray.init, {auth}"),
        Figure("ray: added per cell, warm workers", per_cell_warm, "ms", note=setting),
        Figure("ray: added per cell, first sweep", per_cell_cold, "ms", note=f"{setting}, starts workers"),
        Figure("ray: local cluster shutdown", shutdown, "s"),
    ]
    details = [
        ("cells", setting),
        ("local sweep", f"{local:.2f} s"),
        ("ray sweep, first", f"{cold:.2f} s"),
        ("ray sweep, warm", f"{warm:.2f} s"),
    ]
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
