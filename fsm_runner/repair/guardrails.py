"""Guardrails around a repair agent: snapshot the repo before it runs, undo what it may not change after.

The runner enforces these itself because an agent is untrusted: whatever it edits, ``pipeline.yml``
(human-owned) comes back byte for byte, and edits outside the allowed globs are reverted. The provenance it
returns is what ``repair_NN/provenance.json`` records.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from attrs import define, field, validators

from fsm_runner.errors import UsageError
from fsm_runner.evidence import layout

DEFAULT_EXCLUDE: tuple[str, ...] = (".git", ".venv", "node_modules", layout.DEFAULT_OUT_DIR, "__pycache__")
DEFAULT_ALLOWED: tuple[str, ...] = (layout.AGENT_AREA,)
DEFAULT_PROTECTED: tuple[str, ...] = (layout.PIPELINE_REL,)
MAX_STORED_FILE = 4 * 1024 * 1024
MAX_STORED_TOTAL = 512 * 1024 * 1024
_CHUNK = 1024 * 1024


# --- glob matching ---


def _segment_regex(segment: str) -> str:
    """Translate one path segment: ``*`` and ``?`` never cross ``/``; ``[...]`` is a character class."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            while i + 1 < len(segment) and segment[i + 1] == "*":
                i += 1
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = segment.find("]", i + 2)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = segment[i + 1 : end]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                out.append(("[^/" if negate else "[") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a repo-relative glob: ``*``/``?`` stay inside a segment, a ``**`` segment spans directories.

    ``a/**`` matches everything below ``a`` (not ``a`` itself), ``**/x`` matches ``x`` at any depth and
    ``a/**/b`` matches ``a/b``, ``a/x/b``, ... Patterns are anchored at the repo root.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise UsageError(f"glob {pattern!r} is empty; give a repo-relative pattern such as '.aider_fsm/**'")
    text = pattern.strip()
    while text.startswith("./"):
        text = text[2:]
    if text.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", text):
        raise UsageError(f"glob {pattern!r} is absolute; globs are relative to the repo root, e.g. 'src/**'")
    segments = [s for s in text.split("/") if s]
    if ".." in segments:
        raise UsageError(f"glob {pattern!r} contains '..'; it may only name files inside the repo")
    parts: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment != "**":
            parts.append(_segment_regex(segment) + ("" if index == last else "/"))
        elif index == 0 and index == last:
            parts.append(".*")
        elif index == last:
            parts.append(".+")
        else:
            parts.append("(?:[^/]+/)*")
    return re.compile("".join(parts))


def _patterns(value: Iterable[str] | str) -> tuple[str, ...]:
    """A lone string is one pattern (not its characters); every pattern is checked up front."""
    patterns = (value,) if isinstance(value, str) else tuple(value)
    for pattern in patterns:
        compile_glob(pattern)
    return patterns


def match_glob(path: str, pattern: str) -> bool:
    """True when the repo-relative ``path`` (``/``-separated) matches ``pattern``."""
    while path.startswith("./"):
        path = path[2:]
    return compile_glob(pattern).fullmatch(path) is not None


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    return any(match_glob(path, p) for p in patterns)


# --- snapshot ---


class FileState(NamedTuple):
    """One file as it was: hash, content when small enough to restore, and full ``st_mode`` (type + bits)."""

    sha256: str
    content: bytes | None
    mode: int


@define(frozen=True, eq=False)
class RepoSnapshot(Mapping[str, FileState]):
    """Relative path -> :class:`FileState` for every file and symlink, plus the directories that existed."""

    root: Path
    files: Mapping[str, FileState]
    dirs: frozenset[str]
    exclude: tuple[str, ...]

    def __getitem__(self, key: str) -> FileState:
        return self.files[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def _excluded(rel: str, name: str, exclude: tuple[str, ...]) -> bool:
    """A bare name excludes that name at any depth; an entry with ``/`` excludes that path (and below)."""
    for entry in exclude:
        if "/" in entry:
            if rel == entry or rel.startswith(entry + "/"):
                return True
        elif name == entry:
            return True
    return False


def _hash_file(path: str, keep: bool) -> tuple[str, bytes | None]:
    with open(path, "rb") as fh:
        if keep:
            data = fh.read()
            return hashlib.sha256(data).hexdigest(), data
        digest = hashlib.sha256()
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
        return digest.hexdigest(), None


def _link_state(path: str, mode: int) -> FileState:
    target = os.fsencode(os.readlink(path))
    return FileState(hashlib.sha256(b"symlink:" + target).hexdigest(), target, mode)


def snapshot_repo(
    repo: Path,
    *,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    keep_content: bool = True,
    max_file_bytes: int = MAX_STORED_FILE,
    max_total_bytes: int = MAX_STORED_TOTAL,
) -> RepoSnapshot:
    """Record every file under ``repo`` (symlinks not followed) so changes can be detected and undone.

    Content is kept for files up to ``max_file_bytes`` while the total stays under ``max_total_bytes``; larger
    files are hashed only, so a change to them is detected but cannot be reverted.
    """
    root = Path(repo).resolve()
    if not root.is_dir():
        raise UsageError(f"cannot snapshot {repo}: not a directory")
    excl = tuple(e.strip("/") for e in exclude if e.strip("/"))
    files: dict[str, FileState] = {}
    dirs: set[str] = set()
    budget = max_total_bytes
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        abs_dir, rel_dir = stack.pop()
        with os.scandir(abs_dir) as entries:
            for entry in entries:
                rel = f"{rel_dir}{entry.name}"
                if _excluded(rel, entry.name, excl):
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    files[rel] = _link_state(entry.path, st.st_mode)
                elif stat.S_ISDIR(st.st_mode):
                    dirs.add(rel)
                    stack.append((entry.path, rel + "/"))
                elif stat.S_ISREG(st.st_mode):
                    keep = keep_content and st.st_size <= max_file_bytes and st.st_size <= budget
                    sha, data = _hash_file(entry.path, keep)
                    if data is not None:
                        budget -= len(data)
                    files[rel] = FileState(sha, data, st.st_mode)
    return RepoSnapshot(root=root, files=files, dirs=frozenset(dirs), exclude=excl)


# --- provenance ---


@define(frozen=True)
class FileChange:
    """A file the agent touched; ``kind`` describes the agent's change, not the revert."""

    path: str
    before_sha: str | None
    after_sha: str | None
    kind: str = field(validator=validators.in_(("added", "modified", "deleted")))

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "before_sha": self.before_sha,
            "after_sha": self.after_sha,
        }


@define(frozen=True)
class Provenance:
    """What a repair changed, what the runner undid, and anything it could not undo."""

    changed: tuple[FileChange, ...]
    reverted: tuple[FileChange, ...]
    pipeline_restored: bool
    notes: tuple[str, ...] = ()

    @property
    def kept(self) -> tuple[FileChange, ...]:
        return tuple(c for c in self.changed if c not in self.reverted)

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": [c.to_json() for c in self.changed],
            "reverted": [c.to_json() for c in self.reverted],
            "kept": [c.path for c in self.kept],
            "pipeline_restored": self.pipeline_restored,
            "notes": list(self.notes),
        }


# --- enforcement ---


def _diff(before: RepoSnapshot, after: RepoSnapshot) -> list[FileChange]:
    changes: list[FileChange] = []
    for path in sorted(set(before.files) | set(after.files)):
        old, new = before.files.get(path), after.files.get(path)
        if old is None and new is not None:
            changes.append(FileChange(path, None, new.sha256, "added"))
        elif new is None and old is not None:
            changes.append(FileChange(path, old.sha256, None, "deleted"))
        elif old is not None and new is not None and (old.sha256, old.mode) != (new.sha256, new.mode):
            changes.append(FileChange(path, old.sha256, new.sha256, "modified"))
    return changes


def _remove(root: Path, rel: str, keep_dirs: frozenset[str]) -> None:
    """Delete an added entry, then prune parent directories that the agent created and left empty."""
    (root / rel).unlink(missing_ok=True)
    parent = Path(rel).parent
    while str(parent) not in (".", "") and parent.as_posix() not in keep_dirs:
        try:
            (root / parent).rmdir()
        except OSError:
            break
        parent = parent.parent


def _restore(root: Path, rel: str, state: FileState) -> None:
    """Put ``state`` back at ``rel`` atomically (temp file + rename replaces a file or symlink in place)."""
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.fsm-restore-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    if state.content is None:
        raise OSError("its content was not kept in the snapshot")
    if stat.S_ISLNK(state.mode):
        os.symlink(os.fsdecode(state.content), tmp)
    else:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(state.content)
        os.chmod(tmp, stat.S_IMODE(state.mode))
    try:
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def enforce_guardrails(
    repo: Path,
    before: RepoSnapshot,
    *,
    allowed_globs: Iterable[str] = DEFAULT_ALLOWED,
    protected: Iterable[str] = DEFAULT_PROTECTED,
) -> Provenance:
    """Diff the tree against ``before``; restore protected files, revert changes outside ``allowed_globs``."""
    allowed, guarded = _patterns(allowed_globs), _patterns(protected)
    root = Path(repo).resolve()
    after = snapshot_repo(root, exclude=before.exclude, keep_content=False)
    changes = _diff(before, after)
    reverted: list[FileChange] = []
    notes: list[str] = []
    pipeline_restored = False
    # Removals first, so a restored file never lands under a directory or symlink the agent put in its way.
    for change in sorted(changes, key=lambda c: c.kind != "added"):
        is_protected = matches_any(change.path, guarded)
        if not is_protected and matches_any(change.path, allowed):
            continue
        old = before.files.get(change.path)
        if old is not None and old.content is None:
            notes.append(
                f"{change.path}: {change.kind} by the agent but not restorable (larger than the snapshot "
                f"limit when the repair started); left as the agent left it"
            )
            continue
        try:
            if old is None:
                _remove(root, change.path, before.dirs)
            else:
                _restore(root, change.path, old)
        except OSError as exc:
            notes.append(f"{change.path}: could not revert the agent's change: {exc}")
            continue
        reverted.append(change)
        if is_protected:
            pipeline_restored = True
            notes.append(f"{change.path} is human-owned; the agent's change was undone byte for byte")
    order = {c: i for i, c in enumerate(changes)}
    reverted.sort(key=order.__getitem__)
    return Provenance(
        changed=tuple(changes),
        reverted=tuple(reverted),
        pipeline_restored=pipeline_restored,
        notes=tuple(notes),
    )
