"""Benchmark: latency (p50/p95) and throughput of the served model, written to .aider_fsm/benchmark.json."""

from __future__ import annotations

import argparse
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import benchlib
import tasks


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=int(os.environ.get("ARITH_BENCH_REQUESTS") or 30))
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--out", default=".aider_fsm/benchmark.json", help="must match benchmark.metrics_path"
    )
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        raise benchlib.BenchError("--requests and --concurrency must be at least 1")

    inference = benchlib.read_runtime_env().get("inference") or {}
    base_url, model = str(inference["base_url"]), str(inference.get("model") or "exact")
    prompts = [t.prompt for t in tasks.make_tasks(args.requests, benchlib.seed())]

    def timed_call(prompt: str) -> float | None:
        start = time.perf_counter()
        try:
            benchlib.chat(base_url, model, prompt)
        except (OSError, RuntimeError, KeyError, IndexError, ValueError):
            return None
        return (time.perf_counter() - start) * 1000

    wall_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        results = list(pool.map(timed_call, prompts))
    wall = time.perf_counter() - wall_start
    latencies = [r for r in results if r is not None]
    errors = len(results) - len(latencies)

    metrics = {
        "ok": errors == 0,
        "latency_ms_p50": round(percentile(latencies, 50), 3) if latencies else None,
        "latency_ms_p95": round(percentile(latencies, 95), 3) if latencies else None,
        "throughput_rps": round(len(latencies) / wall, 2),
        "ts": benchlib.now_iso(),
        "run_id": benchlib.run_id(),
        "details": {"requests": len(results), "errors": errors, **vars(args)},
    }
    benchlib.write_json(benchlib.repo_path(args.out), metrics)
    print(
        f"bench: p50={metrics['latency_ms_p50']}ms p95={metrics['latency_ms_p95']}ms "
        f"throughput={metrics['throughput_rps']} req/s errors={errors}"
    )
    return 0 if metrics["ok"] else 1


if __name__ == "__main__":
    benchlib.cli(main)
