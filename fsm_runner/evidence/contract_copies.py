"""Copies of the contract files a run ran with, kept in its run dir by content hash.

``run.json`` records the pipeline's hash; these copies keep the bytes behind each hash, so a replay can show
what changed since the run and undo a repair the runner was killed in. Secret values the run knows are
masked in a copy: a copy whose bytes no longer have its name's hash can be read, but never restored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.atomic import write_text_atomic
from fsm_runner.evidence.layout import contract_copy
from fsm_runner.evidence.redaction import Redactor

#: A contract file larger than this does not load at all, so it is never a file a run ran with.
MAX_COPY_BYTES = 1024 * 1024


def _read(path: Path) -> bytes | None:
    """The file's bytes, or None when it is missing, not a regular file or too large to be a contract."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_COPY_BYTES:
            return None
        return path.read_bytes()
    except OSError:
        return None


def keep_contract_copies(
    run_dir: Path, repo_root: Path, rels: Iterable[str], redactor: Redactor | None = None
) -> dict[str, str | None]:
    """Copy each contract file (``rels``, relative to ``repo_root``) to ``contract/<sha256>.<name>`` in the
    run dir unless that copy exists; return rel -> sha256 of its bytes now (None: no such file).

    Raises :class:`~fsm_runner.errors.EvidenceError` when a copy cannot be written.
    """
    hashes: dict[str, str | None] = {}
    for rel in rels:
        data = _read(Path(repo_root) / rel)
        if data is None:
            hashes[rel] = None
            continue
        sha = hashlib.sha256(data).hexdigest()
        hashes[rel] = sha
        dest = Path(run_dir) / contract_copy(sha, rel)
        if dest.exists():
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # not UTF-8: it cannot load as a contract either
        try:
            dest.parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise EvidenceError(f"cannot create {dest.parent}: {exc.strerror or exc}") from exc
        write_text_atomic(dest, redactor.mask(text) if redactor is not None else text)
    return hashes


def read_contract_copy(run_dir: Path, sha256: str, rel: str) -> bytes | None:
    """The kept copy of ``rel`` with hash ``sha256``, or None when the run dir has none."""
    try:
        return (Path(run_dir) / contract_copy(sha256, rel)).read_bytes()
    except OSError:
        return None


def exact_copy(run_dir: Path, sha256: str, rel: str) -> bytes | None:
    """The kept copy's bytes only when they are exactly the bytes that had ``sha256`` (no secret was masked
    in them), so they can be put back; else None."""
    data = read_contract_copy(run_dir, sha256, rel)
    if data is None or hashlib.sha256(data).hexdigest() != sha256:
        return None
    return data
