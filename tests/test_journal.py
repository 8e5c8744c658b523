"""journal.jsonl: durable appends, sequence numbers across reopen, and what damage reading tolerates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fsm_runner.journal import JOURNAL_NAME, Journal, read_journal


def lines(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / JOURNAL_NAME).read_text().splitlines()]


def test_append_writes_one_json_line_with_seq_and_time(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    first = journal.append({"trigger": "phase_done", "source": "clone"})
    second = journal.append({"trigger": "phase_skipped", "nested": {"a": [1, 2]}})
    assert lines(tmp_path) == [first, second]
    assert (first["seq"], second["seq"]) == (1, 2)
    assert isinstance(first["ts"], str) and first["ts"].endswith("Z") and "T" in first["ts"]
    assert list(first)[:2] == ["seq", "ts"]
    assert (tmp_path / JOURNAL_NAME).read_text().endswith("\n")


def test_append_serialises_values_json_cannot(tmp_path: Path) -> None:
    Journal.open(tmp_path).append({"path": tmp_path, "when": frozenset()})
    assert lines(tmp_path)[0]["path"] == str(tmp_path)
    assert lines(tmp_path)[0]["when"] == "frozenset()"


def test_each_append_is_fsynced_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    journal = Journal.open(tmp_path)
    journal.append({"n": 1})
    journal.append({"n": 2})
    sizes = [len(line) + 1 for line in (tmp_path / JOURNAL_NAME).read_text().splitlines()]
    assert synced == [sizes[0], sizes[0] + sizes[1]]  # the whole line was on the file when it was synced


@pytest.mark.parametrize("count", [0, 1, 3])
def test_seq_continues_after_reopen(tmp_path: Path, count: int) -> None:
    journal = Journal.open(tmp_path)
    for n in range(count):
        journal.append({"n": n})
    reopened = Journal.open(tmp_path)
    assert reopened.seq == count
    assert reopened.append({"n": "next"})["seq"] == count + 1
    assert [r["seq"] for r in read_journal(tmp_path / JOURNAL_NAME).records] == list(range(1, count + 2))


def test_seq_follows_the_recorded_numbers_not_the_line_count(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_NAME).write_text('{"seq": 7}\n{"seq": 9}\n')
    assert Journal.open(tmp_path).append({})["seq"] == 10


def test_reading_a_clean_journal(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    written = [journal.append({"n": n}) for n in range(3)]
    read = read_journal(tmp_path / JOURNAL_NAME)
    assert (read.records, read.torn, read.problem) == (tuple(written), False, None)


def test_an_empty_journal_has_no_records_and_no_problem(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_NAME).write_bytes(b"")
    read = read_journal(tmp_path / JOURNAL_NAME)
    assert (read.records, read.torn, read.problem) == ((), False, None)
    assert Journal.open(tmp_path).seq == 0


@pytest.mark.parametrize("tail", [b'{"seq": 3, "trig', b'{"seq": 3, "trigger": "x"', b"\xff\xfe"])
def test_a_torn_last_line_is_tolerated_and_reported(tmp_path: Path, tail: bytes) -> None:
    journal = Journal.open(tmp_path)
    journal.append({"n": 1})
    journal.append({"n": 2})
    with (tmp_path / JOURNAL_NAME).open("ab") as fh:
        fh.write(tail)
    read = read_journal(tmp_path / JOURNAL_NAME)
    assert [r["n"] for r in read.records] == [1, 2]
    assert read.torn is True
    assert read.problem == f"{tmp_path / JOURNAL_NAME}:3: last line is truncated"
    assert Journal.open(tmp_path).seq == 2


def test_appending_after_a_torn_line_keeps_the_new_record_readable(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.append({"n": 1})
    with (tmp_path / JOURNAL_NAME).open("ab") as fh:
        fh.write(b'{"seq": 2, "tr')
    Journal.open(tmp_path).append({"n": 2})
    read = read_journal(tmp_path / JOURNAL_NAME)
    assert read.problem is None
    assert [r["n"] for r in read.records] == [1, 2]


@pytest.mark.parametrize(
    "middle, why",
    [
        (b'{"seq": 2, "trig', "unreadable journal record"),
        (b"[1, 2, 3]", "journal record is not an object"),  # valid JSON, but not an object
        (b'"just a string"', "journal record is not an object"),
        (b"", "unreadable journal record"),  # a blank line is damage too
    ],
)
def test_damage_before_the_last_line_is_a_problem(tmp_path: Path, middle: bytes, why: str) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(b'{"seq": 1}\n' + middle + b'\n{"seq": 3}\n')
    read = read_journal(path)
    assert read.torn is False
    assert read.problem == f"{path}:2: {why}"
    assert read.records == ({"seq": 1},)


def test_a_missing_trailing_newline_on_a_complete_record_is_fine(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(b'{"seq": 1}\n{"seq": 2}')
    read = read_journal(path)
    assert (len(read.records), read.torn, read.problem) == (2, False, None)
