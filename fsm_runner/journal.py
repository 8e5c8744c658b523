"""journal.jsonl: one record per transition, durable before the next phase starts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner.evidence import append_jsonl

JOURNAL_NAME = "journal.jsonl"


@define
class Journal:
    """Append-only writer; ``seq`` continues from the records already in the file (replay appends)."""

    path: Path
    seq: int = 0

    @classmethod
    def open(cls, run_dir: Path) -> Journal:
        path = run_dir / JOURNAL_NAME
        seq = 0
        if path.exists():
            read = read_journal(path)
            if read.torn:  # a crash cut the last line: drop it, or the next record is glued onto it
                data = path.read_bytes()
                os.truncate(path, data.rstrip(b"\n").rfind(b"\n") + 1)
            records = read.records
            seq = int(records[-1].get("seq", len(records))) if records else 0
        return cls(path=path, seq=seq)

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        self.seq += 1
        full = {"seq": self.seq, "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", **record}
        append_jsonl(self.path, full, fsync=True)
        return full


@define(frozen=True)
class JournalRead:
    """Records that parsed; ``torn`` is set when the last line was cut off by a crash mid-write."""

    records: tuple[dict[str, Any], ...]
    torn: bool = False
    problem: str | None = None


def read_journal(path: Path) -> JournalRead:
    """Parse a journal; a torn *last* line is tolerated and reported, damage elsewhere is a problem."""
    records: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        lines = handle.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw)
        except ValueError:
            if number == len(lines):
                return JournalRead(
                    tuple(records), torn=True, problem=f"{path}:{number}: last line is truncated"
                )
            return JournalRead(tuple(records), problem=f"{path}:{number}: unreadable journal record")
        if not isinstance(record, dict):
            return JournalRead(tuple(records), problem=f"{path}:{number}: journal record is not an object")
        records.append(record)
    return JournalRead(tuple(records))
