"""``fsm-runner sweep`` as a user runs it: a real process, real cells, real signals; ``schema sweep``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsm_runner.cli import main
from fsm_runner.cli.commands.sweep import table_lines
from fsm_runner.sweeps.cells import CellResult
from fsm_runner.sweeps.store import latest_rows, read_rows
from fsm_runner.sweeps.sweep import SweepResult
from tests.conftest import procs_under
from tests.sweeps.conftest import Workspace, make_workspace


def sweep_env(ws: Workspace, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIDER_", "OPENAI_", "ARITH_BENCH_"))}
    env.update(TMPDIR=str(ws.tmp), FSM_RUNNER_CACHE_DIR=str(tmp_path / "clones"), PYTHONDONTWRITEBYTECODE="1")
    return env


def start_sweep(path: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", "sweep", str(path), *extra],
        cwd=path.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write_sweep(ws: Workspace, text: str) -> Path:
    path = ws.root / "sweep.yml"
    path.write_text(text)
    return path


@pytest.mark.e2e
def test_the_table_and_the_exit_code(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    path = write_sweep(
        ws, "version: 1\ntargets: [arith_bench, broken_target]\nllms: [sloppy]\nconcurrency: 2\nout_dir: out\n"
    )
    proc = start_sweep(path, sweep_env(ws, tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # a cell failed
    assert not procs_under(tmp_path)
    table = out.splitlines()
    assert table[0].split()[:4] == ["target", "llm", "status", "score"]
    assert table[1].split()[:4] == ["arith_bench", "sloppy", "ok", "0.750"]
    assert table[2].split()[:4] == ["broken_target", "sloppy", "FAILED", "-"] and "evaluate:" in table[2]
    assert "2 cells: 1 ok, 1 failed" in out and str(ws.root / "out" / "results.jsonl") in out
    assert "[2/2]" in err and "1 failed" in err  # progress on stderr
    proc = start_sweep(path, sweep_env(ws, tmp_path), "--resume", "--json")
    out, err = proc.communicate(timeout=120)
    doc = json.loads(out)
    assert proc.returncode == 1 and doc["skipped"] == 1 and doc["total"] == 2 and doc["failed"] == 1
    assert [r["llm"] for r in doc["rows"]] == ["sloppy", "sloppy"]


@pytest.mark.e2e
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_in_the_middle_then_resume(tmp_path: Path, signum: int, code: int) -> None:
    ws = make_workspace(tmp_path / "ws")
    path = write_sweep(
        ws,
        "version: 1\n"
        "targets: [arith_bench]\n"
        "llms: [exact, sloppy, ckpts/step-100]\n"
        "concurrency: 2\n"
        "out_dir: out\n"
        "env: {ARITH_BENCH_READY_DELAY: '2'}\n",
    )
    out = ws.root / "out"
    env = sweep_env(ws, tmp_path)
    proc = start_sweep(path, env)
    deadline = time.monotonic() + 90
    # the first cell has finished and the third has started: one row written, two cells running
    while not (read_rows(out) and any((out / "cells").glob("002-*.log"))):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sweep did not get going"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == code, err
    for line in err.splitlines():  # the counts of every progress line add up
        counts = re.search(r"\((\d+)/(\d+) done, \d+ failed, (\d+) running", line)
        if counts:
            done, total, running = map(int, counts.groups())
            assert done + running <= total, line
    assert not procs_under(tmp_path), "a process of a cell survived the interrupt"
    rows = read_rows(out)  # every line is a whole row
    assert len(rows) == len((out / "results.jsonl").read_text().splitlines())
    interrupted = [r for r in rows if not r.ok]
    assert interrupted and all(r.error and r.error.startswith("interrupted") for r in interrupted)
    assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted"
    succeeded = {r.key for r in rows if r.ok}
    assert 1 <= len(succeeded) < 3

    proc = start_sweep(path, env, "--resume", "--json")
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = json.loads(stdout)
    assert doc["skipped"] == len(succeeded) and doc["failed"] == 0 and doc["total"] == 3
    final = read_rows(out)
    new = final[len(rows) :]
    cells = {(str(ws.arith), llm) for llm in ws.llms}
    assert {r.key for r in new} == cells - succeeded, "resume runs exactly the cells without a success row"
    per_cell: dict[tuple[str, str], int] = {}
    for row in final:
        per_cell[row.key] = per_cell.get(row.key, 0) + row.ok
    assert sorted(per_cell.values()) == [1, 1, 1], per_cell  # exactly one success row per cell
    assert {r.llm: r.score for r in latest_rows(final).values()} == {
        "exact": 1.0,
        "sloppy": 0.75,
        str(ws.checkpoint): 1.0,
    }
    assert not procs_under(tmp_path)


def test_a_bad_sweep_file_is_a_usage_error_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sweep.yml"
    (tmp_path / "a").mkdir()
    path.write_text("version: 1\ntargets: [a]\nllms: [x]\nconcurency: 2\n")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}:4: concurency: unknown key, did you mean concurrency?" in err
    assert main(["sweep", str(tmp_path / "missing.yml")]) == 2
    assert "file not found" in capsys.readouterr().err
    path.write_text("version: 1\ntargets: [a]\nllms: [x]\n")
    assert main(["sweep", str(path), "--address", "ray://head:10001"]) == 2
    assert "--address joins a Ray cluster" in capsys.readouterr().err
    for value in ("0", "abc", "5000"):  # the file's limit, and one message for every bad value
        assert main(["sweep", str(path), "--concurrency", value]) == 2
        assert f"--concurrency: '{value}' is not a whole number from 1 to 1024" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    path.write_text("version: 1\ntargets: [a, ../nope, 'ftp://x/y']\nllms: [x]\nout_dir: file/sub\n")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}:2: targets[1]: '../nope': no such directory" in err
    assert f"{path}:2: targets[2]: 'ftp://x/y': unsupported URL scheme 'ftp'" in err
    assert f"{path}:4: out_dir: {tmp_path / 'file'} is a file, not a directory" in err


def test_schema_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "sweep"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "fsm-runner sweep file v1" and "llms" in schema["required"]
    assert main(["schema", "--file", "sweep"]) == 0
    assert json.loads(capsys.readouterr().out) == schema
    assert main(["schema", "bootstrap", "--file", "sweep"]) == 2


def test_the_table_keeps_the_cause_on_one_line_and_the_run_dir_whole(tmp_path: Path) -> None:
    run_dir = str(tmp_path / ("deep" * 20) / "examples" / "broken_target" / ".aider_fsm" / "artifacts" / "run-1")
    error = (
        f"evaluate: command 1/1 `python3 evaluate.py` exit code 1; see {run_dir}/evaluate/cmd01_try01.stderr\n"
        "Traceback (most recent call last):\n  File \"evaluate.py\", line 3\nKeyError: 'answer'"
    )
    rows = (CellResult(target="/t/broken", llm="exact", ok=False, run_dir=run_dir, error=error),)
    lines = table_lines(SweepResult(rows=rows, out_dir=str(tmp_path)))
    assert lines[1].endswith(f"see {run_dir}/evaluate/cmd01_try01.stderr ... KeyError: 'answer'"), lines[1]
    assert "\n" not in lines[1]
    assert lines[-1].startswith("1 cell: 0 ok, 1 failed")
    short = (CellResult(target="/t/broken", llm="exact", ok=False, run_dir=run_dir, error="setup: boom"),)
    lines = table_lines(SweepResult(rows=short, out_dir=str(tmp_path)))
    assert lines[1].endswith("setup: boom") and lines[2].strip() == f"run: {run_dir}", lines


@pytest.mark.e2e
def test_a_sweep_killed_outright_leaves_nothing_running_and_resumes(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, a scheduler) gives the sweep no chance to stop its cells: they are stopped
    for it, and ``--resume`` runs every cell that has no success row."""
    ws = make_workspace(tmp_path / "ws")
    path = write_sweep(
        ws,
        "version: 1\ntargets: [arith_bench]\nllms: [exact, sloppy]\nconcurrency: 2\nout_dir: out\n"
        "env: {ARITH_BENCH_READY_DELAY: '30'}\n",
    )
    out = ws.root / "out"
    env = sweep_env(ws, tmp_path)
    proc = start_sweep(path, env)
    deadline = time.monotonic() + 90
    while len(list((out / "cells").glob("*.log"))) < 2 or len(procs_under(ws.tmp)) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sweep's cells did not get going"
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 60
    while procs_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not procs_under(tmp_path), "the cells of a killed sweep ran on"
    assert not read_rows(out)  # the sweep died before it could record a row

    env.pop("ARITH_BENCH_READY_DELAY", None)
    path.write_text(path.read_text().replace("'30'", "'0'"))
    proc = start_sweep(path, env, "--resume", "--json")
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = json.loads(stdout)
    assert doc["skipped"] == 0 and doc["total"] == 2 and doc["failed"] == 0


@pytest.mark.parametrize("name", ["two\nlines", "esc\x1b[2Jape", "ret\rurn"])
def test_a_name_with_a_newline_keeps_the_sweep_table_one_line_per_cell(tmp_path: Path, name: str) -> None:
    rows = (
        CellResult(target="/t/bench", llm=name, ok=True, score=0.5, run_dir="/runs/1"),
        CellResult(target=name, llm="exact", ok=False, error="boom", run_dir="/runs/2"),
    )
    lines = table_lines(SweepResult(rows=rows, out_dir=str(tmp_path)))
    assert all(ch.isprintable() for line in lines for ch in line), lines
    header, first, second, third = lines[:4]
    assert third.strip() == "run: /runs/2" and third.index("run:") == header.index("error / run")
    assert first.index("ok") == second.index("FAILED") == header.index("status")
