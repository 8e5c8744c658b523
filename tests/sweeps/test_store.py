"""The output directory and resume's choice of cells, on real files and real git repos (no runs)."""

from __future__ import annotations

import hashlib
import os
import pty
import subprocess
import time
from pathlib import Path

import pytest

from fsm_runner.errors import UsageError
from fsm_runner.evidence.atomic import append_jsonl
from fsm_runner.sweeps.cells import CellResult
from fsm_runner.sweeps.progress import Progress
from fsm_runner.sweeps.store import RESULTS, append_row, holding, latest_rows, read_rows
from fsm_runner.sweeps.sweep import _resumable, plan_sweep, sweep
from fsm_runner.targets import current_contract

PIPELINE = "version: 1\n"


def git(*args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": str(cwd)}  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repo(path: Path) -> str:
    path.mkdir(parents=True)
    (path / "pipeline.yml").write_text(PIPELINE)
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "one", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


def row(target: str, llm: str, ok: bool, commit: str | None, contract: str | None, mode: str = "smoke") -> CellResult:
    return CellResult(target=target, llm=llm, ok=ok, commit=commit, contract_hash=contract, mode=mode)


def test_rows_round_trip_and_the_latest_row_of_a_cell_wins(tmp_path: Path) -> None:
    append_row(tmp_path, row("t", "a", False, None, None))
    append_row(tmp_path, row("t", "b", True, None, None))
    append_jsonl(tmp_path / RESULTS, {"not": "a row"})  # skipped, not fatal
    append_row(tmp_path, row("t", "a", True, None, None))
    rows = read_rows(tmp_path)
    assert [(r.llm, r.ok) for r in rows] == [("a", False), ("b", True), ("a", True)]
    assert {k: r.ok for k, r in latest_rows(rows).items()} == {("t", "a"): True, ("t", "b"): True}
    assert read_rows(tmp_path / "nowhere") == []


def test_one_sweep_at_a_time_per_directory(tmp_path: Path) -> None:
    with holding(tmp_path / "out"):
        assert (tmp_path / "out" / "cells").is_dir()
        with pytest.raises(UsageError, match=r"another sweep \(pid \d+\) is writing to"), holding(tmp_path / "out"):
            pass
    with holding(tmp_path / "out"):  # free again
        pass


def test_the_current_commit_and_contract_of_a_local_tree_and_of_a_git_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FSM_RUNNER_CACHE_DIR", str(tmp_path / "clones"))
    sha = make_repo(tmp_path / "repo")
    digest = hashlib.sha256(PIPELINE.encode()).hexdigest()
    assert current_contract(tmp_path / "repo") == (sha, digest)
    assert current_contract(f"file://{tmp_path / 'repo'}") == (sha, digest)
    plain = tmp_path / "plain"
    plain.mkdir()
    assert current_contract(plain) == (None, None)  # no git, no pipeline
    (tmp_path / "repo" / "pipeline.yml").write_text(PIPELINE + "# changed\n")
    git("commit", "-qam", "two", cwd=tmp_path / "repo")
    two = git("rev-parse", "HEAD", cwd=tmp_path / "repo")
    changed = hashlib.sha256((PIPELINE + "# changed\n").encode()).hexdigest()
    assert current_contract(f"file://{tmp_path / 'repo'}") == (two, changed)  # fetched again
    assert current_contract(f"file://{tmp_path / 'repo'}@{sha}") == (sha, digest)


def test_resume_keeps_only_successes_that_match_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_RUNNER_CACHE_DIR", str(tmp_path / "clones"))
    sha = make_repo(tmp_path / "repo")
    digest = hashlib.sha256(PIPELINE.encode()).hexdigest()
    target = str(tmp_path / "repo")
    out = tmp_path / "out"
    plan = plan_sweep([target], ["a", "b", "c", "d", "e", "f"], out_dir=out, resume=True)
    out.mkdir()
    append_row(out, row(target, "a", True, sha, digest))  # kept
    append_row(out, row(target, "b", True, "0" * 40, digest))  # another commit
    append_row(out, row(target, "c", True, sha, "x"))  # another contract
    append_row(out, row(target, "d", True, sha, digest))
    append_row(out, row(target, "d", False, sha, digest))  # latest row failed
    append_row(out, row(target, "e", True, sha, digest, mode="full"))  # another mode
    kept = _resumable(plan)
    assert {plan.cells[i].spec.llm for i in kept} == {"a"}


def test_progress_lines_heartbeat_and_eta() -> None:
    lines: list[str] = []
    progress = Progress(3, sink=lines.append, heartbeat_s=0.2)
    assert progress.eta() is None
    progress.tick(running=2)
    assert lines == []  # no heartbeat yet
    time.sleep(0.25)
    progress.tick(running=2)
    assert lines[-1].startswith("sweep: 0/3 done, 0 failed, 2 running")
    progress.finished(CellResult(target="t", llm="a", ok=False, error="evaluate: boom\x1b[2J"))
    assert lines[-1].startswith("[1/3] FAILED  t x a") and "evaluate: boom\\x1b[2J" in lines[-1]
    assert "1 failed" in lines[-1] and "ETA" in lines[-1]
    count = len(lines)
    progress.tick(running=1)
    assert len(lines) == count  # a line was just written: no heartbeat
    progress.skipped(1)
    assert progress.total == 2 and "resume: 1 cell(s)" in lines[-1]


def test_a_live_line_on_a_terminal(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    with open(follower, "w", closefd=True) as stream:
        lines: list[str] = []
        progress = Progress(2, sink=lines.append, stream=stream)  # type: ignore[arg-type]
        progress.tick(running=2)
        progress.finished(CellResult(target="t", llm="a", ok=True, score=1.0))
        progress.close()
        stream.flush()
        shown = b""
        deadline = time.monotonic() + 5
        while b"\x1b[2K" not in shown and time.monotonic() < deadline:
            shown += os.read(leader, 4096)
    os.close(leader)
    assert b"sweep: 0/2 done, 0 failed, 2 running" in shown and b"\r\x1b[2K" in shown
    assert len(lines) == 1 and lines[0].startswith("[1/2] ok      t x a  score=1.000  0.0s  (1/2 done")


def test_a_row_cut_short_is_ended_before_the_next_row_and_resume_names_it(tmp_path: Path) -> None:
    """A crash mid-write leaves a last line with no newline: the next row must not be glued onto it."""
    append_row(tmp_path, row("t", "a", True, None, None))
    with open(tmp_path / RESULTS, "a") as fh:
        fh.write('{"target": "t", "llm": "b", "ok": tr')  # cut short
    append_row(tmp_path, row("t", "c", True, None, None))
    skipped: list[str] = []
    rows = read_rows(tmp_path, on_skip=skipped.append)
    assert [r.llm for r in rows] == ["a", "c"]
    assert len(skipped) == 1 and skipped[0].startswith(f"{tmp_path / RESULTS}:2: not a result row")
    assert (tmp_path / RESULTS).read_text().endswith("}\n")


def test_resume_warns_about_the_lines_it_skips(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / RESULTS).write_text("not a row\n")
    (tmp_path / "t").mkdir()
    lines: list[str] = []
    result = sweep([str(tmp_path / "t")], ["a"], out_dir=out, resume=True, progress=lines.append)
    assert result.total == 1  # the cell ran (and failed: the directory has no pipeline.yml)
    assert f"warning: {out / RESULTS}:1: not a result row" in "\n".join(lines)


def test_the_live_line_is_redrawn_only_when_it_changes(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    with open(follower, "w", closefd=True) as stream:
        progress = Progress(2, stream=stream)  # type: ignore[arg-type]
        for _ in range(20):  # the sweep loop ticks every 50 ms: well within one second
            progress.tick(running=2)
        progress.tick(running=1)  # a change is drawn at once
        progress.close()
        stream.flush()
        shown = b""
        deadline = time.monotonic() + 5
        while shown.count(b"\r\x1b[2K") < 2 and time.monotonic() < deadline:
            shown += os.read(leader, 4096)
    os.close(leader)
    assert shown.count(b"sweep: 0/2 done, 0 failed, 2 running") == 1, shown
    assert shown.count(b"sweep: 0/2 done, 0 failed, 1 running") == 1, shown
