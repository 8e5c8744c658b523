"""Output volume: a command that writes 1 GiB to stdout, run through the executor in a child process.

The runner runs in a child Python process (so its memory is measured alone): it imports fsm_runner, runs
``head -c 1G /dev/zero`` through :func:`fsm_runner.execution.run_command` and reports its peak resident set
(``VmHWM`` from ``/proc/self/status``) and the wall time, the output cap (``artifacts.max_output_bytes``,
default 64 MiB) included: the file kept is the head and tail of the output. The baseline is the same
``head`` writing to a file from ``bash``. A second executor run puts a secret in the environment, so the
1 GiB stdout file is also streamed through the secret masker (masking runs before the cut).

    python bench/bench_output.py [--size-mib 1024] [--cap-mib 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import Figure, report

TARGET_PEAK_MB = 80.0

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from fsm_runner.execution.commands import run_command
    from fsm_runner.evidence.redaction import Redactor
    from fsm_runner.execution.policy import SecurityPolicy

    def hwm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    out_dir, size, secret, cap = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    if secret:
        env["BENCH_API_KEY"] = "bench-secret-not-in-output"
    before = hwm_kb()
    start = time.perf_counter()
    result = run_command(
        f"head -c {size} /dev/zero", cwd=out_dir, env=env, out_dir=out_dir, name="big", timeout=600,
        policy=SecurityPolicy(), redactor=Redactor.from_env(env), max_output_bytes=cap,
    )
    elapsed = time.perf_counter() - start
    written = os.path.getsize(result.stdout_path)
    print(json.dumps({"ok": result.ok, "elapsed": elapsed, "before_kb": before, "peak_kb": hwm_kb(),
                      "written": written, "cut": result.stdout_cut_bytes}))
    """
)


def _runner(out_dir: Path, size: int, secret: bool, cap: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(out_dir), str(size), "1" if secret else "0", str(cap)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"runner child failed:\n{proc.stderr}")
    data: dict[str, float] = json.loads(proc.stdout)
    capped = bool(cap) and size > cap
    expected = size - cap if capped else 0
    # A capped file is the head and tail (``cap`` bytes) plus the one-line marker between them.
    fits = cap <= data["written"] < cap + 200 if capped else data["written"] == size
    if not data["ok"] or data["cut"] != expected or not fits:
        raise SystemExit(f"the command did not leave the expected part of its {size} bytes: {data}")
    (out_dir / "big.stdout").unlink()
    return data


def _baseline(out_dir: Path, size: int) -> float:
    target = out_dir / "baseline.out"
    start = time.perf_counter()
    subprocess.run(["bash", "-c", f"head -c {size} /dev/zero > {target}"], check=True)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024, help="bytes written, in MiB (default 1024)")
    parser.add_argument("--cap-mib", type=int, default=64, help="output cap in MiB, 0 for none (default 64)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, best kept (default 2)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    size = args.size_mib * 1024 * 1024
    cap = args.cap_mib * 1024 * 1024
    gib = size / (1 << 30)
    with tempfile.TemporaryDirectory(prefix="fsm-bench-output-", dir=os.environ.get("BENCH_TMPDIR")) as tmp:
        out_dir = Path(tmp)
        runs, masked, baselines = [], [], []
        for _ in range(max(1, args.rounds)):
            baselines.append(_baseline(out_dir, size))
            runs.append(_runner(out_dir, size, secret=False, cap=cap))
        masked.append(_runner(out_dir, size, secret=True, cap=cap))
    best = min(runs, key=lambda r: r["elapsed"])
    peak_mb = max(max(r["peak_kb"] for r in runs), masked[0]["peak_kb"]) / 1024
    base_mb = min(r["before_kb"] for r in runs) / 1024
    baseline = min(baselines)
    figures = [
        Figure(
            f"runner peak RSS (VmHWM), {args.size_mib} MiB stdout",
            peak_mb,
            "MB",
            TARGET_PEAK_MB,
            note="max over all runs, incl. masking",
        ),
        Figure("runner RSS growth during the command", peak_mb - base_mb, "MB", note="peak - after imports"),
        Figure("executor throughput", gib / best["elapsed"], "GiB/s", note=f"{args.size_mib} MiB"),
        Figure("head > file throughput", gib / baseline, "GiB/s", note="baseline"),
        Figure("executor / baseline time", best["elapsed"] / baseline, "x"),
        Figure("executor throughput, masking on", gib / masked[0]["elapsed"], "GiB/s", note="secret in env"),
    ]
    details = [
        ("bytes", f"{size} ({args.size_mib} MiB) of zeros from `head -c`"),
        ("output cap", f"{args.cap_mib} MiB (kept: {int(best['written'])} bytes)"),
        ("executor run", f"{best['elapsed']:.3f} s"),
        ("executor run with masking", f"{masked[0]['elapsed']:.3f} s"),
        ("head > file (bash)", f"{baseline:.3f} s"),
        ("runner RSS after imports", f"{base_mb:.1f} MB"),
    ]
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
