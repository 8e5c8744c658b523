"""Evidence helpers: run ids, run directories, atomic JSON, JSONL appends, JSON reading."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.atomic import append_jsonl, create_run_dir, write_json_atomic
from fsm_runner.evidence.layout import new_run_id


def test_run_id_is_sortable_timestamp_with_suffix() -> None:
    ids = [new_run_id() for _ in range(200)]
    for run_id in ids:
        assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run_id), run_id
    assert len(set(ids)) == len(ids)
    # lexical order == time order: the timestamp is fixed-width and leads
    assert sorted(["20261125T153349Z-ffffff", "20261125T153350Z-000000"])[0].startswith("20261125T153349Z")


def test_create_run_dir_makes_parents_and_leaves_no_probe(tmp_path: Path) -> None:
    run_dir = create_run_dir(tmp_path / "a" / "b" / "artifacts", "20260101T000000Z-abcdef")
    assert run_dir == tmp_path / "a" / "b" / "artifacts" / "20260101T000000Z-abcdef"
    assert run_dir.is_dir()
    assert list(run_dir.iterdir()) == []
    assert create_run_dir(tmp_path / "a" / "b" / "artifacts", "20260101T000000Z-abcdef") == run_dir


@pytest.mark.parametrize("bad", ["", "a/b", "..", "."])
def test_create_run_dir_rejects_bad_run_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(EvidenceError, match="invalid run id"):
        create_run_dir(tmp_path, bad)


def test_create_run_dir_under_a_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "artifacts"
    blocker.write_text("not a directory")
    with pytest.raises(EvidenceError, match=r"cannot create the run directory .*artifacts/r1: .*writable"):
        create_run_dir(blocker, "r1")


def test_create_run_dir_reports_a_full_disk(tmp_path: Path) -> None:
    """RLIMIT_FSIZE=0 makes every write fail with EFBIG, as a full disk would: the probe must catch it."""
    script = f"""
import resource, signal
from pathlib import Path
from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.atomic import create_run_dir
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
try:
    create_run_dir(Path({str(tmp_path)!r}), "r1")
except EvidenceError as exc:
    print("EVIDENCE-ERROR", exc)
else:
    print("NO-ERROR")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert "EVIDENCE-ERROR" in out.stdout, out.stdout + out.stderr
    assert "is not writable" in out.stdout and "free disk space" in out.stdout


def test_write_json_atomic_round_trip_order_and_paths(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    data = {"z": 1, "a": [1, 2], "path": tmp_path / "x", "nested": {"b": True, "a": None}}
    write_json_atomic(target, data)
    text = target.read_text()
    assert text.endswith("\n")
    assert text.splitlines()[1] == '  "z": 1,'  # indent 2, insertion order kept
    assert json.loads(text) == {
        "z": 1,
        "a": [1, 2],
        "path": str(tmp_path / "x"),
        "nested": {"b": True, "a": None},
    }
    write_json_atomic(target, {"replaced": True})
    assert json.loads(target.read_text()) == {"replaced": True}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left behind


def test_write_json_atomic_failure_keeps_old_document(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    write_json_atomic(target, {"v": 1})
    circular: dict[str, object] = {}
    circular["self"] = circular
    with pytest.raises(EvidenceError, match="cannot serialise"):
        write_json_atomic(target, circular)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_write_json_atomic_missing_directory_is_an_evidence_error(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match=r"cannot write .*missing/run\.json"):
        write_json_atomic(tmp_path / "missing" / "run.json", {})


@pytest.mark.parametrize("fsync", [True, False])
def test_readers_never_see_a_partial_document(tmp_path: Path, fsync: bool) -> None:
    target = tmp_path / "state.json"
    big = {"items": ["x" * 200] * 2000}
    write_json_atomic(target, big, fsync=fsync)
    stop = threading.Event()
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(target.read_text())
            except json.JSONDecodeError as exc:  # only possible if a write were visible half-way
                errors.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            write_json_atomic(target, {**big, "i": i}, fsync=fsync)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert json.loads(target.read_text())["i"] == 59


def test_append_jsonl_appends_whole_lines(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    append_jsonl(journal, {"seq": 1, "path": tmp_path})
    append_jsonl(journal, {"seq": 2, "text": "line\nbreak"}, fsync=False)
    lines = journal.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    assert json.loads(lines[1])["text"] == "line\nbreak"


def test_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    journal = tmp_path / "events.jsonl"

    def writer(tag: int) -> None:
        for i in range(50):
            append_jsonl(journal, {"tag": tag, "i": i, "pad": "p" * 8000}, fsync=False)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert len(records) == 200
    for tag in range(4):
        assert [r["i"] for r in records if r["tag"] == tag] == list(range(50))


def test_append_jsonl_to_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="cannot append"):
        append_jsonl(tmp_path / "nope" / "j.jsonl", {"a": 1})
