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
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def check_globs(value: Iterable[str] | str) -> tuple[str, ...]:
    """The patterns, each checked (:class:`UsageError` for an empty, absolute or ``..`` one)."""
    return _patterns(value)


def match_glob(path: str, pattern: str) -> bool:
    """True when the repo-relative ``path`` (``/``-separated) matches ``pattern``."""
    while path.startswith("./"):
        path = path[2:]
    return compile_glob(pattern).fullmatch(path) is not None


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    return any(match_glob(path, p) for p in patterns)


# --- snapshot ---

#: The hash recorded for a file whose content could not be read (it compares unequal to every real hash).
UNREADABLE = "unreadable"


class FileState(NamedTuple):
    """One file as it was: hash, content when small enough to restore, and full ``st_mode`` (type + bits)."""

    sha256: str
    content: bytes | None
    mode: int


@define(frozen=True, eq=False)
class RepoSnapshot(Mapping[str, FileState]):
    """Relative path -> :class:`FileState` for every file and symlink, plus the directories that existed.

    ``unreadable`` maps each entry that could not be read (a directory that cannot be listed, a file that
    cannot be opened) to why; such a file is recorded with the hash :data:`UNREADABLE`, and nothing under such
    a directory is recorded.
    """

    root: Path
    files: Mapping[str, FileState]
    dirs: frozenset[str]
    exclude: tuple[str, ...]
    dir_modes: Mapping[str, int] = field(factory=dict)
    unreadable: Mapping[str, str] = field(factory=dict)

    def __getitem__(self, key: str) -> FileState:
        return self.files[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def unreadable_dirs(self) -> tuple[str, ...]:
        return tuple(sorted(p for p in self.unreadable if p in self.dirs))


def _excluded(rel: str, name: str, exclude: tuple[str, ...]) -> bool:
    """A bare name excludes that name at any depth; an entry with ``/`` excludes that path (and below)."""
    for entry in exclude:
        if "/" in entry:
            if rel == entry or rel.startswith(entry + "/"):
                return True
        elif name == entry:
            return True
    return False


def _under(rel: str, dirs: Iterable[str]) -> bool:
    """``rel`` is one of ``dirs`` or below one of them."""
    return any(rel == d or rel.startswith(d + "/") for d in dirs)


def _list_dir(path: str) -> list[tuple[os.DirEntry[str], os.stat_result]]:
    """A directory's entries with their ``lstat``; raises :class:`PermissionError` when it cannot be listed
    or its entries cannot be looked at (read but no search permission)."""
    listed = []
    with os.scandir(path) as entries:
        for entry in entries:
            try:
                listed.append((entry, entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # gone while we looked
    return listed


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


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


#: Called with a directory that cannot be listed and its mode; True when it made the directory listable.
Reopen = Callable[[str, int], bool]


def snapshot_repo(
    repo: Path,
    *,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    keep_content: bool = True,
    max_file_bytes: int = MAX_STORED_FILE,
    max_total_bytes: int = MAX_STORED_TOTAL,
    opaque: Iterable[str] = (),
    reopen: Reopen | None = None,
) -> RepoSnapshot:
    """Record every file under ``repo`` (symlinks not followed) so changes can be detected and undone.

    Content is kept for files up to ``max_file_bytes`` while the total stays under ``max_total_bytes``; larger
    files are hashed only, so a change to them is detected but cannot be reverted. Entries that cannot be
    read are recorded in ``unreadable`` instead of failing the snapshot; directories in ``opaque`` are not
    entered (recorded as unreadable too), and ``reopen`` may make an unlistable directory listable (it is
    then listed once more).
    """
    root = Path(repo).resolve()
    if not root.is_dir():
        raise UsageError(f"cannot snapshot {repo}: not a directory")
    excl = tuple(e.strip("/") for e in exclude if e.strip("/"))
    walk = _Walk(excl, frozenset(opaque), reopen, keep_content, max_file_bytes, max_total_bytes)
    walk.run(str(root))
    return RepoSnapshot(
        root=root,
        files=walk.files,
        dirs=frozenset(walk.dirs),
        exclude=excl,
        dir_modes=walk.modes,
        unreadable=walk.unreadable,
    )


@define
class _Walk:
    """One pass over a tree for :func:`snapshot_repo`."""

    exclude: tuple[str, ...]
    opaque: frozenset[str]
    reopen: Reopen | None
    keep_content: bool
    max_file_bytes: int
    budget: int
    files: dict[str, FileState] = field(factory=dict)
    dirs: set[str] = field(factory=set)
    modes: dict[str, int] = field(factory=dict)
    unreadable: dict[str, str] = field(factory=dict)
    reopened: set[str] = field(factory=set)

    def run(self, root: str) -> None:
        stack: list[tuple[str, str]] = [(root, "")]
        while stack:
            abs_dir, rel_dir = stack.pop()
            listed = self._list(abs_dir, rel_dir.rstrip("/"))
            if listed is None:
                continue
            for entry, st in listed:
                rel = f"{rel_dir}{entry.name}"
                if _excluded(rel, entry.name, self.exclude):
                    continue
                if stat.S_ISDIR(st.st_mode):
                    self.dirs.add(rel)
                    self.modes[rel] = st.st_mode
                    if rel in self.opaque:
                        self.unreadable[rel] = "not readable when the repair started"
                    else:
                        stack.append((entry.path, rel + "/"))
                else:
                    self._file(rel, entry.path, st)

    def _list(self, abs_dir: str, rel: str) -> list[tuple[os.DirEntry[str], os.stat_result]] | None:
        """The directory's entries (listed once more when ``reopen`` made it listable); None when it cannot
        be listed (recorded in ``unreadable``) or is gone."""
        try:
            return _list_dir(abs_dir)
        except (NotADirectoryError, FileNotFoundError):
            if not rel:
                raise
            return None  # replaced or removed while we looked
        except PermissionError as exc:
            if not rel:
                raise
            if self.reopen is not None and rel not in self.reopened and self.reopen(rel, self.modes[rel]):
                self.reopened.add(rel)
                return self._list(abs_dir, rel)
            self.unreadable[rel] = f"cannot list it: {_why(exc)}"
            return None

    def _file(self, rel: str, path: str, st: os.stat_result) -> None:
        try:
            if stat.S_ISLNK(st.st_mode):
                self.files[rel] = _link_state(path, st.st_mode)
            elif stat.S_ISREG(st.st_mode):
                size = st.st_size
                keep = self.keep_content and size <= self.max_file_bytes and size <= self.budget
                sha, data = _hash_file(path, keep)
                if data is not None:
                    self.budget -= len(data)
                self.files[rel] = FileState(sha, data, st.st_mode)
        except FileNotFoundError:
            return  # gone while we looked
        except OSError as exc:
            self.unreadable[rel] = f"cannot read it: {_why(exc)}"
            self.files[rel] = FileState(UNREADABLE, None, st.st_mode)


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
    """What a repair changed, what the runner undid, and anything it could not undo or could not read."""

    changed: tuple[FileChange, ...]
    reverted: tuple[FileChange, ...]
    pipeline_restored: bool
    notes: tuple[str, ...] = ()
    #: Changes the guardrails had to undo (outside the allowed area, or to a protected file) but could not.
    unreverted: tuple[FileChange, ...] = ()
    #: Entries that could not be read (path -> why): changes under them were not checked.
    unreadable: Mapping[str, str] = field(factory=dict)

    @property
    def kept(self) -> tuple[FileChange, ...]:
        return tuple(c for c in self.changed if c not in self.reverted)

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": [c.to_json() for c in self.changed],
            "reverted": [c.to_json() for c in self.reverted],
            "kept": [c.path for c in self.kept],
            "pipeline_restored": self.pipeline_restored,
            "unreverted": [c.to_json() for c in self.unreverted],
            "unreadable": dict(sorted(self.unreadable.items())),
            "notes": list(self.notes),
        }


# --- enforcement ---


def _diff(before: RepoSnapshot, after: RepoSnapshot, skip: tuple[str, ...] = ()) -> list[FileChange]:
    changes: list[FileChange] = []
    for path in sorted(set(before.files) | set(after.files)):
        if skip and _under(path, skip):
            continue  # under a directory that cannot be read: unseen, not gone
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


def restore_file(root: Path, rel: str, state: FileState) -> None:
    """Put ``state`` (content and mode) back at ``rel`` under ``root``, atomically; :class:`OSError` when
    it cannot be."""
    _restore(Path(root), rel, state)


def _file_sha(path: Path) -> str | None:
    """The hash a snapshot would record for ``path`` now (None when it does not exist)."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            return _link_state(str(path), st.st_mode).sha256
        return _hash_file(str(path), False)[0] if stat.S_ISREG(st.st_mode) else UNREADABLE
    except FileNotFoundError:
        return None
    except OSError:
        return UNREADABLE


def enforce_guardrails(
    repo: Path,
    before: RepoSnapshot,
    *,
    allowed_globs: Iterable[str] = DEFAULT_ALLOWED,
    protected: Iterable[str] = DEFAULT_PROTECTED,
) -> Provenance:
    """Diff the tree against ``before``; restore protected files, revert changes outside ``allowed_globs``.

    A directory the agent left unreadable is opened first (one that existed gets its mode back, one it made
    gets owner access), so nothing hides behind a ``chmod 000``. Directories that were unreadable before
    the repair are not entered. What had to be undone but could not be is in ``unreverted``; the caller
    decides what that means (:func:`fsm_runner.repair.step.run_repair` stops the repair loop).
    """
    allowed, guarded = _patterns(allowed_globs), _patterns(protected)
    root = Path(repo).resolve()
    notes: list[str] = []
    after = snapshot_repo(
        root,
        exclude=before.exclude,
        keep_content=False,
        opaque=before.unreadable_dirs(),
        reopen=_reopener(root, before, notes),
    )
    hidden = after.unreadable_dirs()
    changes = _diff(before, after, hidden)
    unreverted = _hidden_changes(before, after, allowed, guarded, notes)
    reverted: list[FileChange] = []
    pipeline_restored = False
    # Removals first, so a restored file never lands under a directory or symlink the agent put in its way.
    for change in sorted(changes, key=lambda c: c.kind != "added"):
        is_protected = matches_any(change.path, guarded)
        if not is_protected and matches_any(change.path, allowed):
            continue
        problem = _revert(root, before, change)
        if problem:
            notes.append(problem)
            unreverted.append(change)
            continue
        reverted.append(change)
        if is_protected:
            pipeline_restored = True
            notes.append(f"{change.path} is human-owned; the agent's change was undone byte for byte")
    unreverted += _protected_left(root, before, after, guarded, unreverted, notes)
    order = {c: i for i, c in enumerate(changes)}
    reverted.sort(key=order.__getitem__)
    return Provenance(
        changed=tuple(changes),
        reverted=tuple(reverted),
        pipeline_restored=pipeline_restored,
        notes=tuple(notes),
        unreverted=tuple(unreverted),
        unreadable={**after.unreadable, **before.unreadable},
    )


def _reopener(root: Path, before: RepoSnapshot, notes: list[str]) -> Reopen:
    """Makes a directory the agent left unlistable listable again: the mode it had, or owner access for
    one the agent made; False when the runner cannot (another user's directory)."""

    def reopen(rel: str, mode: int) -> bool:
        old = before.dir_modes.get(rel)
        new = stat.S_IMODE(old) if old is not None else stat.S_IMODE(mode) | stat.S_IRWXU
        if new == stat.S_IMODE(mode):
            return False
        try:
            os.chmod(root / rel, new)
        except OSError:
            return False
        what = "its mode was restored" if old is not None else "its owner was given access"
        notes.append(f"{rel}/: the agent left it unreadable (mode {stat.S_IMODE(mode):o}); {what} ({new:o})")
        return True

    return reopen


def _hidden_changes(
    before: RepoSnapshot,
    after: RepoSnapshot,
    allowed: tuple[str, ...],
    guarded: tuple[str, ...],
    notes: list[str],
) -> list[FileChange]:
    """Directories still unreadable after the agent, where it may have changed what it may not: each is a
    change that cannot be checked, so none can be reverted."""
    found = []
    for rel in after.unreadable_dirs():
        if rel in before.unreadable:
            continue  # never readable: recorded in ``unreadable``, not checked
        guards_inside = any(_under(p, (rel,)) and matches_any(p, guarded) for p in before.files)
        if guards_inside or not matches_any(rel, allowed):
            found.append(FileChange(rel, None, None, "modified" if rel in before.dirs else "added"))
            notes.append(
                f"{rel}/: the agent left it unreadable ({after.unreadable[rel]}); what it changed there "
                "cannot be checked or reverted"
            )
    return found


def _revert(root: Path, before: RepoSnapshot, change: FileChange) -> str | None:
    """Undo one change; the reason when it cannot be undone."""
    old = before.files.get(change.path)
    if old is not None and old.content is None:
        why = "it could not be read" if old.sha256 == UNREADABLE else "it was larger than the snapshot limit"
        return (
            f"{change.path}: {change.kind} by the agent but not restorable ({why} when the repair started); "
            "left as the agent left it"
        )
    try:
        if old is None:
            _remove(root, change.path, before.dirs)
        else:
            _restore(root, change.path, old)
    except OSError as exc:
        return f"{change.path}: could not revert the agent's change: {_why(exc)}"
    return None


def _protected_left(
    root: Path,
    before: RepoSnapshot,
    after: RepoSnapshot,
    guarded: tuple[str, ...],
    known: list[FileChange],
    notes: list[str],
) -> list[FileChange]:
    """Protected files read once more after the revert: one that still differs is never left unsaid."""
    found = []
    for path in sorted({*before.files, *after.files}):
        if not matches_any(path, guarded) or any(c.path == path for c in known):
            continue
        old = before.files.get(path)
        now = _file_sha(root / path)
        if now != (old.sha256 if old is not None else None):
            kind = "added" if old is None else "deleted" if now is None else "modified"
            found.append(FileChange(path, old.sha256 if old else None, now, kind))
            notes.append(f"{path} is human-owned and still differs from its bytes before the repair")
    return found
