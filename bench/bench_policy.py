"""Policy: the time ``SecurityPolicy.check`` takes on 1 KiB, 64 KiB and 1 MiB commands (best of a few rounds).

Two shapes of command. A *payload* command carries data, the way large commands do in practice: a base64
blob echoed into ``base64 -d`` (an earlier, quadratic check took 17.5 s on 60 KB of it). A *script* is that
many bytes of ordinary commands, one per line (``python -m pytest tests/test_mod_N.py -q && echo N``), the
most work per byte the reader does on realistic text. Both are checked in safe, strict mode with a stage
env, as a stage runs them. The growth figure is the script's 1 MiB time over its 64 KiB time: 16 when the
check is linear, 256 when quadratic (smaller sizes take at least 5 rounds, so noise moves it less).

    python bench/bench_policy.py [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import time

from common import Figure, report

from fsm_runner.execution.policy import SecurityPolicy

TARGET_1MIB_S = 0.2
TARGET_GROWTH = 32.0  # 1 MiB / 64 KiB: 16 is linear, 256 quadratic; the margin absorbs a busy machine
SIZES = ((1 << 10, "1 KiB"), (64 << 10, "64 KiB"), (1 << 20, "1 MiB"))
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/bench", "VIRTUAL_ENV": "/work/repo/.venv"}


def payload(size: int) -> str:
    rng = random.Random(size)
    blob = base64.b64encode(rng.randbytes(size)).decode()
    head, tail = "echo ", " | base64 -d > blob.bin"
    return head + blob[: size - len(head) - len(tail)] + tail


def script(size: int) -> str:
    lines: list[str] = []
    total, i = 0, 0
    while total < size:
        line = f"python -m pytest tests/test_mod_{i}.py -q && echo {i}"
        lines.append(line)
        total += len(line) + 1
        i += 1
    return "\n".join(lines)[:size].rsplit("\n", 1)[0]


def best_check(cmd: str, rounds: int) -> float:
    policy = SecurityPolicy()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        reason = policy.check(cmd, env=ENV)
        best = min(best, time.perf_counter() - start)
        if reason is not None:
            raise SystemExit(f"the benchmark command was refused: {reason}")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="checks per command, best kept (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    details: list[tuple[str, str]] = [("cpus", str(os.cpu_count())), ("rounds", str(args.rounds))]
    times: dict[tuple[str, int], float] = {}
    for shape, make in (("payload", payload), ("script", script)):
        for size, label in SIZES:
            cmd = make(size)
            seconds = best_check(cmd, args.rounds if size == 1 << 20 else max(args.rounds, 5))
            times[shape, size] = seconds
            target = TARGET_1MIB_S * 1000 if (shape == "payload" and size == 1 << 20) else None
            figures.append(Figure(f"check, {label} {shape} command", seconds * 1000, "ms", target=target))
            details.append((f"{shape} {label}", f"{len(cmd)} bytes, {seconds * 1000:.1f} ms"))
    growth = times["script", 1 << 20] / max(times["script", 64 << 10], 1e-9)
    figures.append(
        Figure(
            "check time 1 MiB / 64 KiB, script", growth, "x", target=TARGET_GROWTH,
            note="16 is linear, 256 quadratic",
        )
    )  # fmt: skip
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
