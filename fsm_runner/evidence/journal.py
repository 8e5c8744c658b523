"""journal.jsonl: one :class:`TransitionRecord` per transition, durable before the next phase starts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.atomic import append_jsonl
from fsm_runner.evidence.layout import JOURNAL
from fsm_runner.evidence.records import TransitionRecord
from fsm_runner.evidence.redaction import Redactor


@define
class Journal:
    """Append-only writer; ``seq`` continues from the records already in the file (replay appends)."""

    path: Path
    seq: int = 0

    @classmethod
    def open(cls, run_dir: Path) -> Journal:
        path = run_dir / JOURNAL
        seq = 0
        if path.exists():
            read = read_journal(path)
            if read.torn:  # a crash cut the last line: drop it, or the next record is glued onto it
                data = path.read_bytes()
                os.truncate(path, data.rstrip(b"\n").rfind(b"\n") + 1)
            seq = read.records[-1].seq if read.records else 0
        return cls(path=path, seq=seq)

    def append(self, redactor: Redactor | None = None, **fields: Any) -> TransitionRecord:
        """Write the next record (numbered and timed here) and return it as written.

        With a ``redactor`` the record's free text is masked before it reaches the file; the returned record
        is the masked one.
        """
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        record = TransitionRecord(seq=self.seq + 1, ts=stamp, **fields)
        if redactor is not None:
            record = record.redacted(redactor)
        append_jsonl(self.path, record.to_json(), fsync=True)
        self.seq = record.seq
        return record


@define(frozen=True)
class JournalRead:
    """Records that parsed and validated; ``problem`` names the first line that did not.

    ``torn`` is set when only the last line is cut off (a crash mid-write): the records before it stand.
    """

    records: tuple[TransitionRecord, ...]
    torn: bool = False
    problem: str | None = None


def read_journal(path: Path) -> JournalRead:
    """Parse and validate a journal, stopping at the first damaged line (a torn last line is tolerated)."""
    records: list[TransitionRecord] = []
    try:
        with path.open("rb") as handle:
            lines = handle.read().split(b"\n")
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        try:
            data = json.loads(raw)
        except RecursionError:
            return JournalRead(tuple(records), problem=f"{where}: nested too deeply to be a journal record")
        except ValueError:
            if number == len(lines):
                return JournalRead(tuple(records), torn=True, problem=f"{where}: last line is truncated")
            return JournalRead(tuple(records), problem=f"{where}: unreadable journal record (not JSON)")
        try:
            record = TransitionRecord.from_json(data, where)
        except EvidenceError as exc:
            return JournalRead(tuple(records), problem=str(exc))
        if records and record.seq <= records[-1].seq:
            return JournalRead(tuple(records), problem=f"{where}: seq {record.seq} after {records[-1].seq}")
        records.append(record)
    return JournalRead(tuple(records))
