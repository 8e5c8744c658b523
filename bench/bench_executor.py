"""How much does the executor add on top of a bare ``subprocess.run``?

Runs N trivial commands (``true``) through :func:`fsm_runner.execution.run_commands` (policy check, evidence
files, result JSON, process-group cleanup, secret masking) and the same N through a plain
``subprocess.run(["bash", "-c", "true"])`` loop, and prints both totals, the ratio and the added milliseconds
per command. The two loops alternate for ``--rounds`` rounds and the best round of each is reported, which
keeps noise from other work on the machine out of the comparison.

    python bench/bench_executor.py [-n 200] [--rounds 3] [--secret] [--json]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Figure, report

from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.commands import run_commands
from fsm_runner.execution.policy import SecurityPolicy


def _plain(n: int, cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["bash", "-c", "true"], cwd=cwd, env=env, check=True)
    return time.perf_counter() - start


def _executor(n: int, cwd: Path, env: dict[str, str], out_dir: Path) -> float:
    start = time.perf_counter()
    run = run_commands(
        ["true"] * n,
        stage="bench",
        cwd=cwd,
        env=env,
        out_dir=out_dir,
        timeout=60,
        retries=0,
        total_budget=None,
        policy=SecurityPolicy(),
        redactor=Redactor.from_env(env),
    )
    elapsed = time.perf_counter() - start
    if not run.ok:
        raise SystemExit(f"benchmark run failed: {run.error}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=200, help="commands per loop (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, best kept (default 3)")
    parser.add_argument("--secret", action="store_true", help="add a secret to the env so masking runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (for bench/run_all)")
    args = parser.parse_args(argv)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    if args.secret:
        env["BENCH_API_KEY"] = "bench-secret-value"
    with tempfile.TemporaryDirectory(prefix="fsm-bench-") as tmp:
        root = Path(tmp)
        _plain(5, root, env)  # warm the page cache for bash
        plains: list[float] = []
        executors: list[float] = []
        for round_ in range(max(1, args.rounds)):
            plains.append(_plain(args.n, root, env))
            executors.append(_executor(args.n, root, env, root / f"evidence{round_}"))
    plain, executor = min(plains), min(executors)
    added_ms = (executor - plain) / args.n * 1000
    if args.json:
        figures = [
            Figure("run_commands: added per command", added_ms, "ms", 3.0, note="executor alone, no session"),
            Figure("run_commands / subprocess.run ratio", executor / plain, "x"),
        ]
        return report(figures, (), as_json=True)
    rows = [
        ("commands", f"{args.n} x {max(1, args.rounds)} rounds (best round shown)"),
        ("subprocess.run total", f"{plain:.3f} s ({plain / args.n * 1000:.2f} ms/cmd)"),
        ("run_commands total", f"{executor:.3f} s ({executor / args.n * 1000:.2f} ms/cmd)"),
        ("ratio", f"{executor / plain:.2f}x"),
        ("added per command", f"{added_ms:.2f} ms"),
        ("masking", "on" if args.secret else "off (no secret in env)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        sys.stdout.write(f"{key:<{width}}  {value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
