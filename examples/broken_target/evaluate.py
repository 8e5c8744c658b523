"""Score the recorded samples in data/samples.jsonl with .aider_fsm/scoring.py and write the metrics JSON.

A scoring failure still writes metrics, with ok false and the error, so the runner (and a repair agent)
can see what went wrong.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent
sys.dont_write_bytecode = True  # a repaired scoring.py must never be shadowed by a stale .pyc


def load_scoring() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scoring", ROOT / ".aider_fsm" / "scoring.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=".aider_fsm/metrics.json", help="must match evaluation.metrics_path")
    out = ROOT / parser.parse_args().out
    samples = [
        json.loads(line) for line in (ROOT / "data" / "samples.jsonl").read_text().splitlines() if line
    ]
    metrics: dict[str, object] = {"ts": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        metrics |= {"ok": True, **load_scoring().score_samples(samples)}
    except Exception as exc:  # any bug in the helper: report it, do not crash without metrics
        traceback.print_exc()
        metrics |= {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    print(f"evaluate: {metrics}")
    return 0 if metrics["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
