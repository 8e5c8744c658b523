"""Per-command overhead of the full session path against a plain ``subprocess.run`` loop.

A target whose ``tests`` section has N trivial commands (``true``) is driven through
``fsm_runner.setup()`` and ``Session.evaluate()``: contract load, run dir, lock, journal, run.json, events,
per-command evidence, phase summaries. The same N commands also run in a plain
``subprocess.run(["bash", "-c", "true"])`` loop. The loops alternate for ``--rounds`` rounds and the best
round of each is kept, which keeps noise from other work on the machine out of the comparison. A one-command
session gives the fixed cost of a session, so the marginal cost of one more command is shown too.

    python bench/bench_session.py [-n 200] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import Figure, report

import fsm_runner

TARGET_ADDED_MS = 3.0


def _write_target(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    cmds = "".join("    - 'true'\n" for _ in range(n))
    (root / "pipeline.yml").write_text(f"version: 1\ntests:\n  cmds:\n{cmds}", encoding="utf-8")
    return root


def _session(repo: Path) -> tuple[float, float]:
    """Wall time of setup + evaluate + close, and the tests phase's own duration from the result."""
    start = time.perf_counter()
    with fsm_runner.setup(repo, require_metrics=False) as sess:  # the target has no evaluation section
        result = sess.evaluate()
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"benchmark session failed: {result.error}")
    tests = [p.duration_s for p in result.phases if p.phase == "tests" and p.status == "ok"]
    shutil.rmtree(repo / ".aider_fsm")  # keep the artifacts dir small between rounds
    return elapsed, tests[0] if tests else 0.0


def _plain(n: int, cwd: Path) -> float:
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["bash", "-c", "true"], cwd=cwd, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=200, help="commands in the tests stage (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, best kept (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    n, rounds = max(2, args.n), max(1, args.rounds)
    with tempfile.TemporaryDirectory(prefix="fsm-bench-session-") as tmp:
        many = _write_target(Path(tmp) / "many", n)
        one = _write_target(Path(tmp) / "one", 1)
        _plain(5, many)
        _session(one)  # warm imports, bash and the page cache
        plains, sessions, phases, singles = [], [], [], []
        for _ in range(rounds):
            plains.append(_plain(n, many))
            total, phase = _session(many)
            sessions.append(total)
            phases.append(phase)
            singles.append(_session(one)[0])
    plain, session, phase, single = min(plains), min(sessions), min(phases), min(singles)
    added_ms = (session - plain) / n * 1000
    marginal_ms = ((session - single) / (n - 1) - plain / n) * 1000
    phase_added_ms = (phase - plain) / n * 1000
    figures = [
        Figure(
            "session: added per command",
            added_ms,
            "ms",
            TARGET_ADDED_MS,
            note=f"(setup+evaluate+close - plain loop) / {n}",
        ),
        Figure("session / plain loop ratio", session / plain, "x", note=f"{n} x `true`"),
        Figure("tests phase: added per command", phase_added_ms, "ms", note="phase duration only"),
        Figure("marginal cost of one more command", marginal_ms, "ms", note="fixed session cost removed"),
        Figure("fixed cost of a session", single * 1000, "ms", note="one-command target"),
    ]
    details = [
        ("commands", f"{n} x {rounds} alternating rounds (best round of each shown)"),
        ("plain subprocess.run loop", f"{plain:.3f} s ({plain / n * 1000:.2f} ms/cmd)"),
        ("setup + evaluate + close", f"{session:.3f} s ({session / n * 1000:.2f} ms/cmd)"),
        ("tests phase (journal outcome)", f"{phase:.3f} s"),
        ("one-command session", f"{single:.3f} s"),
    ]
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
