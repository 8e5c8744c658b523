"""fsm_runner.compare: results files, sweep dirs and real run dirs into a table; two runs key by key; HTML."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from attrs import define

import fsm_runner
from fsm_runner.errors import UsageError
from fsm_runner.evidence.atomic import append_jsonl
from fsm_runner.sweeps.compare import ComparisonTable, MetricChange, RunDiff, RunSide, compare, diff_runs
from fsm_runner.sweeps.html import render_html, write_html
from tests.sweeps.results_files import BENCH, BROKEN, LLMS, row, sweep_rows, write_results, write_sweep_dir


def test_rows_are_targets_columns_llms_cells_the_score_with_deltas(tmp_path: Path) -> None:
    table = fsm_runner.compare(write_sweep_dir(tmp_path / "sweep", sweep_rows()))
    assert table.metric == "score" and table.baseline == "exact"
    assert table.columns == LLMS  # the order the sweep was given, not the order cells finished
    assert [r.target for r in table.rows] == [BENCH, BROKEN]
    bench = {llm: (c.value, c.delta, c.ok) for llm, c in table.rows[0].cells.items()}
    assert bench == {
        "exact": (1.0, None, True),
        "sloppy": (0.75, -0.25, True),
        "/ckpts/step-1000": (0.5, -0.5, True),
    }
    for llm in LLMS:
        cell = table.cell(BROKEN, llm)
        assert cell is not None and cell.ok is False and cell.value is None and cell.delta is None
        assert cell.error == "evaluate: KeyError: 'answer'"


def test_without_a_manifest_columns_and_rows_follow_first_appearance(tmp_path: Path) -> None:
    table = compare(write_results(tmp_path / "results.jsonl", sweep_rows()))
    assert table.columns == ("sloppy", "exact", "/ckpts/step-1000") and table.baseline == "sloppy"
    assert table.cell(BENCH, "exact") is not None and table.cell(BENCH, "exact").delta == 0.25  # type: ignore[union-attr]


def test_a_later_line_of_a_cell_replaces_the_earlier_one(tmp_path: Path) -> None:
    rows = [
        row(BENCH, "exact", ok=False, error="interrupted"),
        row(BENCH, "sloppy", 0.75),
        row(BENCH, "exact", 1.0),  # the resumed sweep ran it again
    ]
    table = compare(write_results(tmp_path / "results.jsonl", rows))
    assert table.columns == ("exact", "sloppy")
    exact, sloppy = table.cell(BENCH, "exact"), table.cell(BENCH, "sloppy")
    assert exact is not None and exact.ok and exact.value == 1.0 and exact.error is None
    assert sloppy is not None and sloppy.delta == -0.25
    assert len(table.rows) == 1 and len(table.rows[0].cells) == 2


def test_a_failed_cell_keeps_the_value_it_had(tmp_path: Path) -> None:
    rows = [
        row(BENCH, "exact", 1.0),
        row(BENCH, "sloppy", ok=False, error="ok was false", metrics={"score": 0.1}),
    ]
    cell = compare(write_results(tmp_path / "r.jsonl", rows)).cell(BENCH, "sloppy")
    assert cell is not None and (cell.value, cell.ok, cell.delta) == (0.1, False, None)
    assert cell.error == "ok was false"


def test_a_dotted_metric_against_a_chosen_baseline(tmp_path: Path) -> None:
    table = compare(write_sweep_dir(tmp_path, sweep_rows()), metric="details.correct", baseline="sloppy")
    assert table.metric == "details.correct" and table.baseline == "sloppy"
    assert {llm: (c.value, c.delta) for llm, c in table.rows[0].cells.items()} == {
        "exact": (8, 2),
        "sloppy": (6, None),
        "/ckpts/step-1000": (4, -2),
    }
    assert "8 (+2)" in table.to_text() and "4 (-2)" in table.to_text()


def test_to_json_is_exactly_the_documented_shape_and_round_trips(tmp_path: Path) -> None:
    rows = [
        row(BENCH, "exact", 1.0),
        row(BENCH, "sloppy", 0.75),
        row(BROKEN, "exact", ok=False, error="boom"),
    ]
    table = compare(write_results(tmp_path / "results.jsonl", rows))
    data = table.to_json()
    assert data == {
        "metric": "score",
        "baseline": "exact",
        "columns": ["exact", "sloppy"],
        "rows": [
            {
                "target": BENCH,
                "cells": {
                    "exact": {"value": 1.0, "delta": None, "ok": True},
                    "sloppy": {"value": 0.75, "delta": -0.25, "ok": True},
                },
            },
            {
                "target": BROKEN,
                "cells": {"exact": {"value": None, "delta": None, "ok": False, "error": "boom"}},
            },
        ],
    }
    again = ComparisonTable.from_json(json.loads(json.dumps(data)))
    assert again == table and again.to_json() == data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a JSON object"),
        ({"metric": "score", "baseline": None, "columns": ["a"]}, "'rows' must be a list"),
        (
            {
                "metric": "score",
                "baseline": None,
                "columns": ["a"],
                "rows": [{"target": "t", "cells": {"a": {}}}],
            },
            "rows[0] a",
        ),
    ],
)
def test_from_json_says_what_is_not_a_table(data: Any, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        ComparisonTable.from_json(data)


def test_the_text_table_is_aligned_with_deltas_and_failures(tmp_path: Path) -> None:
    lines = compare(write_sweep_dir(tmp_path, sweep_rows())).lines()
    assert lines[0] == "metric: score"
    header, bench, broken = lines[1:4]
    assert header.split("  ")[0] == "target" and "exact (baseline)" in header
    assert "1.000" in bench and "0.750 (-0.250)" in bench and "0.500 (-0.500)" in bench
    assert broken.split()[1:] == ["FAILED", "FAILED", "FAILED"]
    for name in ("sloppy", "/ckpts/step-1000"):  # every column starts at the same offset on every line
        start = header.index(name)
        assert bench[start - 2 : start] == "  " and bench[start] != " "
        assert broken[start : start + 6] == "FAILED"
    assert lines[5] == "failed:" and f"  {BROKEN} x exact: evaluate: KeyError: 'answer'" in lines


@define(frozen=True)
class _Row:
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.data


@define(frozen=True)
class _Sweep:
    rows: list[_Row]


def test_rows_in_memory_compare_like_their_file(tmp_path: Path) -> None:
    """What a sweep returns (rows with to_json) gives the table its results.jsonl gives."""
    rows = sweep_rows()
    from_file = compare(write_results(tmp_path / "results.jsonl", rows))
    assert compare(_Sweep([_Row(r) for r in rows])) == from_file
    assert compare([_Row(r) for r in rows]) == from_file


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"target": "t", "llm": "a", "ok": true, "score": 1}\n{not json\n', r"results\.jsonl:2: not JSON"),
        ("\n[1, 2]\n", r"results\.jsonl:2: expected a JSON object"),
        ('{"target": "t", "llm": 3, "ok": true}\n', r"results\.jsonl:1: 'llm' must be a string"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "results.jsonl").write_text(content)
    with pytest.raises(UsageError, match=message):
        compare(tmp_path / "results.jsonl")


def test_usage_errors_name_the_source_the_columns_and_the_keys(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nowhere\.jsonl: no such file or directory"):
        compare(tmp_path / "nowhere.jsonl")
    with pytest.raises(UsageError, match=r"neither a sweep directory .* nor a run directory"):
        compare(tmp_path)
    results = write_sweep_dir(tmp_path / "sweep", sweep_rows())
    with pytest.raises(
        UsageError, match=r"baseline 'best' is not a column; the columns are: exact, sloppy, /ckpts"
    ):
        compare(results, baseline="best")
    with pytest.raises(
        UsageError,
        match=r"metric 'accuracy' is in no result; the results have: details\.correct, "
        r"details\.n, ok, score",
    ):
        compare(results, metric="accuracy")


def test_a_table_of_failures_only_is_still_a_table(tmp_path: Path) -> None:
    rows = [r for r in sweep_rows() if r["target"] == BROKEN]
    table = compare(write_results(tmp_path / "results.jsonl", rows), metric="accuracy")
    assert [c.ok for c in table.rows[0].cells.values()] == [False, False, False]


# -- run directories (real runs of examples/arith_bench) ------------------------------------------------------


def test_run_dirs_give_one_cell_per_round(arith_runs: dict[str, Path]) -> None:
    table = compare([arith_runs["exact"], arith_runs["sloppy"]])
    assert table.columns == ("exact", "sloppy") and len(table.rows) == 1
    target = table.rows[0].target
    assert target.endswith("arith_bench")  # the target as the run was given it
    assert {llm: (c.value, c.delta, c.ok) for llm, c in table.rows[0].cells.items()} == {
        "exact": (1.0, None, True),
        "sloppy": (0.75, -0.25, True),
    }
    correct = compare([arith_runs["exact"], arith_runs["sloppy"] / "run.json"], metric="details.correct")
    assert correct.cell(target, "sloppy") == correct.rows[0].cells["sloppy"]
    assert (correct.rows[0].cells["sloppy"].value, correct.rows[0].cells["sloppy"].delta) == (6, -2)
    throughput = compare([arith_runs["sloppy"]], metric="benchmark.throughput_rps").rows[0].cells["sloppy"]
    assert isinstance(throughput.value, float) and throughput.value > 0


def test_run_dirs_and_results_mix_in_one_table(arith_runs: dict[str, Path], tmp_path: Path) -> None:
    target = compare([arith_runs["exact"]]).rows[0].target
    results = write_results(tmp_path / "results.jsonl", [row(target, "/ckpts/step-1000", 0.5)])
    table = compare([arith_runs["exact"], results, arith_runs["sloppy"]])
    assert table.columns == ("exact", "/ckpts/step-1000", "sloppy")
    assert [c.delta for c in table.rows[0].cells.values()] == [None, -0.5, -0.25]


def test_two_runs_every_metric_key_side_by_side(arith_runs: dict[str, Path]) -> None:
    diff = diff_runs(arith_runs["exact"], arith_runs["sloppy"])
    assert (diff.a.llm, diff.b.llm) == ("exact", "sloppy") and diff.a.ok and diff.b.ok
    by_key = {m.key: m for m in diff.metrics}
    assert (by_key["score"].a, by_key["score"].b, by_key["score"].change) == (1.0, 0.75, -0.25)
    correct = by_key["details.correct"]
    assert (correct.a, correct.b, correct.change) == (8, 6, -2)
    assert by_key["run_id"].change is None and by_key["run_id"].a != by_key["run_id"].b
    assert "benchmark.throughput_rps" in by_key and by_key["benchmark.throughput_rps"].change is not None
    data = diff.to_json()
    assert data["metrics"]["score"] == {"a": 1.0, "b": 0.75, "change": -0.25}
    assert data["a"]["run_dir"] == str(arith_runs["exact"]) and data["b"]["llm"] == "sloppy"
    text = "\n".join(diff.lines())
    assert re.search(r"^score\s+1\s+0\.75\s+-0\.25$", text, re.M), text
    assert re.search(r"^run_id\s+\S+\s+\S+\s+changed$", text, re.M), text


def test_diffing_needs_two_run_dirs(arith_runs: dict[str, Path], tmp_path: Path) -> None:
    results = write_results(tmp_path / "results.jsonl", sweep_rows())
    with pytest.raises(UsageError, match=r"results\.jsonl: not a run directory"):
        diff_runs(arith_runs["exact"], results)


# -- the HTML page ------------------------------------------------------------------------------------------

VOID = {"meta", "br", "hr", "img", "input", "link"}


class StrictParser(HTMLParser):
    """Collects start tags and the problems html.parser lets through: unbalanced or unknown nesting."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_page(text: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert not parser.problems and not parser.stack, (parser.problems, parser.stack)
    return parser


def test_the_page_is_self_contained_html_with_one_line_per_target(tmp_path: Path) -> None:
    hostile = "<script>alert('x')</script> & co"
    rows = [*sweep_rows(), row(hostile, "exact", 0.25), row(hostile, "sloppy", 0.5)]
    table = compare(write_sweep_dir(tmp_path / "sweep", rows))
    page = write_html(table, tmp_path / "report.html")
    text = page.read_text(encoding="utf-8")
    parsed = parse_page(text)
    tags = [tag for tag, _ in parsed.starts]
    assert tags.count("polyline") == len(table.rows) == 3
    assert "script" not in tags and "<script>" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)" in text
    assert "http://" not in text and "https://" not in text
    assert not any(t in tags for t in ("link", "img", "iframe", "object", "embed"))
    assert not [a for _, attrs in parsed.starts for k, a in attrs.items() if k in ("src", "href")]
    body = "".join(parsed.text)
    assert body.count(hostile) == 4  # table row, legend, and the two points' titles
    assert "0.750 (-0.250)" in body and body.count("FAILED") == 3 and "KeyError: 'answer'" in body
    lines = {attrs["stroke"]: attrs["points"] for tag, attrs in parsed.starts if tag == "polyline"}
    assert len(lines) == 3 and [len((p or "").split()) for p in lines.values()] == [3, 0, 2]  # failures: gaps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "sweep"]  # no temp file left


def test_the_page_of_a_metric_outside_zero_to_one(tmp_path: Path) -> None:
    table = compare(write_sweep_dir(tmp_path, sweep_rows()), metric="details.correct")
    parsed = parse_page(render_html(table))
    points = next(a["points"] for t, a in parsed.starts if t == "polyline") or ""
    ys = [float(p.split(",")[1]) for p in points.split()]
    assert ys[0] < ys[1] < ys[2]  # 8, 6, 4 correct: higher values higher on the page


def test_a_long_error_is_one_line_in_the_text_and_whole_in_the_json(tmp_path: Path) -> None:
    error = (
        "evaluate: command 1/1 exit code 1; see cmd01_try01.stderr\n  | Traceback ...\n  | KeyError: 'answer'"
    )
    table = compare(write_results(tmp_path / "r.jsonl", [row(BROKEN, "exact", ok=False, error=error)]))
    assert (
        f"  {BROKEN} x exact: evaluate: command 1/1 exit code 1; see cmd01_try01.stderr ... KeyError: 'answer'"
        in (table.lines())
    )
    assert table.to_json()["rows"][0]["cells"]["exact"]["error"] == error


def test_a_row_cut_short_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """A sweep killed while it wrote its last row; then the same file after a resume appended a row."""
    good = '{"target": "t", "llm": "a", "ok": true, "score": 1}\n'
    torn = '{"target": "t", "llm": "b", "ok": true, "sco'
    (tmp_path / "results.jsonl").write_text(good + torn)
    with pytest.warns(UserWarning, match=r"results\.jsonl:2: a row cut short; skipped"):
        table = compare(tmp_path / "results.jsonl")
    assert table.columns == ("a",)
    append_jsonl(tmp_path / "results.jsonl", {"target": "t", "llm": "c", "ok": True, "score": 0.5})
    with pytest.warns(UserWarning, match=r"results\.jsonl:2: a row cut short"):
        table = compare(tmp_path / "results.jsonl")
    assert table.columns == ("a", "c")
    (tmp_path / "results.jsonl").write_text(good + "garbage\n" + good)
    with pytest.raises(UsageError, match=r"results\.jsonl:2: not JSON"):
        compare(tmp_path / "results.jsonl")


def test_a_checkpoint_baseline_may_be_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = tmp_path / "ckpts" / "step-1"
    lines = [{"target": "t", "llm": "exact", "ok": True, "score": 1.0},
             {"target": "t", "llm": str(checkpoint), "ok": True, "score": 0.5}]  # fmt: skip
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    monkeypatch.chdir(tmp_path)
    table = compare("results.jsonl", baseline="ckpts/step-1")
    assert table.baseline == str(checkpoint)
    assert table.cell("t", "exact").delta == 0.5


HOSTILE = ["two\nlines", "esc\x1b[2Jape", "tab\there", "ret\rurn", "sep\u2028arator"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_with_a_newline_or_a_control_keeps_the_table_one_line_per_row(tmp_path: Path, name: str) -> None:
    """Targets and llms are the user's (a checkpoint directory may be named anything): shown escaped."""
    rows = [row(BENCH, name, 0.5), row(BENCH, "exact", 1.0), row(name, "exact", ok=False, error="boom")]
    lines = compare(write_results(tmp_path / "results.jsonl", rows)).lines()
    text = "\n".join(lines)
    assert len(lines) == 1 + 1 + 2 + 3  # metric, header, two targets, blank + "failed:" + one failure
    assert all(ch.isprintable() for line in lines for ch in line), text
    header, first = lines[1], lines[2]
    assert repr(name)[1:-1] in header
    start = header.index(repr(name)[1:-1])
    assert first[start : start + 5] == "0.500", text  # its column still lines up


@pytest.mark.parametrize("name", HOSTILE)
def test_a_metric_key_or_an_llm_with_a_newline_keeps_the_diff_one_line_each(name: str) -> None:
    """Metric keys are the target's, llms the user's: shown escaped, one line each."""
    sides = [RunSide(f"run-{x}", f"/runs/{x}", "/t/bench", name, ok=x == "a") for x in "ab"]
    metrics = (MetricChange(name, 1.0, 2.0, 1.0), MetricChange("score", 0.5, 0.75, 0.25))
    lines = RunDiff(*sides, metrics=metrics).lines()
    assert all(ch.isprintable() for line in lines for ch in line), lines
    assert len(lines) == 2 + 1 + 1 + 2  # two sides, blank, header, two keys
    assert lines[0].endswith(f"llm {repr(name)[1:-1]}") and lines[1].endswith("  FAILED")
    assert lines[4].startswith(repr(name)[1:-1]) and lines[5].startswith("score")
