"""sweep() and submit() on real targets: real cell processes, real runs, real servers; no mocks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.errors import UsageError
from fsm_runner.sweeps.cells import CellResult
from fsm_runner.sweeps.store import latest_rows, read_rows
from tests.sweeps.conftest import Workspace, assert_nothing_running

pytestmark = pytest.mark.e2e

EXPECTED_SCORES = {"exact": 1.0, "sloppy": 0.75}


def _results(out_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]


def test_a_sweep_of_two_targets_by_three_llms(workspace: Workspace, tmp_path: Path) -> None:
    lines: list[str] = []
    result = fsm_runner.sweep(
        workspace.targets, workspace.llms, concurrency=2, out_dir=tmp_path / "out", progress=lines.append
    )
    assert isinstance(result, fsm_runner.SweepResult)
    assert_nothing_running(tmp_path)
    # rows in cell order: targets x llms, llms in the order given
    assert [(r.target, r.llm) for r in result.rows] == [
        (t, m) for t in workspace.targets for m in workspace.llms
    ]
    scores = {r.llm: r.score for r in result.rows if r.target == str(workspace.arith)}
    assert scores == {"exact": 1.0, "sloppy": 0.75, str(workspace.checkpoint): 1.0}
    for row in result.rows:
        if row.target == str(workspace.arith):
            assert row.ok and row.error is None and row.run_dir and Path(row.run_dir).is_dir()
            assert row.contract_hash and row.metrics and row.metrics["score"] == row.score
        else:
            assert not row.ok and row.score is None
            assert row.error and row.error.startswith("evaluate:") and "exit code 1" in row.error
            assert row.run_dir and Path(row.run_dir).is_dir()
    # results.jsonl: one row per cell, no row lost, the same rows as returned
    written = _results(Path(result.out_dir))
    assert len(written) == 6
    assert sorted((w["target"], w["llm"]) for w in written) == sorted(r.key for r in result.rows)
    assert {tuple(CellResult.from_json(w).key) for w in written} == {r.key for r in result.rows}
    assert (result.total, result.ok, result.failed, result.skipped) == (6, 3, 3, 0)
    manifest = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert manifest["status"] == "done" and manifest["total"] == 6 and manifest["failed"] == 3
    assert manifest["llms"] == workspace.llms and manifest["executor"] == "local"
    assert manifest["concurrency"] == 2 and manifest["finished"] >= manifest["started"]
    assert sorted(p.name for p in (tmp_path / "out" / "cells").glob("*.log"))[0].startswith("000-arith_bench-exact")
    # progress: one line per finished cell with done/total and failures
    done_lines = [ln for ln in lines if ln.startswith("[")]
    assert len(done_lines) == 6 and "[6/6]" in done_lines[-1] and "3 failed" in done_lines[-1]
    # the JSON form has the documented keys
    doc = result.to_json()
    assert {"rows", "out_dir", "total", "ok", "failed", "skipped", "duration_s"} <= set(doc)
    assert doc["rows"][0]["score"] == 1.0


def test_resume_runs_only_what_did_not_succeed(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = fsm_runner.sweep([workspace.arith, workspace.broken], ["exact"], concurrency=2, out_dir=out)
    assert isinstance(first, fsm_runner.SweepResult) and (first.ok, first.failed) == (1, 1)
    # fix the broken target (what the debug loop of the README does), and resume
    scoring = workspace.broken / ".aider_fsm" / "scoring.py"
    scoring.write_text(scoring.read_text().replace('["answer"]', '["expected"]'))
    again = fsm_runner.sweep([workspace.arith, workspace.broken], ["exact"], concurrency=2, out_dir=out, resume=True)
    assert isinstance(again, fsm_runner.SweepResult)
    assert again.skipped == 1 and again.rows[0] == first.rows[0]  # arith was not run again
    rows = read_rows(out)
    assert len(rows) == 3  # the kept row is not written twice
    assert again.rows[1].ok and latest_rows(rows)[(str(workspace.broken), "exact")] == again.rows[1]
    # the resumed cell's log keeps the failed attempt, and says where the new one starts
    (log,) = (out / "cells").glob("*broken_target*.log")
    headers = [line.split(" ", 2) for line in log.read_text().splitlines() if line.startswith("=== ")]
    assert [rest for _, _, rest in headers] == [f"{workspace.broken} x exact ==="] * 2, log.read_text()
    assert headers[0][1] <= headers[1][1], "the attempts follow each other, the earlier first"
    # a changed contract is a new cell: resume runs it again
    pipeline = workspace.arith / "pipeline.yml"
    pipeline.write_text(pipeline.read_text() + "\n# changed\n")
    third = fsm_runner.sweep([workspace.arith], ["exact"], out_dir=out, resume=True)
    assert isinstance(third, fsm_runner.SweepResult) and third.skipped == 0 and third.rows[0].ok
    assert third.rows[0].contract_hash != first.rows[0].contract_hash
    assert_nothing_running(tmp_path)


def test_submit_returns_at_once_and_the_results_arrive(workspace: Workspace, tmp_path: Path) -> None:
    start = time.perf_counter()
    handles = [
        fsm_runner.submit(workspace.arith, llm, log_dir=tmp_path / "logs") for llm in ("exact", "sloppy", "exact")
    ]
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"3 submits took {elapsed:.3f} s"
    assert all(isinstance(h, fsm_runner.RunHandle) for h in handles)
    assert not all(h.done() for h in handles)
    rows = [h.result(timeout=120) for h in handles]
    assert [r.score for r in rows] == [1.0, 0.75, 1.0], [r.error for r in rows]
    assert all(h.done() for h in handles) and len({r.run_id for r in rows}) == 3
    assert_nothing_running(tmp_path)


def test_cancel_tears_a_running_run_down(workspace: Workspace, tmp_path: Path) -> None:
    # the server takes 3 s to get ready: the run is certainly deployed and waiting when it is cancelled
    handle = fsm_runner.submit(
        workspace.arith, "exact", env_overrides={"ARITH_BENCH_READY_DELAY": "3"}, log_dir=tmp_path / "logs"
    )
    deadline = time.monotonic() + 60
    while not list((workspace.arith / ".aider_fsm" / "artifacts").glob("*/deploy_setup")):
        assert time.monotonic() < deadline and not handle.done(), "the run never reached deploy"
        time.sleep(0.05)
    time.sleep(0.5)
    row = handle.cancel()
    assert not row.ok and row.error and row.error.startswith("cancelled: interrupted (received SIGTERM)")
    assert row.run_dir and Path(row.run_dir).is_dir() and row.run_id and row.contract_hash, row
    assert handle.done() and handle.result(timeout=0) == row
    assert_nothing_running(tmp_path)
    other = fsm_runner.submit(workspace.arith, "exact", log_dir=tmp_path / "logs2")
    with pytest.raises(TimeoutError):
        other.result(timeout=0.01)
    other.cancel()
    assert_nothing_running(tmp_path)


def test_a_sweep_in_the_background(workspace: Workspace, tmp_path: Path) -> None:
    handle = fsm_runner.sweep([workspace.arith], ["exact", "sloppy"], concurrency=2, out_dir=tmp_path / "o", wait=False)
    assert isinstance(handle, fsm_runner.SweepHandle)
    assert not handle.done() and handle.rows_so_far() == []
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.01)
    result = handle.result(timeout=120)
    assert handle.done() and [r.score for r in result.rows] == [1.0, 0.75]
    assert handle.rows_so_far() == list(result.rows)
    assert_nothing_running(tmp_path)


def test_cancelling_a_background_sweep_leaves_nothing_running(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "o"
    handle = fsm_runner.sweep(
        [workspace.arith],
        ["exact", "sloppy", "blank"],
        concurrency=2,
        out_dir=out,
        env_overrides={"ARITH_BENCH_READY_DELAY": "3"},
        wait=False,
    )
    assert isinstance(handle, fsm_runner.SweepHandle)
    deadline = time.monotonic() + 60
    while len(list((workspace.arith / ".aider_fsm" / "artifacts").glob("*/deploy_setup"))) < 2:
        assert time.monotonic() < deadline and not handle.done()
        time.sleep(0.05)
    result = handle.cancel(timeout=120)
    assert result.interrupted and len(result.rows) == 2  # the third cell never started
    assert all(not r.ok and r.error and r.error.startswith("interrupted (cancelled)") for r in result.rows)
    for r in result.rows:  # the run exists: the row says where, and the cell's log ends without a traceback
        assert r.run_id and r.run_dir and Path(r.run_dir).is_dir() and r.contract_hash, r
        assert r.error and r.error.endswith(f"tore down what it deployed; see {r.run_dir}"), r.error
    logs = list((out / "cells").glob("*.log"))
    assert len(logs) == 2 and not any("Traceback" in log.read_text() for log in logs)
    assert len(read_rows(out)) == 2
    assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted"
    assert_nothing_running(tmp_path)
    again = fsm_runner.sweep([workspace.arith], ["exact"], out_dir=out, resume=True)
    assert again.skipped == 0 and [(r.llm, r.ok) for r in again.rows] == [("exact", True)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resume": True}, "resume=True needs out_dir="),
        ({"executor": "slurm"}, "unknown executor 'slurm'"),
        ({"concurrency": 0}, "concurrency must be a whole number from 1 to 1024, got 0"),
        ({"concurrency": 5000}, "concurrency must be a whole number from 1 to 1024, got 5000"),
        ({"concurrency": "2"}, "concurrency must be a whole number from 1 to 1024, got '2'"),
        ({"mode": "fast"}, "mode must be one of smoke, full, got 'fast'"),
        ({"llms": [""]}, r"llms\[0\]: empty llm"),
        ({"targets": ["nope"]}, r"targets\[0\]: 'nope': no such directory"),
        ({"targets": ["ftp://x/y"]}, r"targets\[0\]: 'ftp://x/y': unsupported URL scheme 'ftp'"),
        ({"out_dir": "file"}, "out_dir: .* is a file, not a directory"),
        ({"repair_agent": print}, "repair_agent of a sweep is a command line"),
    ],
)
def test_arguments_that_cannot_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    targets, llms = kwargs.pop("targets", [str(tmp_path)]), kwargs.pop("llms", ["exact"])
    with pytest.raises(UsageError, match=message):
        fsm_runner.sweep(targets, llms, **kwargs)  # type: ignore[call-overload]
    if not {"concurrency", "out_dir", "resume", "executor"} & set(kwargs):  # submit() checks the same way
        options = {k: v for k, v in kwargs.items() if k in ("mode", "repair_agent")}
        with pytest.raises(UsageError, match=message.replace("a sweep", "a submitted run")):
            fsm_runner.submit(targets[0], llms[0], **options)  # type: ignore[arg-type]
