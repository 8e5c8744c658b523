"""Evaluation: grade the rollout's samples and write the metrics JSON (ok, score, ts, run_id, details).

Samples are re-graded against meta.expected rather than trusting the stored reward. When there are no
samples for this run (evaluate called on its own), it runs the rollout first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import benchlib
import rollout
import tasks


def current_samples() -> Path | None:
    """This run's samples file; None when missing or from another run or sample count."""
    summary_path = benchlib.repo_path(rollout.ROLLOUT)
    if not summary_path.is_file():
        return None
    try:
        summary = benchlib.read_json(summary_path)
        same_run = summary["run_id"] == benchlib.run_id()
        if not same_run or summary["counts"]["samples"] != benchlib.sample_count():
            return None
        path = benchlib.repo_path(summary["paths"]["samples_jsonl"])
    except (ValueError, KeyError, TypeError):  # unreadable: a fresh rollout replaces it
        return None
    return path if path.is_file() and path.stat().st_size > 0 else None


def score(samples_path: Path) -> dict[str, Any]:
    n = correct = errors = 0
    for line in samples_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            n += 1
            errors += "error" in row.get("meta", {})
            correct += int(tasks.grade(row["completion"], row["meta"]["expected"]))
    details = {"n": n, "correct": correct, "errors": errors, "samples_jsonl": str(samples_path)}
    metrics: dict[str, Any] = {"ok": n > errors, "ts": benchlib.now_iso(), "run_id": benchlib.run_id()}
    if metrics["ok"]:  # a score only when some task was really answered
        metrics["score"] = correct / n
    else:
        metrics["error"] = "every request to the model failed"
    return metrics | {"details": details}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=".aider_fsm/metrics.json", help="must match evaluation.metrics_path")
    out = benchlib.repo_path(parser.parse_args().out)
    try:
        samples = current_samples()
        if samples is None:
            print("evaluate: no samples for this run; running the rollout first")
            rollout.run_rollout()
            samples = current_samples()
        if samples is None:
            raise benchlib.BenchError("the rollout wrote no samples")
        metrics = score(samples)
    except benchlib.BenchError as exc:  # still leave metrics behind: ok false says why
        benchlib.write_json(out, {"ok": False, "error": str(exc), "ts": benchlib.now_iso()})
        raise
    benchlib.write_json(out, metrics)
    print(f"evaluate: ok={metrics['ok']} score={metrics.get('score')} details={metrics['details']}")
    return 0 if metrics["ok"] else 1


if __name__ == "__main__":
    benchlib.cli(main)
