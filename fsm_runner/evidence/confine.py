"""Files inside a directory tree, checked when they are used: no path leaves the tree through a symlink.

A contract's paths are checked when it is loaded, but the commands of a run change the tree afterwards: a
stage can turn a directory of ``metrics_path`` into a symlink to ``$HOME``, an action can write through a
link an earlier action made. So every read, write and move of a file the runner does not own goes through
this module, which walks the path one component at a time from a descriptor of the root (``openat`` with
``O_NOFOLLOW``). A symlink on the way is followed only while it stays inside the root (the same rule the
contract loader applies); one that leaves it, a ``..`` above the root, or any symlink at all where none is
allowed raises :class:`ConfinementError` naming the path. A process that swaps a component while the walk
runs makes the walk fail, never escape: each step opens one name relative to a directory already held.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from attrs import define

from fsm_runner.errors import EvidenceError

#: As many symlinks as the kernel follows in one lookup.
_MAX_LINKS = 40
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ConfinementError(EvidenceError):
    """A path would leave its root, or crosses a symlink where none is allowed."""


@define(frozen=True)
class _Entry:
    """The last component of a walked path: its directory's descriptor, its name, and the path from the
    root with every symlink resolved (``rel``)."""

    dir_fd: int
    name: str
    rel: str


def _problem(shown: str, root: str, detail: str) -> ConfinementError:
    return ConfinementError(
        f"{shown}: {detail}; the runner reads, writes and moves run outputs only inside {root} (make it a "
        "real directory or file there, or fix the command that made the link)"
    )


class _Walker:
    """The state of one walk: directory descriptors from the root down, their names, what is left."""

    def __init__(self, root: Path, rel: str) -> None:
        self.top = os.path.realpath(root)
        self.rel = rel
        if os.path.isabs(rel):
            raise _problem(rel, self.top, "an absolute path")
        self.pending = deque(rel.split("/"))
        self.fds = [os.open(self.top, _DIR_FLAGS)]
        self.names: list[str] = []
        self.via: str | None = None  # the last symlink followed, for the message
        self.followed = 0

    def path(self, name: str) -> str:
        return "/".join([*self.names, name])

    def up(self) -> None:
        """``..``: back to the parent, never above the root."""
        if not self.names:
            where = (
                f"the symbolic link {self.via} leads outside {self.top}"
                if self.via
                else "climbs out via '..'"
            )
            raise _problem(self.rel, self.top, where)
        os.close(self.fds.pop())
        self.names.pop()

    def follow(self, name: str, links: bool) -> None:
        """Go on with the symlink ``name``'s target in place of ``name``, when it stays inside the root."""
        here = self.path(name)
        target = os.readlink(name, dir_fd=self.fds[-1])
        if not links:
            raise _problem(self.rel, self.top, f"{here} is a symbolic link (to {target})")
        self.followed += 1
        if self.followed > _MAX_LINKS:
            raise _problem(self.rel, self.top, f"too many symbolic links ({here})")
        self.via = f"{here} -> {target}"
        if os.path.isabs(target):
            resolved = os.path.normpath(target)
            if resolved != self.top and not resolved.startswith(self.top.rstrip("/") + "/"):
                raise _problem(self.rel, self.top, f"the symbolic link {self.via} leads outside {self.top}")
            while len(self.fds) > 1:  # start again from the root
                os.close(self.fds.pop())
            self.names.clear()
            target = os.path.relpath(resolved, self.top)
        self.pending.extendleft(reversed(target.split("/")))

    def down(self, name: str) -> None:
        self.fds.append(os.open(name, _DIR_FLAGS, dir_fd=self.fds[-1]))
        self.names.append(name)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


@contextlib.contextmanager
def _walk(
    root: Path, rel: str, *, links: bool = True, create_dirs: bool = False, follow_last: bool = True
) -> Iterator[_Entry]:
    """Walk ``rel`` below ``root``; yields the entry of its last component (which may not exist yet).

    ``links=False`` refuses every symlink on the way, ``follow_last=False`` stops at a last component that
    is a symlink (the caller decides), ``create_dirs`` makes missing directories (never through a link).
    """
    walker = _Walker(root, rel)
    try:
        while walker.pending:
            name = walker.pending.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                walker.up()
                continue
            last = all(p in ("", ".") for p in walker.pending)
            parent = walker.fds[-1]
            try:
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
            except FileNotFoundError:
                if not last and not create_dirs:
                    raise
                if not last:
                    os.mkdir(name, 0o777, dir_fd=parent)
                    mode = stat.S_IFDIR
                else:
                    mode = 0  # not there yet: the caller creates it
            if stat.S_ISLNK(mode) and (follow_last or not last):
                walker.follow(name, links)
            elif last:
                yield _Entry(parent, name, walker.path(name))
                return
            elif not stat.S_ISDIR(mode):
                raise NotADirectoryError(errno.ENOTDIR, f"{walker.path(name)} is not a directory")
            else:
                walker.down(name)
        raise _problem(rel, walker.top, "names the root itself, not a file in it")
    finally:
        walker.close()


def resolve_inside(root: Path, rel: str) -> Path:
    """``root/rel`` with every symlink resolved, checked to stay inside ``root`` (the file need not exist)."""
    with _walk(root, rel) as entry:
        return Path(os.path.realpath(root), entry.rel)


def open_inside(root: Path, rel: str) -> int:
    """A read-only descriptor of the file ``root/rel``, reached without leaving ``root``.

    Opened non-blocking (a FIFO planted at the path cannot hang the runner); the caller checks the kind.
    Raises :class:`FileNotFoundError` when it does not exist.
    """
    with _walk(root, rel) as entry:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        return os.open(entry.name, flags, dir_fd=entry.dir_fd)


def regular_file(fd: int, path: Path | str) -> BinaryIO:
    """The open descriptor ``fd`` of ``path`` as a binary file, when it is a regular file; else it is closed
    and :class:`OSError` says "not a regular file" (a FIFO or device a command left there is never read)."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_regular(path: Path | str) -> BinaryIO:
    """``path`` opened for reading when it is a regular file, never through a link and never blocking on a
    FIFO a command planted there; :class:`OSError` otherwise (``"not a regular file"`` for the kind)."""
    return regular_file(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), path)


def write_inside(root: Path, rel: str, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``root/rel``, creating its directories; no symlink on the way, none at the end."""
    with _walk(root, rel, links=False, create_dirs=True, follow_last=False) as entry:
        try:
            st = os.stat(entry.name, dir_fd=entry.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            top = os.path.realpath(root)
            target = os.readlink(entry.name, dir_fd=entry.dir_fd)
            raise _problem(rel, top, f"{entry.rel} is a symbolic link (to {target})")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(entry.name, flags, mode, dir_fd=entry.dir_fd)
        with os.fdopen(fd, "wb") as out:
            out.write(data)


def move_out(root: Path, rel: str, dest: Path) -> bool:
    """Move the regular file ``root/rel`` to ``dest`` (outside the walk); False when there is none.

    A symlink at ``rel`` itself is refused: moving it would be harmless, but what the runner then reads
    from ``dest`` would be the link's target.
    """
    try:
        with _walk(root, rel, follow_last=False) as entry:
            return _move(entry, root, rel, dest)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _move(entry: _Entry, root: Path, rel: str, dest: Path) -> bool:
    st = os.stat(entry.name, dir_fd=entry.dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(entry.name, dir_fd=entry.dir_fd)
        raise _problem(rel, os.path.realpath(root), f"{entry.rel} is a symbolic link (to {target})")
    if not stat.S_ISREG(st.st_mode):
        return False
    try:
        os.rename(entry.name, dest, src_dir_fd=entry.dir_fd)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # Another file system (an --artifacts-dir elsewhere): copy from the descriptor, then unlink.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(entry.name, flags, dir_fd=entry.dir_fd), "rb") as src, open(dest, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.unlink(entry.name, dir_fd=entry.dir_fd)
    return True


def require_inside(path: Path, root: Path, what: str, instead: str) -> Path:
    """``path`` resolved, when it stays inside ``root`` (resolved); else :class:`ConfinementError` saying
    what ``path`` is (``what``) and what to do (``instead``)."""
    top = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != top and not real.is_relative_to(top):
        raise ConfinementError(
            f"{what} {path} leads to {real}, outside {top} (through a symbolic link); {instead}"
        )
    return real
