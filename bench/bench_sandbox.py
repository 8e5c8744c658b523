"""What does the bwrap sandbox add to each command?

Runs the same ``tests`` stage of N trivial commands (``true``) in real sessions of a small target, without
the sandbox, under ``sandbox: bwrap``, and under ``sandbox: bwrap`` with ``network: none`` (every command then
enters the run's network namespace with nsenter first), and prints the stage's time per command, the ratio
to no sandbox and the milliseconds the sandbox adds per command. The variants alternate for ``--rounds``
rounds in this one process and the best round of each is kept, which keeps noise from other work on the
machine out of the comparison.

    python bench/bench_sandbox.py [-n 100] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Figure, report

import fsm_runner
from fsm_runner.execution.sandbox import Sandbox, bwrap_version, sandbox_problem

VARIANTS = {
    "none": "",
    "bwrap": "  sandbox: bwrap\n",
    "bwrap, network none": "  sandbox: bwrap\n  network: none\n",
}


def _target(root: Path, security: str, n: int) -> Path:
    root.mkdir(parents=True)
    cmds = json.dumps(["true"] * n)
    (root / "pipeline.yml").write_text(
        f"version: 1\nsecurity:\n  mode: safe\n{security}tests:\n  cmds: {cmds}\n"
    )
    return root


def _stage_seconds(repo: Path) -> float:
    """The tests stage of one fresh session: the commands' time, without setup and evidence of the run."""
    with fsm_runner.setup(repo) as sess:
        result = sess.advance("tests")
    if not result.ok:
        raise SystemExit(f"benchmark run failed: {result.error}")
    [tests] = [p for p in result.phases if p.phase == "tests"]
    return tests.duration_s


def _bare_bwrap_ms(root: Path, n: int) -> float:
    """The same sandbox without the runner: ``subprocess.run`` of the wrapped ``bash -c true``."""
    sandbox = Sandbox(writable=[root])
    argv = list(sandbox.wrap(["bash", "-c", "true"], root).argv)
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(argv, cwd=root, check=True)
    return (time.perf_counter() - start) / n * 1000


def _bare_bash_ms(root: Path, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        subprocess.run(["bash", "-c", "true"], cwd=root, check=True)
    return (time.perf_counter() - start) / n * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=100, help="commands in the stage (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, best kept (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (for bench/run_all)")
    args = parser.parse_args(argv)
    problem = sandbox_problem("none")
    if problem is not None:
        figure = Figure("sandbox: not measured", 0, "ms", note=f"bwrap cannot sandbox here: {problem}"[:200])
        return report([figure], [], as_json=args.json)
    best: dict[str, float] = {}
    bare: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fsm-bench-sandbox-") as tmp:
        root = Path(tmp)
        repos = {name: _target(root / f"t{i}", sec, args.n) for i, (name, sec) in enumerate(VARIANTS.items())}
        for repo in repos.values():
            _stage_seconds(repo)  # warm up: page cache, the first venv-less import of everything
        for _ in range(max(1, args.rounds)):
            for name, repo in repos.items():
                seconds = _stage_seconds(repo)
                best[name] = min(best.get(name, seconds), seconds)
            for name, measure in (("bash", _bare_bash_ms), ("bwrap", _bare_bwrap_ms)):
                ms = measure(root, args.n)
                bare[name] = min(bare.get(name, ms), ms)
    per = {name: seconds / args.n * 1000 for name, seconds in best.items()}
    figures = [
        Figure("command, no sandbox", per["none"], "ms", note=f"{args.n} `true` in a tests stage"),
        Figure("command, bwrap", per["bwrap"], "ms"),
        Figure(
            "bwrap: added per command", per["bwrap"] - per["none"], "ms", 30.0, note="same run of the script"
        ),
        Figure("bwrap / no sandbox ratio", per["bwrap"] / per["none"], "x"),
        Figure(
            "bwrap + network none: added per command", per["bwrap, network none"] - per["none"], "ms", 40.0
        ),
        Figure("bare bwrap: added per `bash -c true`", bare["bwrap"] - bare["bash"], "ms", note="no runner"),
    ]
    details = [
        ("bwrap", bwrap_version() or "?"),
        ("commands", str(args.n)),
        ("rounds", f"{args.rounds} (best kept)"),
        *((f"stage total, {name}", f"{seconds:.3f} s") for name, seconds in best.items()),
    ]
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
