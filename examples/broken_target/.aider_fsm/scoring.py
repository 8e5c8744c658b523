"""Grade recorded samples: score = fraction of completions equal to meta.expected."""

from __future__ import annotations

from typing import Any


def score_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    correct = sum(s["completion"].strip() == s["meta"]["answer"] for s in samples)
    return {"score": correct / len(samples), "details": {"n": len(samples), "correct": correct}}
