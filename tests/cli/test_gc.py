"""``fsm-runner gc``: finished runs go, live ones never, failed ones only when asked; ages and --keep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm_runner.prune import parse_duration

DAY = 86400.0
PIPELINE = 'version: 1\ntests:\n  cmds: "test ! -e fail"\n'
#: Holds a run's lock like a live runner: prints "held" once it has it, lets go when its stdin closes.
HOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fsm_runner.evidence.lock import hold_lock
    handle = hold_lock(Path(sys.argv[1]))
    print("held", flush=True)
    sys.stdin.read()
    """
)


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsm_runner", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def new_run(repo: Path, *, fail: bool = False) -> Path:
    """One real run of ``repo``'s tests phase (failing when ``fail``); returns its run dir."""
    before = set(runs_of(repo))
    (repo / "fail").touch() if fail else (repo / "fail").unlink(missing_ok=True)
    done = cli("run", repo, "--until", "tests")
    assert done.returncode == (1 if fail else 0), done.stderr
    (new,) = set(runs_of(repo)) - before
    return new


def runs_of(repo: Path) -> list[Path]:
    root = repo / ".aider_fsm" / "artifacts"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def age(run_dir: Path, seconds: float) -> None:
    """Make the run look as if it ended ``seconds`` ago."""
    when = time.time() - seconds
    os.utime(run_dir / "run.json", (when, when))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "pipeline.yml").write_text(PIPELINE)
    return root


@pytest.fixture
def held(repo: Path) -> Iterator[Path]:
    """A finished run whose lock a live process holds: to gc it is a live run."""
    run_dir = new_run(repo)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield run_dir
    if proc.stdin is not None:
        proc.stdin.close()
    proc.wait(timeout=10)


def test_gc_removes_finished_runs_failed_ones_only_when_asked_and_never_a_live_one(
    repo: Path, held: Path
) -> None:
    ok = [new_run(repo), new_run(repo)]
    failed = new_run(repo, fail=True)
    everything = {*ok, failed, held}
    assert set(runs_of(repo)) == everything

    dry = cli("gc", repo, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert {Path(r["run_dir"]) for r in planned["runs"] if r["remove"]} == set(ok)
    assert planned["dry_run"] and planned["removed"] == 2 and planned["bytes_freed"] > 0
    assert set(runs_of(repo)) == everything  # a dry run removes nothing

    done = cli("gc", repo)
    assert done.returncode == 0, done.stderr
    assert set(runs_of(repo)) == {failed, held}
    lines = done.stdout.splitlines()
    assert sorted(line.split()[1] for line in lines[:-1]) == sorted(p.name for p in ok)
    assert lines[-1].startswith("removed 2 of 4 runs") and "freed" in lines[-1]
    assert "1 live" in lines[-1] and "--include-failed" in lines[-1]

    done = cli("gc", repo, "--include-failed")
    assert done.returncode == 0, done.stderr
    assert runs_of(repo) == [held]  # the live run stays, whatever is asked


@pytest.mark.parametrize(
    ("ages_days", "options", "left"),
    [
        ([10, 3, 0.01], ["--older-than", "2d"], [2]),
        ([10, 3, 0.01], ["--keep", "2"], [1, 2]),
        ([10, 3, 0.01], ["--keep", "1", "--older-than", "5d"], [1, 2]),
        ([10, 3, 0.01], ["--older-than", "10m"], []),
    ],
    ids=["older-than-2d", "keep-2", "keep-1-older-than-5d", "older-than-10m"],
)
def test_keep_and_older_than_choose_which_runs_go(
    repo: Path, ages_days: list[float], options: list[str], left: list[int]
) -> None:
    runs = [new_run(repo) for _ in ages_days]  # oldest first
    for run_dir, days in zip(runs, ages_days, strict=True):
        age(run_dir, days * DAY)
    done = cli("gc", repo, *options)
    assert done.returncode == 0, done.stderr
    assert sorted(runs_of(repo)) == sorted(runs[i] for i in left)  # same-second run ids sort at random


@pytest.mark.parametrize("text", ["7x", "0d", "-1d", "d", "1.5", "7 days", ""])
def test_a_bad_duration_is_a_usage_error(repo: Path, text: str) -> None:
    done = cli("gc", repo, f"--older-than={text}")
    assert done.returncode == 2
    assert "is not a duration" in done.stderr and "30m, 12h, 7d" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("12h", 43200), ("7d", 7 * DAY), ("1.5h", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_run_dir_that_is_a_link_is_kept_and_its_target_gets_no_lock(repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    run_dir = new_run(repo)
    run_dir.rename(elsewhere)
    (elsewhere / ".lock").unlink(missing_ok=True)
    (run_dir.parent / "20200101T000000Z-cccccc").symlink_to(elsewhere)
    age(elsewhere, 2 * DAY)
    done = cli("gc", repo)
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "run.json").is_file() and not (elsewhere / ".lock").exists()
    assert "kept 1: 1 a symbolic link" in done.stdout, done.stdout


def test_a_run_that_could_not_be_removed_is_counted_with_a_reason(repo: Path) -> None:
    run_dir = new_run(repo)
    (run_dir / ".lock").unlink(missing_ok=True)
    (run_dir / ".lock").mkdir()  # its lock cannot be taken, so it is not removed
    done = cli("gc", repo)
    assert done.returncode == 0, done.stderr
    assert run_dir.is_dir()
    summary = done.stdout.splitlines()[-2]
    assert summary.endswith("kept 1: 1 could not be removed"), done.stdout


def test_gc_of_a_url_never_cloned_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "gc", "https://example.invalid/none.git"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FSM_RUNNER_CACHE_DIR": str(tmp_path / "clones")},
    )
    assert done.returncode == 0, done.stderr
    assert "was never cloned into" in done.stdout and "0 of 0" not in done.stdout, done.stdout
    assert "--clones-dir" in done.stdout
