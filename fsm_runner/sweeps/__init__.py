"""Many targets x many checkpoints: comparing what runs and sweeps produced."""

from __future__ import annotations

from fsm_runner.sweeps.compare import (
    ComparisonCell,
    ComparisonRow,
    ComparisonTable,
    MetricChange,
    RunDiff,
    compare,
    diff_runs,
)
from fsm_runner.sweeps.html import render_html, write_html

__all__ = [
    "ComparisonCell",
    "ComparisonRow",
    "ComparisonTable",
    "MetricChange",
    "RunDiff",
    "compare",
    "diff_runs",
    "render_html",
    "write_html",
]
