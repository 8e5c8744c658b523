"""A sweep's output directory: ``results.jsonl`` (one row per finished cell, appended a whole line at a time),
``sweep.json`` (the manifest, replaced atomically) and ``cells/`` (each cell's log and result file).

A cell may have several rows (a failure, then a resumed success): the latest row of a cell wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.atomic import append_jsonl, write_json_atomic
from fsm_runner.sweeps.cells import CellResult

RESULTS = "results.jsonl"
MANIFEST = "sweep.json"
CELLS = "cells"
LOCK = ".sweep.lock"
#: Format of sweep.json (and of the rows it describes).
FORMAT_VERSION = 1


def read_rows(out_dir: Path, on_skip: Callable[[str], None] | None = None) -> list[CellResult]:
    """Every row of ``out_dir/results.jsonl`` in file order; lines that are not rows are skipped, and
    ``on_skip`` is told of each (``file:line: ...``)."""
    path = Path(out_dir) / RESULTS
    rows: list[CellResult] = []
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return rows
    except OSError as exc:
        raise EvidenceError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(CellResult.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                if on_skip is not None:
                    on_skip(f"{path}:{number}: not a result row ({exc}); skipped")
    return rows


def latest_rows(rows: Iterable[CellResult]) -> dict[tuple[str, str], CellResult]:
    """Each cell's latest row (the rows in file order)."""
    latest: dict[tuple[str, str], CellResult] = {}
    for row in rows:
        latest[row.key] = row
    return latest


def append_row(out_dir: Path, row: CellResult) -> None:
    append_jsonl(Path(out_dir) / RESULTS, row.to_json())


def write_manifest(out_dir: Path, data: Mapping[str, Any]) -> None:
    write_json_atomic(Path(out_dir) / MANIFEST, {"version": FORMAT_VERSION, **data})


@contextlib.contextmanager
def holding(out_dir: Path) -> Iterator[None]:
    """Create ``out_dir`` and hold it for one sweep: a second sweep writing the same rows is refused."""
    out_dir = Path(out_dir)
    try:
        (out_dir / CELLS).mkdir(parents=True, exist_ok=True)
        fh: TextIO = open(out_dir / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
    except OSError as exc:
        raise EvidenceError(
            f"cannot create the sweep directory {out_dir}: {exc.strerror or exc}; choose a writable out_dir"
        ) from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise UsageError(
                f"another sweep ({holder}) is writing to {out_dir}; wait for it or choose another out_dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
