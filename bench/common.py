"""Shared plumbing of the benchmark scripts: a figure with its target, and one table format for all of them.

Every script prints a human table by default and, with ``--json``, the list of figures as JSON so that
``bench/run_all`` can gather them. A figure without a target is informational and never fails.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import define, field, validators

PASS = "PASS"
FALL_SHORT = "FALL SHORT"
INFO = "info"


@define(frozen=True)
class Figure:
    """One measured number; ``target`` is an upper bound unless ``higher_is_better``."""

    name: str = field(validator=validators.instance_of(str))
    value: float = field(converter=float)
    unit: str = field(validator=validators.instance_of(str))
    target: float | None = None
    higher_is_better: bool = False
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return INFO
        met = self.value >= self.target if self.higher_is_better else self.value < self.target
        return PASS if met else FALL_SHORT

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'>=' if self.higher_is_better else '<'} {_number(self.target)} {self.unit}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "higher_is_better": self.higher_is_better,
            "note": self.note,
            "verdict": self.verdict,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        return cls(
            name=str(data["name"]),
            value=float(data["value"]),
            unit=str(data["unit"]),
            target=None if data.get("target") is None else float(data["target"]),
            higher_is_better=bool(data.get("higher_is_better", False)),
            note=str(data.get("note", "")),
        )


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    """Left-aligned columns, one space-padded line per row, with a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return lines


def figure_rows(figures: Iterable[Figure], *, with_group: str | None = None) -> list[list[str]]:
    rows = []
    for fig in figures:
        row = [fig.name, f"{_number(fig.value)} {fig.unit}", fig.target_text(), fig.verdict, fig.note]
        rows.append([with_group, *row] if with_group is not None else row)
    return rows


FIGURE_HEADER = ("figure", "value", "target", "verdict", "note")


def report(figures: Sequence[Figure], details: Sequence[tuple[str, str]], *, as_json: bool) -> int:
    """Print the figures (and, in text mode, the detail lines first); always exit status 0."""
    if as_json:
        sys.stdout.write(json.dumps([f.to_json() for f in figures]) + "\n")
        return 0
    if details:
        width = max(len(k) for k, _ in details)
        for key, value in details:
            sys.stdout.write(f"{key:<{width}}  {value}\n")
        sys.stdout.write("\n")
    sys.stdout.write("\n".join(table(figure_rows(figures), FIGURE_HEADER)) + "\n")
    return 0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
