"""Finding runs and reading them back through the store, on run directories written by hand."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.layout import EVENTS, JOURNAL, LOCK, RUN_JSON
from fsm_runner.evidence.lock import hold_lock, release_lock
from fsm_runner.evidence.records import ErrorInfo, RunState
from fsm_runner.evidence.store import (
    RunInfo,
    list_runs,
    read_records,
    read_run,
    resolve_run,
    run_info,
    whole_journal,
)
from tests.evidence.conftest import LockHolders

NEWEST = "20260101T000000Z-000000"
SAME_SECOND_EARLIER = "20260101T000000Z-ffffff"
OLDEST = "20251231T235959Z-abcdef"


def record(seq: int, duration_s: float = 0.5, **extra: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": f"2026-01-01T00:00:{seq:02d}Z",
        "trigger": "phase_done",
        "source": f"phase{seq}",
        "dest": f"phase{seq + 1}",
        "outcome": {"phase": f"phase{seq}", "status": "ok", "duration_s": duration_s},
        **extra,
    }


def make_run(
    root: Path,
    run_id: str,
    *,
    status: str = "ok",
    started: float | None = None,
    durations: tuple[float, ...] = (0.5, 1.25),
    **run: Any,
) -> Path:
    """A run directory as the runner leaves it: run.json, a journal and (optionally) the first event."""
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    target = {"spec": ".", "repo_root": str(root.resolve()), "kind": "local"}
    (run_dir / RUN_JSON).write_text(json.dumps({"run_id": run_id, "target": target, "status": status, **run}))
    lines = [json.dumps(record(i + 1, d)) + "\n" for i, d in enumerate(durations)]
    (run_dir / JOURNAL).write_text("".join(lines))
    if started is not None:
        (run_dir / EVENTS).write_text(json.dumps({"event": "phase.start", "ts": f"{started:.6f}"}) + "\n")
    return run_dir


@pytest.fixture
def root(tmp_path: Path) -> Path:
    runs = tmp_path / "artifacts"
    make_run(runs, SAME_SECOND_EARLIER, started=100.0)
    make_run(runs, NEWEST, started=100.5)  # the same second as the one above, started later
    make_run(runs, OLDEST, started=99.0)
    (runs / "scaffold-20260101T000000Z-aaaaaa").mkdir()  # not a run: neither run.json nor a journal
    (runs / "notes.txt").write_text("a file among the runs")
    return runs


# -- list_runs -------------------------------------------------------------------------------------------


def test_runs_are_listed_newest_first_even_within_one_second(root: Path) -> None:
    assert [p.name for p in list_runs(root)] == [NEWEST, SAME_SECOND_EARLIER, OLDEST]


def test_within_one_second_without_events_the_name_decides(tmp_path: Path) -> None:
    for run_id in ("20260101T000000Z-bbbbbb", "20260101T000000Z-cccccc", "20260101T000000Z-aaaaaa"):
        make_run(tmp_path, run_id)
    assert [p.name[-6:] for p in list_runs(tmp_path)] == ["cccccc", "bbbbbb", "aaaaaa"]


def test_an_unreadable_events_file_does_not_hide_a_run(tmp_path: Path) -> None:
    make_run(tmp_path, "20260101T000000Z-aaaaaa", started=200.0)
    broken = make_run(tmp_path, "20260101T000000Z-bbbbbb")
    (broken / EVENTS).write_text("{torn")
    assert [p.name[-6:] for p in list_runs(tmp_path)] == ["aaaaaa", "bbbbbb"]


@pytest.mark.parametrize("keep", [RUN_JSON, JOURNAL])
def test_either_run_file_makes_a_directory_a_run(tmp_path: Path, keep: str) -> None:
    run_dir = make_run(tmp_path, "r1")
    for name in {RUN_JSON, JOURNAL} - {keep}:
        (run_dir / name).unlink()
    assert list_runs(tmp_path) == [run_dir]


@pytest.mark.parametrize("make", ["missing", "file", "empty"])
def test_no_runs_where_there_is_no_run_directory(tmp_path: Path, make: str) -> None:
    root = tmp_path / "artifacts"
    if make == "file":
        root.write_text("")
    elif make == "empty":
        root.mkdir()
    assert list_runs(root) == []


# -- resolve_run -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("latest", NEWEST),
        (OLDEST, OLDEST),  # a whole run id
        ("20251231", OLDEST),  # a unique prefix
        ("20260101T000000Z-ff", SAME_SECOND_EARLIER),
    ],
)
def test_resolve_run_by_id_prefix_or_latest(root: Path, spec: str, expected: str) -> None:
    assert resolve_run(spec, root) == root / expected


def test_resolve_run_by_path_ignores_the_root(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = root / OLDEST
    assert resolve_run(str(path), tmp_path / "elsewhere") == path.resolve()
    monkeypatch.chdir(root)
    assert resolve_run(f"./{OLDEST}", tmp_path / "elsewhere") == path.resolve()


def test_an_exact_name_under_the_root_is_taken_and_read_run_says_it_is_no_run(root: Path) -> None:
    name = "scaffold-20260101T000000Z-aaaaaa"
    assert resolve_run(name, root) == root / name
    with pytest.raises(EvidenceError, match="this is not a run directory"):
        read_run(resolve_run(name, root))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "20260101T000000Z",
            rf"run '20260101T000000Z' is ambiguous under .*: {NEWEST}, {SAME_SECOND_EARLIER}",
        ),
        ("2026", "is ambiguous"),
        ("nope", r"no run 'nope' under .*list runs with `fsm-runner runs`"),
    ],
)
def test_resolve_run_errors_say_what_to_do(root: Path, spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_run(spec, root)


@pytest.mark.parametrize("make_root", [False, True])
def test_latest_without_runs_says_how_to_start_one(tmp_path: Path, make_root: bool) -> None:
    root = tmp_path / "artifacts"
    if make_root:
        root.mkdir()
    with pytest.raises(
        UsageError, match=r"no runs under .*artifacts; start one with `fsm-runner run \./repo`"
    ):
        resolve_run("latest", root, start_hint="./repo")


# -- read_run --------------------------------------------------------------------------------------------


def test_read_run_gives_a_typed_run_state(tmp_path: Path) -> None:
    error = {"kind": "command", "message": "exit 2", "phase": "tests"}
    run_dir = make_run(tmp_path, "r1", status="failed", failed_phase="tests", last_error=error, round=2)
    run = read_run(run_dir)
    assert isinstance(run, RunState)
    assert (run.run_id, run.status, run.round, run.target.repo_root) == (
        "r1",
        "failed",
        2,
        tmp_path.resolve(),
    )
    assert run.last_error == ErrorInfo("command", "exit 2", "tests")


def test_a_run_killed_before_its_run_json_says_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    (run_dir / JOURNAL).write_text("")
    with pytest.raises(EvidenceError, match=r"run\.json is missing \(the runner stopped before writing it\)"):
        read_run(run_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"{run_dir}: no run\.json; this is not a run directory"),
        (b"{torn", r"{path}: not valid JSON"),
        (b"\xff\xfe{}", r"{path}: cannot read"),
        (b"[]", r"{path}: expected an object, got \[\]"),
        (b"{}", r"{path}: missing key 'run_id'"),
        (b'{"target": "x"}', r"{path}: missing key 'run_id'"),
        (b'{"run_id": "r1", "target": "x"}', r"{path}: target: expected an object, got 'x'"),
        (b'{"run_id": "r1"}', r"{path}: missing key 'target'"),
        (b"[" * 100_000 + b"]" * 100_000, r"{path}: nested too deeply to be a run.json"),
    ],
)
def test_read_run_errors_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    if content is not None:
        (run_dir / RUN_JSON).write_bytes(content)
    pattern = message.format(run_dir=run_dir, path=run_dir / RUN_JSON)
    with pytest.raises(EvidenceError, match=pattern):
        read_run(run_dir)


# -- run_info --------------------------------------------------------------------------------------------


def test_run_info_reads_status_failed_phase_score_and_duration(tmp_path: Path) -> None:
    run_dir = make_run(
        tmp_path,
        "r1",
        status="interrupted",
        last_error={"kind": "interrupted", "message": "SIGTERM", "phase": "rollout"},
        outputs={"evaluate": {"metrics": {"score": 0.25}}},
        llm="toy",
        mode="full",
        redrive_count=2,
    )
    info = run_info(run_dir)
    assert info == RunInfo(
        run_id="r1",
        run_dir=run_dir,
        status="interrupted",
        failed_phase="rollout",
        score=0.25,
        duration_s=1.75,  # 0.5 + 1.25, exact in binary
        llm="toy",
        mode="full",
        redrive_count=2,
        problem=None,
    )
    assert info.to_json()["duration_s"] == 1.75
    assert info.to_json()["run_dir"] == str(run_dir)


@pytest.mark.parametrize(
    ("status", "failed_phase", "shown"),
    [("failed", "tests", "tests"), ("ok", "tests", None), ("closed", None, None)],
)
def test_the_failed_phase_is_shown_for_failed_runs_only(
    tmp_path: Path, status: str, failed_phase: str | None, shown: str | None
) -> None:
    run_dir = make_run(tmp_path, "r1", status=status, failed_phase=failed_phase)
    assert run_info(run_dir).failed_phase == shown


@pytest.mark.parametrize("metrics", [None, "not metrics", {"accuracy": 1.0}])
def test_no_score_without_evaluate_metrics(tmp_path: Path, metrics: Any) -> None:
    outputs = {} if metrics is None else {"evaluate": {"metrics": metrics}}
    assert run_info(make_run(tmp_path, "r1", outputs=outputs)).score is None


@pytest.mark.parametrize(
    ("run_json", "message"),
    [
        (b"{torn", "not valid JSON"),
        (b"[]", "expected an object"),
        (b'{"run_id": "r1", "status": "ok"}', "missing key 'target'"),
    ],
)
def test_a_damaged_run_json_makes_the_run_unreadable(tmp_path: Path, run_json: bytes, message: str) -> None:
    run_dir = make_run(tmp_path, "r1")
    (run_dir / RUN_JSON).write_bytes(run_json)
    info = run_info(run_dir)
    assert (info.run_id, info.status, info.score, info.duration_s) == ("r1", "unreadable", None, 0.0)
    assert info.problem is not None
    assert info.problem.startswith(f"{run_dir / RUN_JSON}: ") and message in info.problem
    assert info.to_json()["problem"] == info.problem


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{}", "missing key 'seq'"),
        (b'{"seq": 1}', "missing key 'ts'"),
        (b'{"seq": "x"}', "seq: expected a whole number, got 'x'"),
        (b"not json", "unreadable journal record (not JSON)"),
    ],
)
def test_a_damaged_journal_makes_the_run_unreadable(tmp_path: Path, line: bytes, message: str) -> None:
    run_dir = make_run(tmp_path, "r1", durations=(0.5,))
    journal = run_dir / JOURNAL
    journal.write_bytes(journal.read_bytes() + line + b"\n" + json.dumps(record(3)).encode() + b"\n")
    info = run_info(run_dir)
    assert info.status == "unreadable"
    assert info.problem == f"{journal}:2: {message}"
    assert info.duration_s == pytest.approx(0.5)  # the records before the damage still count


def test_a_torn_last_journal_line_is_not_damage(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "r1", durations=(0.5, 1.0))
    with (run_dir / JOURNAL).open("ab") as handle:
        handle.write(b'{"seq": 3, "ts": "2026-')
    info = run_info(run_dir)
    assert (info.status, info.problem) == ("ok", None)
    assert info.duration_s == pytest.approx(1.5)


# -- stale runs ------------------------------------------------------------------------------------------


def test_a_running_run_without_a_lock_file_is_stale(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "r1", status="running", failed_phase="health")
    info = run_info(run_dir)
    assert (info.status, info.failed_phase) == ("stale", "health")


def test_a_running_run_is_running_while_its_lock_is_held(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "r1", status="running")
    handle = hold_lock(run_dir)
    try:
        assert run_info(run_dir).status == "running"
    finally:
        release_lock(handle)
    assert (run_dir / LOCK).read_text() == str(os.getpid())  # a live pid in the file proves nothing
    assert run_info(run_dir).status == "stale"


def test_a_running_run_is_stale_once_its_process_was_killed(tmp_path: Path, holders: LockHolders) -> None:
    run_dir = make_run(tmp_path, "r1", status="running")
    proc = holders.start(run_dir)
    assert run_info(run_dir).status == "running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert run_info(run_dir).status == "stale"


@pytest.mark.parametrize("status", ["ok", "failed", "closed", "interrupted"])
def test_only_a_running_run_can_be_stale(tmp_path: Path, status: str) -> None:
    assert run_info(make_run(tmp_path, "r1", status=status)).status == status


# -- the journal -----------------------------------------------------------------------------------------


def test_whole_journal_returns_every_record(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "r1", durations=(0.5, 1.0, 2.0))
    records = whole_journal(run_dir)
    assert [(r.seq, r.source) for r in records] == [(1, "phase1"), (2, "phase2"), (3, "phase3")]
    assert records[2].outcome is not None and records[2].outcome.duration_s == 2.0


def test_whole_journal_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "r1", durations=(0.5, 1.0))
    with (run_dir / JOURNAL).open("ab") as handle:
        handle.write(b'{"seq": 3, "tri')
    assert [r.seq for r in whole_journal(run_dir)] == [1, 2]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (b"{}", "2: missing key 'seq'"),
        (b'{"seq": 1}', "2: missing key 'ts'"),
        (b'{"seq": "x"}', "2: seq: expected a whole number, got 'x'"),
        (b"{torn", "2: unreadable journal record"),
    ],
)
def test_whole_journal_raises_on_damage(tmp_path: Path, damage: bytes, message: str) -> None:
    run_dir = make_run(tmp_path, "r1", durations=(0.5,))
    journal = run_dir / JOURNAL
    journal.write_bytes(journal.read_bytes() + damage + b"\n" + json.dumps(record(3)).encode() + b"\n")
    with pytest.raises(EvidenceError) as info:
        whole_journal(run_dir)
    assert str(info.value).startswith(f"{journal}:{message}")


def test_whole_journal_raises_when_the_journal_is_missing(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "r1")
    (run_dir / JOURNAL).unlink()
    with pytest.raises(EvidenceError, match=f"{run_dir / JOURNAL} does not exist"):
        whole_journal(run_dir)


def test_read_records_reports_problems_instead_of_raising(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "r1", durations=(0.5,))
    assert (len(read_records(run_dir).records), read_records(run_dir).problem) == (1, None)
    (run_dir / JOURNAL).unlink()
    read = read_records(run_dir)
    assert (read.records, read.torn, read.problem) == ((), False, f"{run_dir / JOURNAL} does not exist")
