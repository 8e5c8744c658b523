"""A comparison table as one self-contained HTML page: the table and a chart of the metric by checkpoint.

The page loads nothing (no script, font, stylesheet or image from anywhere), so it opens the same from a CI
artifact, an e-mail or a machine without network. Every text that comes from the results (target names,
checkpoint names, values, errors) is escaped.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fsm_runner.evidence.atomic import write_text_atomic
from fsm_runner.sweeps.compare import ComparisonCell, ComparisonTable, format_delta, format_value, is_number

#: Line colours, one per target (cycled when there are more targets).
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
_WIDTH, _HEIGHT = 760, 340
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 24, 20, 96
_LEGEND_ROW = 20

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.failed { color: #b00020; font-weight: bold; }
li { white-space: pre-wrap; font-family: monospace; }
span.up { color: #1a7f37; } span.down { color: #b00020; }
svg text { font-size: 12px; fill: #333; }
"""


def _cell_html(cell: ComparisonCell | None) -> str:
    if cell is None:
        return "<td>-</td>"
    if not cell.ok:
        return f'<td class="failed" title="{escape(cell.error or "failed")}">FAILED</td>'
    delta = ""
    if cell.delta is not None:
        kind = "up" if cell.delta > 0 else "down" if cell.delta < 0 else "same"
        delta = f' <span class="{kind}">{escape(format_delta(cell.delta))}</span>'
    return f"<td>{escape(format_value(cell.value))}{delta}</td>"


def _table_html(table: ComparisonTable) -> list[str]:
    head = "".join(
        f"<th>{escape(c)}{' (baseline)' if c == table.baseline else ''}</th>" for c in table.columns
    )
    out = ["<table>", f"<thead><tr><th>target</th>{head}</tr></thead>", "<tbody>"]
    for row in table.rows:
        cells = "".join(_cell_html(row.cells.get(c)) for c in table.columns)
        out.append(f"<tr><td>{escape(row.target)}</td>{cells}</tr>")
    out.append("</tbody></table>")
    failures = [
        f"<li>{escape(row.target)} &times; {escape(llm)}: {escape(cell.error or 'failed')}</li>"
        for row in table.rows
        for llm, cell in row.cells.items()
        if not cell.ok
    ]
    if failures:
        out += ["<h2>Failed cells</h2>", "<ul>", *failures, "</ul>"]
    return out


def _y_range(values: list[float]) -> tuple[float, float]:
    """The y axis: 0..1 for values in it (scores), else the values' range with a margin."""
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if lo >= 0 and hi <= 1:
        return 0.0, 1.0
    if lo == hi:
        return lo - 1, hi + 1
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _chart_svg(table: ComparisonTable) -> list[str]:
    """One polyline per target over the checkpoints (x) and the metric (y); failed cells leave gaps."""
    columns = table.columns
    values = [
        float(cell.value)
        for row in table.rows
        for cell in row.cells.values()
        if cell.ok and is_number(cell.value)
    ]
    lo, hi = _y_range(values)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    legend_top = _HEIGHT + 8
    height = legend_top + _LEGEND_ROW * len(table.rows) + 8

    def x_of(index: int) -> float:
        return _LEFT + (plot_w / 2 if len(columns) < 2 else plot_w * index / (len(columns) - 1))

    def y_of(value: float) -> float:
        return _TOP + plot_h * (1 - (value - lo) / (hi - lo))

    out = [
        f'<svg width="{_WIDTH}" height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="{escape(table.metric)} per checkpoint">',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" stroke="#999"/>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" stroke="#999"/>',
    ]
    for step in range(5):
        value = lo + (hi - lo) * step / 4
        y = y_of(value)
        out.append(f'<line x1="{_LEFT - 4}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    for index, column in enumerate(columns):
        x, y = x_of(index), _TOP + plot_h + 14
        out.append(
            f'<text x="{x:.1f}" y="{y}" text-anchor="end" transform="rotate(-30 {x:.1f} {y})">'
            f"{escape(column)}</text>"
        )
    out.append(
        f'<text x="14" y="{_TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {_TOP + plot_h / 2:.1f})">{escape(table.metric)}</text>'
    )
    for number, row in enumerate(table.rows):
        colour = PALETTE[number % len(PALETTE)]
        points = [
            (x_of(index), y_of(float(cell.value)), column, cell.value)
            for index, column in enumerate(columns)
            if (cell := row.cells.get(column)) is not None and cell.ok and is_number(cell.value)
        ]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        for x, y, column, value in points:
            label = f"{row.target} x {column}: {format_value(value)}"
            out.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
                f"<title>{escape(label)}</title></circle>"
            )
        ly = legend_top + _LEGEND_ROW * number + 10
        out.append(
            f'<line x1="{_LEFT}" y1="{ly}" x2="{_LEFT + 24}" y2="{ly}" stroke="{colour}" stroke-width="3"/>'
        )
        out.append(f'<text x="{_LEFT + 32}" y="{ly + 4}">{escape(row.target)}</text>')
    out.append("</svg>")
    return out


def render_html(table: ComparisonTable) -> str:
    """The whole page: title, the table with deltas and failed cells, the failures' errors, the chart."""
    title = f"{table.metric} per checkpoint"
    baseline = f"baseline: {table.baseline}" if table.baseline is not None else "no baseline"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{escape(baseline)}; deltas are against it.</p>",
        *_table_html(table),
        *_chart_svg(table),
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(table: ComparisonTable, path: str | Path) -> Path:
    """Write the page to ``path`` atomically (a reader never sees half a page); returns the path."""
    path = Path(path)
    write_text_atomic(path, render_html(table))
    return path
