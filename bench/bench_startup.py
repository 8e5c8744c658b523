"""Startup: wall time of ``python -c "import fsm_runner"`` and ``fsm-runner --help`` (median of several runs).

The interpreter is the one running this script (``sys.executable``), not a version-manager shim, and
``fsm-runner`` is the console script installed beside it; a shim found first on ``PATH`` is timed as well, for
information. ``python -X importtime`` then shows what the import spends its time on.

    python bench/bench_startup.py [--runs 9] [--json]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from common import Figure, median, report

TARGET_IMPORT_S = 0.3
TARGET_HELP_S = 0.5
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
_OWN = frozenset({"fsm_runner", "states"})


#: Where the timed interpreters keep their bytecode: outside the checkout, so nothing is written into it, and
#: written (whatever PYTHONDONTWRITEBYTECODE says), so an import is timed as every import after a user's
#: first one is, from compiled bytecode, not compiling every module again.
_BYTECODE = tempfile.mkdtemp(prefix="fsm-runner-bench-pycache-")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": _BYTECODE}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _wall(argv: list[str], runs: int) -> float:
    times = []
    env = _env()
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=env)
        times.append(time.perf_counter() - start)
    return median(times)


def _script() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "fsm-runner"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fsm_runner"]


def import_profile() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """What ``import fsm_runner`` spends its time on, from ``python -X importtime``.

    Returns (self time summed per top-level package, e.g. ``structlog`` or ``asyncio``; and fsm_runner/states
    modules by self time), heaviest first, in milliseconds. Only imports made under ``fsm_runner`` count:
    what ``site`` loads before it (``.pth`` hooks) is left out.
    """
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fsm_runner"],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    )
    entries = [m for m in map(_IMPORTTIME.match, proc.stderr.splitlines()) if m]
    # Entries are printed children first; fsm_runner's subtree is what follows the previous top-level entry.
    root = max(i for i, m in enumerate(entries) if m[4] == "fsm_runner" and len(m[3]) == 1)
    first = max((i for i in range(root) if len(entries[i][3]) == 1), default=-1) + 1
    packages: dict[str, float] = {}
    own: dict[str, float] = {}
    for match in entries[first : root + 1]:
        self_ms, name = int(match[1]) / 1000, match[4]
        top = name.split(".")[0]
        if top in _OWN:
            own[name] = self_ms
        packages[top] = packages.get(top, 0.0) + self_ms
    return sorted(packages.items(), key=lambda kv: -kv[1]), sorted(own.items(), key=lambda kv: -kv[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=9, help="runs per command, median kept (default 9)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    runs = max(1, args.runs)
    python = sys.executable
    _wall([python, "-c", "import fsm_runner"], 2)  # warm the page cache and bytecode
    bare = _wall([python, "-c", "pass"], runs)
    imported = _wall([python, "-c", "import fsm_runner"], runs)
    script = _script()
    helped = _wall([*script, "--help"], runs)
    figures = [
        Figure('python -c "import fsm_runner"', imported, "s", TARGET_IMPORT_S, note=f"median of {runs}"),
        Figure("fsm-runner --help", helped, "s", TARGET_HELP_S, note=f"median of {runs}"),
        Figure("python -c pass", bare, "s", note="interpreter alone"),
        Figure("import fsm_runner minus bare interpreter", imported - bare, "s"),
    ]
    on_path = shutil.which("fsm-runner")
    if on_path and Path(on_path).resolve() != Path(script[0]).resolve():
        figures.append(
            Figure("fsm-runner --help via PATH", _wall([on_path, "--help"], runs), "s", note=on_path)
        )
    packages, own = import_profile()
    for name, ms in packages[:5]:
        figures.append(Figure(f"import time in {name}.*", ms, "ms", note="self time, python -X importtime"))
    for name, ms in own[:3]:
        figures.append(Figure(f"import time in {name}", ms, "ms", note="self time, python -X importtime"))
    details = [
        ("interpreter", python),
        ("console script", " ".join(script)),
        ("self time per package", ", ".join(f"{n} {ms:.0f} ms" for n, ms in packages[:6])),
        ("heaviest own modules", ", ".join(f"{n} {ms:.1f} ms" for n, ms in own[:6])),
    ]
    shutil.rmtree(_BYTECODE, ignore_errors=True)
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
