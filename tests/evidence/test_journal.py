"""journal.jsonl: durable typed appends, sequence numbers across reopen, and what damage reading tolerates."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.journal import Journal, read_journal
from fsm_runner.evidence.layout import JOURNAL
from fsm_runner.evidence.records import CommandRef, Outcome, TransitionRecord
from fsm_runner.evidence.redaction import Redactor


def lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / JOURNAL).read_text().splitlines()]


def step(n: int = 1, **extra: Any) -> dict[str, Any]:
    """The fields of one ordinary transition (everything the journal does not number itself)."""
    return {"trigger": "phase_done", "source": f"s{n}", "dest": f"d{n}", **extra}


def raw_line(seq: int) -> bytes:
    return json.dumps({"seq": seq, "ts": "2026-01-01T00:00:00Z", **step(seq)}).encode()


def test_append_writes_one_json_line_with_seq_and_time(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    first = journal.append(**step(1))
    outcome = Outcome(phase="tests", status="ok", commands=(CommandRef(index=1, attempt=1, exit_code=0),))
    second = journal.append(**{**step(2), "trigger": "phase_skipped"}, guards={"ok": True}, outcome=outcome)
    assert isinstance(first, TransitionRecord) and isinstance(second, TransitionRecord)
    assert lines(tmp_path) == [first.to_json(), second.to_json()]
    assert (first.seq, second.seq) == (1, 2)
    assert first.ts.endswith("Z") and "T" in first.ts
    assert list(lines(tmp_path)[0])[:5] == ["seq", "ts", "trigger", "source", "dest"]
    assert lines(tmp_path)[1]["outcome"]["commands"][0]["exit_code"] == 0
    assert (tmp_path / JOURNAL).read_text().endswith("\n")


def test_the_journal_numbers_records_itself(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Journal.open(tmp_path).append(seq=5, **step())
    assert not (tmp_path / JOURNAL).exists()


def test_append_serialises_values_json_cannot(tmp_path: Path) -> None:
    outcome = Outcome(phase="tests", status="ok", data={"path": tmp_path, "when": frozenset()})
    Journal.open(tmp_path).append(**step(), outcome=outcome)
    data = lines(tmp_path)[0]["outcome"]["data"]
    assert data == {"path": str(tmp_path), "when": "frozenset()"}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('{"seq": 1, "ts": "t", "trigger": "t", "source": "a", "dest": "b"}', ":2: seq 1 after 1"),
        ("[" * 100_000 + "]" * 100_000, ":2: nested too deeply to be a journal record"),
        (
            '{"seq": 2, "ts": "t", "trigger": "t", "source": "a", "dest": "b", "outcome": {"phase": "p", '
            '"status": "ok", "data": ' + '{"x": ' * 80 + "1" + "}" * 80 + "}}",
            ":2: outcome.data: nested deeper than 64",
        ),
    ],
)
def test_records_out_of_order_or_nested_too_deeply_are_damage(
    tmp_path: Path, extra: str, problem: str
) -> None:
    journal = Journal.open(tmp_path)
    journal.append(**step(1))
    with (tmp_path / JOURNAL).open("a") as handle:
        handle.write(extra + "\n" + json.dumps({**step(3), "seq": 3, "ts": "t"}) + "\n")
    read = read_journal(tmp_path / JOURNAL)
    assert [r.seq for r in read.records] == [1]
    assert (
        read.problem is not None
        and read.problem.startswith(str(tmp_path / JOURNAL))
        and problem in read.problem
    )


def test_the_redactor_masks_the_line_and_the_returned_record(tmp_path: Path) -> None:
    record = Journal.open(tmp_path).append(Redactor(["hunter2"]), **step(), reason="token hunter2 rejected")
    assert record.reason == "token *** rejected"
    assert record.seq == 1
    assert lines(tmp_path)[0]["reason"] == "token *** rejected"
    assert "hunter2" not in (tmp_path / JOURNAL).read_text()


@pytest.mark.parametrize("secret", ["skip", "phase", "auth", "tests", "running"])
def test_a_secret_that_is_also_a_name_or_a_state_keeps_the_record_readable(
    tmp_path: Path, secret: str
) -> None:
    """Only free text is masked: a password that happens to be ``skip`` must not corrupt the journal."""
    outcome = Outcome(phase="auth", status="skipped", reason=f"no {secret} here", data={"note": secret})
    fields = {"trigger": "phase_skipped", "source": "auth", "dest": "tests", "status": "running"}
    written = Journal.open(tmp_path).append(Redactor([secret]), **fields, outcome=outcome)
    (read,) = read_journal(tmp_path / JOURNAL).records
    assert read == written
    assert (read.source, read.dest, read.status) == ("auth", "tests", "running")
    assert read.outcome is not None and read.outcome.data == {"note": "***"}
    assert read.outcome.reason == "no *** here"


def test_each_append_is_fsynced_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    journal = Journal.open(tmp_path)
    journal.append(**step(1))
    journal.append(**step(2))
    sizes = [len(line) + 1 for line in (tmp_path / JOURNAL).read_text().splitlines()]
    assert synced == [sizes[0], sizes[0] + sizes[1]]  # the whole line was on the file when it was synced


@pytest.mark.parametrize("count", [0, 1, 3])
def test_seq_continues_after_reopen(tmp_path: Path, count: int) -> None:
    journal = Journal.open(tmp_path)
    for n in range(count):
        journal.append(**step(n))
    reopened = Journal.open(tmp_path)
    assert reopened.seq == count
    assert reopened.append(**step(99)).seq == count + 1
    assert [r.seq for r in read_journal(tmp_path / JOURNAL).records] == list(range(1, count + 2))


def test_seq_follows_the_recorded_numbers_not_the_line_count(tmp_path: Path) -> None:
    (tmp_path / JOURNAL).write_bytes(raw_line(7) + b"\n" + raw_line(9) + b"\n")
    assert Journal.open(tmp_path).append(**step()).seq == 10


def test_reading_a_clean_journal(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    written = [journal.append(**step(n)) for n in range(3)]
    read = read_journal(tmp_path / JOURNAL)
    assert (read.records, read.torn, read.problem) == (tuple(written), False, None)


def test_an_empty_journal_has_no_records_and_no_problem(tmp_path: Path) -> None:
    (tmp_path / JOURNAL).write_bytes(b"")
    read = read_journal(tmp_path / JOURNAL)
    assert (read.records, read.torn, read.problem) == ((), False, None)
    assert Journal.open(tmp_path).seq == 0


def test_a_missing_journal_is_an_evidence_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match=rf"{tmp_path / JOURNAL}: cannot read"):
        read_journal(tmp_path / JOURNAL)


@pytest.mark.parametrize("tail", [b'{"seq": 3, "trig', b'{"seq": 3, "trigger": "x"', b"\xff\xfe"])
def test_a_torn_last_line_is_tolerated_and_reported(tmp_path: Path, tail: bytes) -> None:
    journal = Journal.open(tmp_path)
    journal.append(**step(1))
    journal.append(**step(2))
    with (tmp_path / JOURNAL).open("ab") as fh:
        fh.write(tail)
    read = read_journal(tmp_path / JOURNAL)
    assert [r.source for r in read.records] == ["s1", "s2"]
    assert read.torn is True
    assert read.problem == f"{tmp_path / JOURNAL}:3: last line is truncated"
    assert Journal.open(tmp_path).seq == 2


def test_appending_after_a_torn_line_keeps_the_new_record_readable(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    journal.append(**step(1))
    with (tmp_path / JOURNAL).open("ab") as fh:
        fh.write(b'{"seq": 2, "tr')
    Journal.open(tmp_path).append(**step(2))
    read = read_journal(tmp_path / JOURNAL)
    assert read.problem is None
    assert [(r.seq, r.source) for r in read.records] == [(1, "s1"), (2, "s2")]


@pytest.mark.parametrize(
    "middle, why",
    [
        (b'{"seq": 2, "trig', "unreadable journal record (not JSON)"),
        (b"", "unreadable journal record (not JSON)"),  # a blank line is damage too
        (b"[1, 2, 3]", "expected an object, got [1, 2, 3]"),  # valid JSON, but not an object
        (b'"just a string"', "expected an object, got 'just a string'"),
        (b"{}", "missing key 'seq'"),
        (b'{"seq": 2}', "missing key 'ts'"),
        (
            b'{"seq": "2", "ts": "t", "trigger": "x", "source": "a", "dest": "b"}',
            "seq: expected a whole number",
        ),
        (b'{"seq": 0, "ts": "t", "trigger": "x", "source": "a", "dest": "b"}', "'seq' must be >= 1"),
    ],
)
def test_damage_before_the_last_line_is_a_problem(tmp_path: Path, middle: bytes, why: str) -> None:
    path = tmp_path / JOURNAL
    path.write_bytes(raw_line(1) + b"\n" + middle + b"\n" + raw_line(3) + b"\n")
    read = read_journal(path)
    assert read.torn is False
    assert read.problem is not None and read.problem.startswith(f"{path}:2: ")
    assert why in read.problem
    assert [r.seq for r in read.records] == [1]


def test_a_bad_record_on_the_last_line_is_damage_not_a_tear(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    path.write_bytes(raw_line(1) + b'\n{"seq": 2}\n')
    read = read_journal(path)
    assert (read.torn, [r.seq for r in read.records]) == (False, [1])
    assert read.problem == f"{path}:2: missing key 'ts'"


def test_a_missing_trailing_newline_on_a_complete_record_is_fine(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    path.write_bytes(raw_line(1) + b"\n" + raw_line(2))
    read = read_journal(path)
    assert (len(read.records), read.torn, read.problem) == (2, False, None)
