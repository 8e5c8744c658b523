"""Crash-safe evidence writers: run directories, whole JSON documents and JSON lines.

Everything a run leaves behind is written here so that a reader (replay, reports, a human) never finds a
half-written JSON file: whole documents go through a temp file + fsync + rename, and journal-style records are
appended one complete line at a time and fsynced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.confine import require_inside
from fsm_runner.evidence.layout import WRITE_PROBE, single_name_problem


def _explain(exc: OSError) -> str:
    reason = exc.strerror or exc.__class__.__name__
    return f"{reason} (errno {exc.errno})" if exc.errno is not None else reason


def create_run_dir(artifacts_root: Path, run_id: str, *, inside: Path | None = None) -> Path:
    """Create ``artifacts_root/run_id`` and prove it can hold data.

    A probe file is written and fsynced, so a read-only mount or a full disk fails here, before any command
    runs, instead of losing evidence half-way through a run. An existing directory is accepted (replay reuses
    it). With ``inside`` (the repository, for the artifacts dir its contract names), ``artifacts_root`` must
    not lead out of it through a symlink, and the run dir returned is the resolved one.
    """
    problem = single_name_problem(run_id)
    if problem:
        raise EvidenceError(f"invalid run id: {problem}")
    if inside is not None:
        artifacts_root = artifacts_inside(Path(artifacts_root), inside)
    run_dir = Path(artifacts_root) / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(
            f"cannot create the run directory {run_dir}: {_explain(exc)}; "
            "choose a writable artifacts directory (artifacts.out_dir) or fix its permissions"
        ) from exc
    probe = run_dir / WRITE_PROBE
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"fsm-runner write probe\n" * 16)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise EvidenceError(
            f"the run directory {run_dir} is not writable: {_explain(exc)}; "
            "free disk space or choose another artifacts directory"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return run_dir


def artifacts_inside(artifacts_root: Path, repo: Path) -> Path:
    """The repository's own artifacts dir, resolved; refused when a symlink takes it out of ``repo``."""
    return require_inside(
        artifacts_root,
        repo,
        "the artifacts directory",
        "evidence goes outside the repository only when asked: remove the link, or pass that directory "
        "as artifacts_dir= (--artifacts-dir)",
    )


def _dumps(data: Any, path: Path, *, indent: int | None) -> str:
    try:
        return json.dumps(data, indent=indent, sort_keys=False, default=str, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise EvidenceError(f"cannot serialise evidence for {path} as JSON: {exc}") from exc


def write_json_atomic(path: Path, data: Any, *, fsync: bool = True) -> None:
    """Write ``data`` as indented JSON so that ``path`` holds either the old or the new document, never a mix.

    Values JSON does not know (paths, datetimes) are written with ``str``. ``fsync=False`` keeps the atomic
    rename (readers and a killed runner never see a partial file) but skips the flush to disk, which only a
    power loss can notice; use it for high-volume, non-authoritative files.
    """
    path = Path(path)
    write_text_atomic(path, _dumps(data, path, indent=2) + "\n", fsync=fsync)


def write_text_atomic(path: Path, text: str, *, fsync: bool = True) -> None:
    """Temp file in the same directory, then rename: ``path`` is never seen half-written."""
    path = Path(path)
    with _replacing(path, f"cannot write {path}") as fd, os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


def copy_file_atomic(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` (streamed: a samples file may be large) through a temp file and rename."""
    dest = Path(dest)
    with (
        _replacing(dest, f"cannot copy {src} to {dest}") as fd,
        os.fdopen(fd, "wb") as out,
        open(src, "rb") as source,
    ):
        shutil.copyfileobj(source, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


@contextlib.contextmanager
def _replacing(dest: Path, failure: str) -> Iterator[int]:
    """A temp file beside ``dest`` (its descriptor, for the block to fill and close) that takes ``dest``'s
    place when the block succeeds, and is removed when it fails: the one temp + rename of this module."""
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        yield fd
        os.replace(tmp_name, dest)
        tmp_name = None
    except OSError as exc:
        raise EvidenceError(f"{failure}: {_explain(exc)}") from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


#: Mode of every evidence file the runner creates: output may hold a secret until it is masked, so only the
#: owner reads it (the temp files of the atomic writes get it from ``mkstemp``).
EVIDENCE_MODE = 0o600


def append_jsonl(path: Path, record: Mapping[str, Any], *, fsync: bool = True) -> None:
    """Append ``record`` as one JSON line; with ``fsync`` it is on disk when this returns.

    The line is written with a single ``write`` on an ``O_APPEND`` descriptor, so concurrent appenders never
    interleave inside a line. A file whose last line was cut short (a crash, a full disk) gets that line ended
    first, so the new record is a line of its own, readable whatever the fragment before it.
    """
    path = Path(path)
    line = (_dumps(dict(record), path, indent=None) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, EVIDENCE_MODE)
        try:
            # Appenders take turns, so the last byte seen is that of a whole write, never of one in progress.
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise EvidenceError(f"cannot append to {path}: {_explain(exc)}") from exc
