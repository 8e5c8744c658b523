"""A command's output files once it has run: masked, capped to ``artifacts.max_output_bytes`` (head and tail
kept), and read back: the tail an error quotes, the last line a heartbeat shows.

Files are read and rewritten in place a chunk at a time, never through a link: a command may have planted
one, and a service left running may still write to them (it writes at the new end).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.atomic import write_json_atomic
from fsm_runner.evidence.confine import open_regular
from fsm_runner.evidence.layout import ATTEMPT_RESULT_GLOB, RESULT_SUFFIX, STDERR_SUFFIX, STDOUT_SUFFIX
from fsm_runner.evidence.redaction import Redactor

#: How much of a command's output an error quotes.
TAIL_BYTES = 2048
_COPY_CHUNK = 1 << 20
#: A file up to this much over the cap is left whole: room for the marker line, so a capped file is never cut
#: again (teardown caps a deploy's files, some of which were capped when their command ended).
_MARKER_ROOM = 256


def _tail(path: Path, redactor: Redactor, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``path``, secrets masked.

    The file may not be masked yet (a service still writes to it), so a little more is read and masked
    first, and the start of what was read is dropped after masking: a secret cut in two by the start of the
    tail never shows half of itself.
    """
    extra = redactor.longest
    try:
        with open_regular(path) as fh:  # never through a link, never a FIFO
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            start = max(0, size - limit - extra)
            fh.seek(start)
            data = redactor.mask_bytes(fh.read(limit + extra))
    except OSError:
        return ""
    if start:
        data = data[extra:]
    text = data[-limit:].decode("utf-8", errors="replace")
    return ("..." + text) if size > limit else text


def complete_lines(text: str) -> list[str]:
    """The lines of ``text`` up to its last newline: what follows it is a line still being written."""
    return text[: text.rfind("\n") + 1].splitlines()


def output_tail(stdout_path: Path, stderr_path: Path, redactor: Redactor) -> tuple[str, str | None]:
    """The masked tail of a command's output and the file it comes from: stderr, or stdout when stderr is
    blank (a test runner prints its report to stdout); ``("", None)`` when both are blank."""
    for path in (stderr_path, stdout_path):
        tail = _tail(path, redactor)
        if tail.strip():
            return tail, str(path)
    return "", None


def cap_output(path: Path, limit: int) -> int:
    """Cut the middle of the output file ``path`` down to ``limit`` bytes; returns how many bytes were cut.

    The first and last halves stay, with one line between them saying how much is missing, so both how a
    command started and how it ended (the lines errors quote) are kept. The tail is moved in place, a chunk
    at a time, so memory stays flat whatever the size. ``limit`` 0 keeps everything; so does an excess of
    at most :data:`_MARKER_ROOM` bytes. Only a regular file is touched, never through a link.
    """
    if limit <= 0:
        return 0
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size <= limit + _MARKER_ROOM:
            return 0
        size = info.st_size
        head = limit // 2
        src = head + (size - limit)  # where the kept tail starts
        cut = src - head
        marker = f"\n[fsm-runner: {cut} bytes cut here; artifacts.max_output_bytes is {limit}]\n".encode(
            "ascii"
        )
        dst = head + len(marker)
        os.pwrite(fd, marker, head)  # lands in the cut part: the tail starts further on
        while src < size:  # the destination always lies before the source: front to back is safe
            chunk = os.pread(fd, min(_COPY_CHUNK, size - src), src)
            if not chunk:
                break
            done = 0
            while done < len(chunk):
                done += os.pwrite(fd, chunk[done:], dst + done)
            src += len(chunk)
            dst += len(chunk)
        os.ftruncate(fd, dst)
        return cut
    except OSError as exc:
        raise EvidenceError(f"cannot cap the output file {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def cap_outputs(limit: int, stdout_path: Path, stderr_path: Path) -> tuple[int, int]:
    """:func:`cap_output` both streams of an ended attempt: the bytes cut from stdout and from stderr."""
    return cap_output(stdout_path, limit), cap_output(stderr_path, limit)


def finish_outputs(
    redactor: Redactor, limit: int, stdout_path: Path, stderr_path: Path, *, quiet: bool = False
) -> tuple[int, int]:
    """Mask, then cap, an ended command's output files (masking first: a cut never splits a secret that
    masking would then miss); ``quiet`` when an interrupt is what the caller must see."""
    mask_outputs(redactor, stdout_path, stderr_path, quiet=quiet)
    with contextlib.suppress(*((EvidenceError,) if quiet else ())):
        return cap_outputs(limit, stdout_path, stderr_path)
    return 0, 0


def cap_stage_outputs(stage_dir: Path, limit: int) -> None:
    """Cap the output files of every attempt in ``stage_dir`` and record the cuts in their attempt files:
    for the output of services a stage left running, once they have been ended."""
    for result_file in sorted(Path(stage_dir).glob(ATTEMPT_RESULT_GLOB)):
        stem = result_file.name[: -len(RESULT_SUFFIX)]
        cut = cap_outputs(
            limit, result_file.with_name(stem + STDOUT_SUFFIX), result_file.with_name(stem + STDERR_SUFFIX)
        )
        if not any(cut):
            continue
        try:
            with open_regular(result_file) as fh:  # a command may have left a FIFO there
                doc = json.loads(fh.read())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict):
            for key, value in zip(("stdout_cut_bytes", "stderr_cut_bytes"), cut, strict=True):
                before = doc.get(key)
                doc[key] = value + (before if type(before) is int else 0)
            write_json_atomic(result_file, doc, fsync=False)


def last_output_line(path: Path, redactor: Redactor) -> str:
    """The last non-blank complete line of a command's output file so far, secrets masked ("" when there is
    none).

    What a heartbeat shows of a command still running: its output is not masked on disk yet, and a line
    still being written may hold the first part of a secret that masking cannot recognise yet, so only what
    comes before the last newline is shown.
    """
    lines = complete_lines(_tail(path, redactor))
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def mask_outputs(redactor: Redactor, *paths: Path, quiet: bool = False) -> None:
    """Mask an ended command's output files; ``quiet`` when an interrupt is what the caller must see."""
    if redactor.active:
        for path in paths:
            with contextlib.suppress(*((EvidenceError,) if quiet else ())):
                redactor.mask_file(path)
