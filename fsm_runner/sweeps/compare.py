"""Comparing results: targets x checkpoints as a table of one metric, and two runs key by key.

The sources are what sweeps and sessions leave behind, read from disk: a sweep's ``results.jsonl`` (or the
sweep directory holding it) and run directories (one cell per round of the run). A sweep's rows in memory
(anything with ``rows`` whose items have ``to_json()``) are accepted too, so a training loop can compare
what it has just collected; :mod:`fsm_runner.sweeps.sources` reads them. The table is plain data
(:meth:`ComparisonTable.to_json` and back); the text and HTML renderings are built from it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field

from fsm_runner.engine.progress import printable
from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.layout import RUN_JSON
from fsm_runner.evidence.store import read_run
from fsm_runner.sweeps.progress import aligned
from fsm_runner.sweeps.sources import Recorded, read_sources, round_metrics, run_dir_of

#: The metric read from a row's ``score`` (else from its metrics' ``score`` key).
SCORE = "score"
#: How many metric keys an error message lists before it stops.
_KEYS_SHOWN = 20


# -- reading a metric ---------------------------------------------------------------------------------------

_MISSING = object()


def _lookup(metrics: Mapping[str, Any] | None, key: str) -> Any:
    """``metrics[key]``, else the dotted path ``a.b.c`` into nested objects; ``_MISSING`` when absent."""
    if not metrics:
        return _MISSING
    if key in metrics:
        return metrics[key]
    value: Any = metrics
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _metric_of(result: Recorded, metric: str) -> Any:
    if metric == SCORE and result.score is not None:
        return result.score
    return _lookup(result.metrics, metric)


def flatten(metrics: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (``details.correct``), in the order they appear."""
    flat: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def difference(new: Any, old: Any) -> float | None:
    """``new - old`` for two numbers (without float noise such as 0.09999999999999998), else None."""
    if not (is_number(new) and is_number(old)):
        return None
    change = new - old
    return change if isinstance(change, int) else round(change, 12)


# -- the table ----------------------------------------------------------------------------------------------


@define(frozen=True)
class ComparisonCell:
    """One target x llm: the metric's value, its change against the baseline column's value (None in the
    baseline column, for a failed cell, or when either value is not a number), and how the cell ended."""

    value: Any = None
    delta: float | None = None
    ok: bool = True
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"value": self.value, "delta": self.delta, "ok": self.ok}
        if not self.ok:
            data["error"] = self.error
        return data


@define(frozen=True)
class ComparisonRow:
    """A target's cells by llm; an llm the target has no result for yet has no cell."""

    target: str
    cells: dict[str, ComparisonCell] = field(factory=dict)


@define(frozen=True)
class ComparisonTable:
    """Rows are targets, columns llms (checkpoints), cells one metric with its delta against ``baseline``."""

    metric: str
    baseline: str | None
    columns: tuple[str, ...] = ()
    rows: tuple[ComparisonRow, ...] = ()

    def cell(self, target: str, llm: str) -> ComparisonCell | None:
        for row in self.rows:
            if row.target == target:
                return row.cells.get(llm)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "columns": list(self.columns),
            "rows": [
                {"target": row.target, "cells": {llm: cell.to_json() for llm, cell in row.cells.items()}}
                for row in self.rows
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> ComparisonTable:
        """The table :meth:`to_json` wrote; a :class:`UsageError` saying which part is wrong otherwise."""

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise UsageError(f"not a comparison table: {what}")

        need(isinstance(data, Mapping), "expected a JSON object")
        need(isinstance(data.get("metric"), str), "'metric' must be a string")
        need(data.get("baseline") is None or isinstance(data["baseline"], str), "'baseline' must be a string")
        columns = data.get("columns")
        need(isinstance(columns, list) and all(isinstance(c, str) for c in columns), "'columns': strings")
        need(isinstance(data.get("rows"), list), "'rows' must be a list")
        rows = []
        for index, row in enumerate(data["rows"]):
            need(isinstance(row, Mapping) and isinstance(row.get("target"), str), f"rows[{index}].target")
            need(isinstance(row.get("cells"), Mapping), f"rows[{index}].cells must be an object")
            cells = {}
            for llm, cell in row["cells"].items():
                need(isinstance(cell, Mapping) and isinstance(cell.get("ok"), bool), f"rows[{index}] {llm}")
                error = cell.get("error")
                cells[llm] = ComparisonCell(
                    cell.get("value"), cell.get("delta"), cell["ok"], None if error is None else str(error)
                )
            rows.append(ComparisonRow(row["target"], cells))
        return cls(data["metric"], data.get("baseline"), tuple(columns), tuple(rows))

    def lines(self) -> list[str]:
        """The table as aligned text: ``0.750 (-0.250)`` against the baseline, ``FAILED`` for a failed cell,
        ``-`` for a cell with no result; the failures' errors follow the table."""
        if not self.rows:
            return [f"metric {self.metric}: no results"]
        header = ["target", *(f"{c} (baseline)" if c == self.baseline else c for c in self.columns)]
        body = [[row.target, *(_cell_text(row.cells.get(c)) for c in self.columns)] for row in self.rows]
        out = [f"metric: {printable(self.metric)}", *aligned([header, *body])]
        failures = [
            "  " + printable(f"{row.target} x {llm}: {one_line(cell.error or 'failed')}")
            for row in self.rows
            for llm in self.columns
            if (cell := row.cells.get(llm)) is not None and not cell.ok
        ]
        if failures:
            out += ["", "failed:", *failures]
        return out

    def to_text(self) -> str:
        return "\n".join(self.lines())


def one_line(error: str) -> str:
    """An error on one line: its first line and, for a longer one (a traceback tail), its last."""
    lines = [line.strip(" |") for line in error.splitlines() if line.strip(" |")]
    if len(lines) < 2:
        return lines[0] if lines else error
    return f"{lines[0]} ... {lines[-1]}"


def format_value(value: Any) -> str:
    """A metric for a table: numbers with three decimals, nothing as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def format_delta(delta: float | None) -> str:
    """``(+0.250)``; a whole-number metric's change as a whole number (``(+2)``)."""
    if delta is None:
        return ""
    return f"({delta:+d})" if isinstance(delta, int) else f"({delta:+.3f})"


def _cell_text(cell: ComparisonCell | None) -> str:
    if cell is None:
        return "-"
    if not cell.ok:
        return "FAILED"
    return f"{format_value(cell.value)} {format_delta(cell.delta)}".rstrip()


def _ordered(declared: Sequence[str], seen: Iterable[str]) -> list[str]:
    """The declared names that were seen, in the declared order, then the others as first seen."""
    seen = list(dict.fromkeys(seen))
    return [n for n in declared if n in seen] + [n for n in seen if n not in declared]


def _as_list(sources: Any) -> list[Any]:
    if isinstance(sources, (str, os.PathLike, Mapping)) or hasattr(sources, "rows"):
        return [sources]
    return list(sources)


def compare(sources: Any, *, baseline: str | None = None, metric: str = SCORE) -> ComparisonTable:
    """A table of ``metric`` per target (rows) and llm (columns) over results files, sweep dirs, run dirs
    or sweep results in memory.

    A cell recorded twice (a resumed sweep, two sources) takes the later record. ``metric`` is a key of the
    metrics, dotted for nested ones (``details.correct``); ``score`` reads the row's score. ``baseline`` is
    an llm (default: the first column; a checkpoint's column may be named by a path relative to the working
    directory). Raises :class:`UsageError` for a source that cannot be read, an
    unknown baseline, or a metric no result has.
    """
    items = _as_list(sources)
    if not items:
        raise UsageError("nothing to compare: give results files, sweep dirs or run dirs")
    read = read_sources(items)
    latest: dict[tuple[str, str], Recorded] = {}
    for result in read.results:
        latest[(result.target, result.llm)] = result
    targets = _ordered(read.targets, (r.target for r in read.results))
    columns = _ordered(read.llms, (r.llm for r in read.results))
    values = {key: _metric_of(result, metric) for key, result in latest.items()}
    if latest and all(v is _MISSING for v in values.values()) and any(r.ok for r in latest.values()):
        keys = sorted({SCORE, *(k for r in latest.values() for k in flatten(r.metrics))})
        shown = ", ".join(keys[:_KEYS_SHOWN]) + (", ..." if len(keys) > _KEYS_SHOWN else "")
        raise UsageError(
            f"metric {metric!r} is in no result; the results have: {shown} (choose with --metric)"
        )
    if baseline is None:
        baseline = columns[0] if columns else None
    elif baseline not in columns and os.path.abspath(baseline) in columns:
        baseline = os.path.abspath(baseline)  # a checkpoint column named by a relative path
    elif baseline not in columns:
        raise UsageError(
            f"baseline {baseline!r} is not a column; the columns are: {', '.join(columns) or 'none'}"
        )
    rows = []
    for target in targets:
        base = latest.get((target, baseline or ""))
        base_value = values[(target, base.llm)] if base is not None and base.ok else None
        cells = {}
        for llm in columns:
            found = latest.get((target, llm))
            if found is None:
                continue
            result, value = found, values[(target, llm)]
            value = None if value is _MISSING else value
            delta = difference(value, base_value) if result.ok and llm != baseline else None
            cells[llm] = ComparisonCell(
                value, delta, result.ok, None if result.ok else result.error or "failed"
            )
        rows.append(ComparisonRow(target, cells))
    return ComparisonTable(metric, baseline, tuple(columns), tuple(rows))


# -- two runs, key by key -----------------------------------------------------------------------------------


@define(frozen=True)
class RunSide:
    """The run on one side of a :class:`RunDiff`: its last round (or the run itself before any round)."""

    run_id: str
    run_dir: str
    target: str
    llm: str | None
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_dir": self.run_dir,
            "target": self.target,
            "llm": self.llm,
            "ok": self.ok,
        }


@define(frozen=True)
class MetricChange:
    """One metric key of two runs: both values, and ``b - a`` when both are numbers."""

    key: str
    a: Any = None
    b: Any = None
    change: float | None = None


@define(frozen=True)
class RunDiff:
    """Every metric key of two runs side by side, like ``dvc metrics diff``; ``a`` is the reference."""

    a: RunSide
    b: RunSide
    metrics: tuple[MetricChange, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "metrics": {m.key: {"a": m.a, "b": m.b, "change": m.change} for m in self.metrics},
        }

    def lines(self) -> list[str]:
        out = [
            printable(f"{label}: {side.run_id}  {side.target}  llm {side.llm or '-'}")
            + ("" if side.ok else "  FAILED")
            for label, side in (("a", self.a), ("b", self.b))
        ]
        if not self.metrics:
            return [*out, "no metrics in either run"]
        header = ["metric", "a", "b", "change"]
        body = [[m.key, _diff_value(m.a), _diff_value(m.b), _change_text(m)] for m in self.metrics]
        return [*out, "", *aligned([header, *body])]


def _diff_value(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else format_value(value)


def _change_text(change: MetricChange) -> str:
    if change.change is not None:
        return f"{change.change:+.6g}"
    return "" if change.a == change.b else "changed"


def _last_round(run_dir: Path) -> tuple[RunSide, dict[str, Any]]:
    run = read_run(run_dir)
    if run.rounds:
        last = run.rounds[-1]
        metrics, llm, ok = round_metrics(last) or {}, last.llm, last.ok
    else:
        evaluated = (run.outputs.get("evaluate") or {}).get("metrics")
        metrics, llm, ok = dict(evaluated) if isinstance(evaluated, dict) else {}, run.llm, run.status == "ok"
    side = RunSide(run.run_id, str(run_dir), run.target.spec, llm, ok)
    return side, flatten(metrics)


def diff_runs(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str]) -> RunDiff:
    """Every metric key of two runs (their last rounds; nested keys dotted, the benchmark's under
    ``benchmark.``) with ``b - a`` for numbers. Raises :class:`UsageError` when either is not a run dir."""
    sides = []
    for source in (run_a, run_b):
        run_dir = run_dir_of(source)
        if run_dir is None:
            raise UsageError(f"{source}: not a run directory (no {RUN_JSON})")
        try:
            sides.append(_last_round(run_dir))
        except EvidenceError as exc:
            raise EvidenceError(f"cannot compare {source}: {exc}") from None
    (a, a_metrics), (b, b_metrics) = sides
    keys = list(dict.fromkeys([*a_metrics, *b_metrics]))
    changes = tuple(
        MetricChange(
            key,
            a_metrics.get(key),
            b_metrics.get(key),
            difference(b_metrics.get(key), a_metrics.get(key)),
        )
        for key in keys
    )
    return RunDiff(a, b, changes)
