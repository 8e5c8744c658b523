"""``fsm-runner compare``: the table, --json, --html, two runs key by key, and its errors (exit 2, one line)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fsm_runner.cli import main
from fsm_runner.sweeps.compare import ComparisonTable, compare
from tests.sweeps.results_files import BENCH, BROKEN, row, sweep_rows, write_results, write_sweep_dir


def test_the_table_with_deltas_and_failed_cells(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(write_sweep_dir(tmp_path, sweep_rows()))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "metric: score"
    assert out[1].split()[:3] == ["target", "exact", "(baseline)"]
    bench = next(line for line in out if line.startswith(BENCH))
    assert "1.000" in bench and "0.750 (-0.250)" in bench and "0.500 (-0.500)" in bench
    broken = next(line for line in out if line.startswith(BROKEN))
    assert broken.split()[1:] == ["FAILED"] * 3


def test_metric_and_baseline_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = write_results(tmp_path / "results.jsonl", sweep_rows())
    assert (
        main(["compare", str(results), "--metric", "details.correct", "--baseline", "exact", "--json"]) == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["metric"] == "details.correct" and data["baseline"] == "exact"
    assert data["rows"][0]["cells"]["sloppy"] == {"value": 6, "delta": -2, "ok": True}


def test_json_round_trips_through_the_real_command(tmp_path: Path) -> None:
    sweep = write_sweep_dir(tmp_path / "sweep", sweep_rows())
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "compare", str(sweep), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"metric", "baseline", "columns", "rows"}
    table = ComparisonTable.from_json(data)
    assert table == compare(sweep) and table.to_json() == data
    broken = data["rows"][1]["cells"]["exact"]
    assert broken == {"value": None, "delta": None, "ok": False, "error": "evaluate: KeyError: 'answer'"}


def test_html_writes_the_page_beside_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    assert main(["compare", str(write_sweep_dir(tmp_path, sweep_rows())), "--html", str(page)]) == 0
    captured = capsys.readouterr()
    assert "0.750 (-0.250)" in captured.out and f"note: wrote {page}" in captured.err
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<polyline") == 2
    assert "http://" not in text and "https://" not in text


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        (None, ["compare", "{tmp}/missing.jsonl"], "error: {tmp}/missing.jsonl: no such file or directory"),
        ("bad", ["compare", "{tmp}/results.jsonl"], "error: {tmp}/results.jsonl:2: not JSON ("),
        (
            "good",
            ["compare", "{tmp}/results.jsonl", "--baseline", "best"],
            "error: baseline 'best' is not a column; the columns are: exact, sloppy",
        ),
        (
            "good",
            ["compare", "{tmp}/results.jsonl", "--metric", "f1"],
            "error: metric 'f1' is in no result; the results have: ok, score",
        ),
        (None, ["compare", "{tmp}"], "error: {tmp}: neither a sweep directory (no results.jsonl) nor a run"),
    ],
)
def test_errors_exit_2_with_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str | None, argv: list[str], message: str
) -> None:
    good = [row(BENCH, "exact", 1.0), row(BENCH, "sloppy", 0.75)]
    if setup == "good":
        write_results(tmp_path / "results.jsonl", good)
    elif setup == "bad":
        (tmp_path / "results.jsonl").write_text(json.dumps(good[0]) + "\n{not json}\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = _errors(captured.err)
    assert len(errors) == 1 and errors[0].startswith(message.format(tmp=tmp_path)), captured.err


def test_two_runs_are_compared_key_by_key(
    arith_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = str(arith_runs["exact"]), str(arith_runs["sloppy"])
    assert main(["compare", a, b]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"a: {arith_runs['exact'].name}") and out[0].endswith("llm exact")
    assert out[1].startswith(f"b: {arith_runs['sloppy'].name}") and out[1].endswith("llm sloppy")
    assert out[3].split() == ["metric", "a", "b", "change"]
    rows = {line.split()[0]: line.split()[1:] for line in out[4:]}
    assert rows["score"] == ["1", "0.75", "-0.25"] and rows["details.correct"] == ["8", "6", "-2"]
    assert rows["details.n"] == ["8", "8", "+0"] and "benchmark.throughput_rps" in rows
    assert main(["compare", a, b, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metrics"]["score"] == {"a": 1.0, "b": 0.75, "change": -0.25}
    assert data["metrics"]["details.correct"] == {"a": 8, "b": 6, "change": -2}
    assert (data["a"]["llm"], data["b"]["llm"]) == ("exact", "sloppy")


def test_two_runs_with_a_metric_make_the_table(
    arith_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "runs.html"
    argv = ["compare", str(arith_runs["exact"]), str(arith_runs["sloppy"])]
    assert main([*argv, "--metric", "score", "--json", "--html", str(page)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["columns"] == ["exact", "sloppy"] and data["rows"][0]["cells"]["sloppy"]["delta"] == -0.25
    assert page.read_text().count("<polyline") == 1


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    assert "usage: fsm-runner compare" in text and "example:\n  fsm-runner compare" in text
    assert "--metric" in text and "--baseline" in text and "--html" in text
