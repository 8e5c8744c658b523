"""Sweep results files in the results.jsonl format, written for the compare tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH, BROKEN = "examples/arith_bench", "examples/broken_target"
LLMS = ("exact", "sloppy", "/ckpts/step-1000")


def row(
    target: str,
    llm: str,
    score: float | None = None,
    *,
    ok: bool = True,
    error: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One results.jsonl line: metrics default to ``{"score": score}`` for a success, none for a failure."""
    if metrics is None and ok:
        metrics = {"ok": True, "score": score}
    return {
        "target": target,
        "commit": None,
        "llm": llm,
        "mode": "smoke",
        "ok": ok,
        "score": score if ok else None,
        "metrics": metrics,
        "run_id": "20260101T000000Z-abc123",
        "run_dir": f"/runs/{llm}",
        "contract_hash": "sha256:abc",
        "started_at": "2026-01-01T00:00:00Z",
        "duration_s": 1.5,
        "error": error,
    }


def sweep_rows() -> list[dict[str, Any]]:
    """2 targets x 3 llms, in the order cells might finish: the broken target's cells fail."""
    return [
        row(BENCH, "sloppy", 0.75, metrics={"ok": True, "score": 0.75, "details": {"correct": 6, "n": 8}}),
        row(BENCH, "exact", 1.0, metrics={"ok": True, "score": 1.0, "details": {"correct": 8, "n": 8}}),
        row(BROKEN, "exact", ok=False, error="evaluate: KeyError: 'answer'"),
        row(
            BENCH,
            "/ckpts/step-1000",
            0.5,
            metrics={"ok": True, "score": 0.5, "details": {"correct": 4, "n": 8}},
        ),
        row(BROKEN, "sloppy", ok=False, error="evaluate: KeyError: 'answer'"),
        row(BROKEN, "/ckpts/step-1000", ok=False, error="evaluate: KeyError: 'answer'"),
    ]


def write_results(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_sweep_dir(directory: Path, rows: list[dict[str, Any]], *, llms: tuple[str, ...] = LLMS) -> Path:
    """A sweep's out_dir: results.jsonl and a manifest naming the targets and llms in the order given."""
    write_results(directory / "results.jsonl", rows)
    manifest = {"version": 1, "targets": [BENCH, BROKEN], "llms": list(llms)}
    (directory / "sweep.json").write_text(json.dumps(manifest))
    return directory
