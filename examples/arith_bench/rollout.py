"""Rollout: ask the model every task, write .aider_fsm/samples.jsonl and .aider_fsm/rollout.json.

The endpoint comes from runtime_env.json (written by deploy); without one it falls back to the caller's
OPENAI_API_BASE / OPENAI_BASE_URL, so the benchmark can also score a real remote model.
The model is AIDER_LLM_MODEL / OPENAI_MODEL when the runner passes a model name, else the served default.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import benchlib
import tasks

SAMPLES = ".aider_fsm/samples.jsonl"
ROLLOUT = ".aider_fsm/rollout.json"


def endpoint() -> tuple[str, str, str]:
    """(base_url, model, api_key) for the chat-completions calls."""
    model = os.environ.get("AIDER_LLM_MODEL") or os.environ.get("OPENAI_MODEL") or ""
    if os.environ.get("AIDER_LLM_KIND") == "local_hf":
        model = ""  # a local checkpoint: this demo server stands in for it
    remote = os.environ.get("OPENAI_API_BASE") or os.environ.get("OPENAI_BASE_URL") or ""
    if benchlib.runtime_env_path().is_file() or not remote:
        inference = benchlib.read_runtime_env().get("inference") or {}
        return str(inference["base_url"]), model or str(inference.get("model") or "exact"), ""
    return remote, model or "exact", os.environ.get("OPENAI_API_KEY") or ""


def run_rollout() -> dict[str, Any]:
    """Run every task once; return the rollout.json summary (also written to disk)."""
    todo = tasks.make_tasks(benchlib.sample_count(), benchlib.seed())
    base_url, model, api_key = endpoint()
    samples_path = benchlib.repo_path(SAMPLES)
    samples_path.parent.mkdir(parents=True, exist_ok=True)
    errors = 0
    with samples_path.open("w", encoding="utf-8") as out:
        for task in todo:
            meta: dict[str, Any] = {"task_id": task.task_id, "kind": task.kind, "expected": task.expected}
            try:
                completion = benchlib.chat(base_url, model, task.prompt, api_key=api_key)
            except (OSError, RuntimeError, KeyError, IndexError, ValueError) as exc:
                errors += 1
                completion, meta["error"] = "", str(exc)[:300]
            reward = tasks.grade(completion, task.expected)
            row = {"prompt": task.prompt, "completion": completion, "reward": reward, "meta": meta}
            out.write(json.dumps(row) + "\n")
    summary = {
        "paths": {"samples_jsonl": str(samples_path)},
        "counts": {"samples": len(todo), "errors": errors},
        "model": model,
        "mode": benchlib.eval_mode(),
        "run_id": benchlib.run_id(),
        "ts": benchlib.now_iso(),
    }
    benchlib.write_json(benchlib.repo_path(ROLLOUT), summary)
    return summary


def main() -> int:
    summary = run_rollout()
    counts = summary["counts"]
    print(f"rollout: {counts['samples']} samples, {counts['errors']} errors, model {summary['model']}")
    if counts["errors"] >= counts["samples"]:
        print("rollout: every request failed; see meta.error in the samples file", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    benchlib.cli(main)
