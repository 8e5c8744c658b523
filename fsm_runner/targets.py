"""Resolve the target the user names (a local directory or a git URL) to a checked-out repository root.

Local work trees are used in place so the user's edits are what runs. Remote or bare repositories are cloned
once into a cache and fetched on later runs, so repeat runs are cheap and still reflect the requested ref;
each run then gets its own checkout of the resolved commit (a ``git worktree`` of the cached clone), so runs
of one URL at different refs never share files. The cache's layout is in :mod:`fsm_runner.evidence.layout`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs

from fsm_runner.contract.outputs import run_outputs
from fsm_runner.contract.pipeline import PipelineSpec
from fsm_runner.errors import ContractError, EvidenceError, TargetError, UsageError
from fsm_runner.evidence.atomic import create_run_dir, write_text_atomic
from fsm_runner.evidence.layout import (
    CHECKOUT_OWNER_SUFFIX,
    JOURNAL,
    PIPELINE_REL,
    RUN_JSON,
    checkout_owner,
    clone_checkouts_dir,
    clone_lock,
    clone_runs_dir,
    new_run_id,
    single_name_problem,
)
from fsm_runner.evidence.lock import lock_holder
from fsm_runner.evidence.records import ResolvedTarget, strip_credentials
from fsm_runner.evidence.store import read_run
from fsm_runner.execution.process import run_captured

__all__ = [
    "ResolvedTarget",
    "current_contract",
    "default_clones_dir",
    "refuse_committed_outputs",
    "checkout_problem",
    "remove_checkout",
    "remove_run_checkout",
    "resolve_target",
    "restore_checkout",
    "split_ref",
    "tracked_files",
    "url_clone",
    "url_runs_root",
    "with_url_credentials",
]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
#: git runs on the host side in trees a (sandboxed) command may have configured: settings that name a program
#: to run are switched off, so a repository's own .git/config never runs code outside the sandbox.
_HOST_SIDE = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")
_SCP_RE = re.compile(r"^(?:[^@/:]+@)?[^@/:]+:(?!//)")
_SUPPORTED_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
_STDERR_TAIL = 10


def default_clones_dir() -> Path:
    """$FSM_RUNNER_CACHE_DIR, else $XDG_CACHE_HOME/fsm-runner/clones, else ~/.cache/fsm-runner/clones."""
    if env := os.environ.get("FSM_RUNNER_CACHE_DIR"):
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "fsm-runner" / "clones").absolute()


def _is_bare_repo(path: Path) -> bool:
    layout = (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()
    return layout and not (path / ".git").exists()


def _looks_like_url(spec: str) -> bool:
    return bool(_SCHEME_RE.match(spec) or _SCP_RE.match(spec))


def split_ref(spec: str) -> tuple[str, str | None]:
    """Split ``url@ref`` into (url, ref); an ``@`` before the repository path (``git@host:``) is not a ref."""
    if m := _SCHEME_RE.match(spec):
        slash = spec.find("/", m.end())
        path_start = len(spec) if slash < 0 else slash
    elif m := _SCP_RE.match(spec):
        path_start = m.end()
    else:
        path_start = 0
    head, at, ref = spec[path_start:].rpartition("@")
    if not at:
        return spec, None
    if not ref or not head:
        raise UsageError(f"target {spec!r}: empty ref or path around '@'; write URL@REF, e.g. repo.git@v1")
    return spec[:path_start] + head, ref


class _Git:
    """Runs git non-interactively, in its own session, against one overall deadline."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", SSH_ASKPASS="true")
        if "GIT_SSH_COMMAND" not in os.environ and "GIT_SSH" not in os.environ:
            self.env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"

    def remaining(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TargetError(f"{what}: timed out (limit {self.timeout:g}s)")
        return left

    def __call__(self, *args: str, cwd: Path | None = None, what: str, check: bool = True) -> str:
        remaining = self.remaining(what)
        sub = args[2] if args[0] == "-c" else args[0]
        try:
            done = run_captured(["git", *_HOST_SIDE, *args], cwd=cwd, env=self.env, timeout=remaining)
        except FileNotFoundError as exc:
            raise TargetError(f"{what}: git is not installed or not on PATH") from exc
        if done.timed_out:
            raise TargetError(f"{what}: git {sub} timed out after {self.timeout:g}s")
        if check and done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace")
            tail = "\n".join(err.strip().splitlines()[-_STDERR_TAIL:])
            raise TargetError(f"{what} (git {sub} exit {done.returncode})" + (f"\n{tail}" if tail else ""))
        return done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else ""


def _file_opts(url: str) -> tuple[str, ...]:
    local = url.startswith("file://") or not _looks_like_url(url)
    return ("-c", "protocol.file.allow=always") if local else ()


def _entry_name(url: str) -> str:
    tail = re.split(r"[/:@]", url.rstrip("/"))[-1]  # never a password of a URL without a path
    name = re.sub(r"[^A-Za-z0-9._-]", "_", tail.removesuffix(".git")).strip("._") or "repo"
    # Credentials are not part of the repository's identity: a rotated token finds the same clone and runs.
    key = _USERINFO_RE.sub(r"\1", url)
    return f"{name[:60]}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _verify(git: _Git, repo: Path, rev: str) -> str:
    return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=repo, what="resolve", check=False)


def _resolve(git: _Git, repo: Path, url: str, ref: str | None) -> str:
    """The commit ``ref`` (branch, tag, sha, any fetchable ref) or the default branch names."""
    opts = _file_opts(url)
    if ref is None:
        git(*opts, "remote", "set-head", "origin", "-a", cwd=repo, what="set-head", check=False)
        head = git("symbolic-ref", "-q", "refs/remotes/origin/HEAD", cwd=repo, what="resolve", check=False)
        sha = _verify(git, repo, head) if head else ""
        if not sha:
            raise TargetError(f"{url} has no default branch with commits; pass a ref (URL@REF or ref=)")
        return sha
    sha = _verify(git, repo, f"refs/remotes/origin/{ref}") or _verify(git, repo, f"refs/tags/{ref}")
    if not sha and re.fullmatch(r"[0-9a-fA-F]{4,64}", ref):
        sha = _verify(git, repo, ref)
    if not sha:
        try:
            git(*opts, "fetch", "-q", "origin", ref, cwd=repo, what=f"cannot fetch ref {ref!r}")
        except TargetError as exc:
            raise TargetError(f"ref {ref!r} not found in {url}: {exc}") from None
        sha = _verify(git, repo, "FETCH_HEAD")
    return sha


def _is_clone_of(git: _Git, entry: Path, url: str | None) -> bool:
    if not (entry / ".git").is_dir():
        return False
    top = git("rev-parse", "--show-toplevel", cwd=entry, what="inspect cache", check=False)
    origin = git("config", "--get", "remote.origin.url", cwd=entry, what="inspect cache", check=False)
    return bool(top) and Path(top).resolve() == entry.resolve() and origin == url


@contextlib.contextmanager
def _cache_lock(entry: Path, git: _Git) -> Iterator[None]:
    """The clone entry's lock: fetching, adding and removing checkouts happen one process at a time."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC  # never truncates, never follows a link
    try:
        lock = os.fdopen(os.open(clone_lock(entry), flags, 0o644), "r+")
    except OSError as exc:
        raise TargetError(f"cannot open lock file for {entry}: {exc.strerror}") from None
    with lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                git.remaining(f"wait for lock on {entry} (another run is fetching or checking it out)")
                time.sleep(0.05)
        yield


def _clone(
    url: str, ref: str | None, entry: Path, git: _Git, run_id: str | None, artifacts_dir: Path | None
) -> tuple[Path, str, bool]:
    """Clone or fetch ``url`` into ``entry``, add a checkout of ``ref`` for one run: (checkout, sha, hit)."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(f"cannot create clone cache {entry.parent}: {exc.strerror}") from None
    with _cache_lock(entry, git):
        sha, hit = _fetched(url, ref, entry, git)
        _prune_checkouts(git, entry)
        checkout = _add_checkout(git, entry, sha, run_id, artifacts_dir)
    return checkout, sha, hit


def _fetched(url: str, ref: str | None, entry: Path, git: _Git) -> tuple[str, bool]:
    """Bring the cached clone ``entry`` up to date (cloning it first when missing) and resolve ``ref``:
    (sha, whether the cache was there). The caller holds the cache lock."""
    opts = _file_opts(url)
    hit = entry.exists() and _is_clone_of(git, entry, url)
    if hit:
        fetch = ("fetch", "-q", "--prune", "--tags", "--force", "origin")
        git(*opts, *fetch, cwd=entry, what=f"cannot fetch {url}")
        return _resolve(git, entry, url, ref), hit
    if entry.exists() or entry.is_symlink():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        git(*opts, "clone", "-q", "--no-checkout", "--", url, str(tmp), what=f"cannot clone {url}")
        sha = _resolve(git, tmp, url, ref)
        tmp.rename(entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sha, hit


# -- one checkout per run ------------------------------------------------------------------------------------

#: Run statuses whose checkout is kept after the run ends, so that replay can continue in it.
_RESUMABLE = frozenset({"failed", "interrupted", "running"})


def _add_checkout(git: _Git, clone: Path, sha: str, run_id: str | None, artifacts_dir: Path | None) -> Path:
    """A detached worktree of ``clone`` at ``sha``, named after the run; the run directory is created first
    and named beside the checkout, so that a pruner never takes a checkout whose run is still starting."""
    path = clone_checkouts_dir(clone) / (run_id or new_run_id())
    owner = checkout_owner(path)
    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise TargetError(f"cannot create {path.parent}: {exc.strerror}") from None
    run_dir = None
    if run_id is not None:
        run_dir = create_run_dir((artifacts_dir or clone_runs_dir(clone)).absolute(), run_id)
        write_text_atomic(owner, f"{run_dir}\n")
    try:
        git("worktree", "add", "--detach", str(path), sha, cwd=clone, what=f"cannot check out {sha[:12]}")
    except TargetError:
        owner.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            if run_dir is not None:
                run_dir.rmdir()
        raise
    return path


def _owner_needs(owner: Path) -> bool:
    """Whether the run a checkout belongs to may still use it: live, starting, or resumable by replay."""
    try:
        run_dir = Path(owner.read_text(encoding="utf-8").strip())
    except FileNotFoundError:
        return True  # made without a run (resolve_target without run_id): its caller removes it
    except (OSError, UnicodeDecodeError):
        return False
    if not run_dir.is_absolute() or not run_dir.is_dir():
        return False  # the run is gone
    if lock_holder(run_dir) is not None:
        return True
    if not (run_dir / RUN_JSON).exists() and not (run_dir / JOURNAL).exists():
        return True  # set up a moment ago: its session has not started yet
    try:
        status = read_run(run_dir).status
    except EvidenceError:
        return False  # no run.json to replay from
    return status in _RESUMABLE  # "running" without its lock: the runner died; replay continues it


def _real_dir(path: Path) -> bool:
    """Whether ``path`` itself (not what a symbolic link points to) is a directory."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def checkout_problem(clone: Path, path: Path) -> str | None:
    """Why ``path`` is not a checkout of ``clone`` that may be removed, or None.

    A checkout is a real directory named after a run, directly in the clone's checkouts dir; below the
    clones dir (resolved) no component may be a symbolic link, so a path read from a run.json cannot lead
    the removal anywhere else.
    """
    if single_name_problem(path.name) or path.parent != clone_checkouts_dir(clone):
        return f"{path} is not a checkout of the clone cache {clone}"
    try:
        base = clone.parent.resolve(strict=True)
    except OSError:
        return f"the clone cache {clone.parent} is not there"
    real_clone = base / clone.name
    if not _real_dir(real_clone):
        return f"{real_clone} is not a clone cache entry (not a directory, or a symbolic link)"
    if not _real_dir(clone_checkouts_dir(real_clone)) or not _real_dir(
        clone_checkouts_dir(real_clone) / path.name
    ):
        return f"{path} is not a directory of its own (missing, or a symbolic link is on its path)"
    return None


def _drop(git: _Git, clone: Path, path: Path) -> None:
    """Remove one checkout of ``clone`` (only ever a real directory in the clone's checkouts dir)."""
    if os.path.islink(path) and path.parent == clone_checkouts_dir(clone) and _real_dir(path.parent):
        path.unlink()  # a link in the checkouts dir goes; what it points to stays
        checkout_owner(path).unlink(missing_ok=True)
        return
    if problem := checkout_problem(clone, path):
        raise TargetError(f"{problem}; not removing it")
    real = clone_checkouts_dir(clone.parent.resolve() / clone.name) / path.name
    if clone.is_dir():
        git("worktree", "remove", "--force", str(real), cwd=clone, what=f"remove {path}", check=False)
    if _real_dir(real):
        shutil.rmtree(real, ignore_errors=True)  # not (or no longer) registered with the clone
    checkout_owner(real).unlink(missing_ok=True)


def _prune_checkouts(git: _Git, clone: Path) -> None:
    """Remove the checkouts whose run is gone, finished ok or was closed (nothing can continue it)."""
    root = clone_checkouts_dir(clone)
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return
    dropped = False
    for path in entries:
        if path.name.endswith(CHECKOUT_OWNER_SUFFIX):
            if not path.with_name(path.name.removesuffix(CHECKOUT_OWNER_SUFFIX)).exists():
                path.unlink(missing_ok=True)  # its checkout was never made, or was deleted by hand
                dropped = True
        elif (_real_dir(path) or path.is_symlink()) and not _owner_needs(checkout_owner(path)):
            _drop(git, clone, path)
            dropped = True
    if dropped:  # also forgets checkouts deleted by hand
        git("worktree", "prune", cwd=clone, what="prune checkouts", check=False)


def remove_checkout(target: ResolvedTarget, *, run_id: str | None = None, timeout: float = 60) -> None:
    """Remove a git target's private checkout, under the clone's lock; the run's evidence lives elsewhere.

    With ``run_id`` the checkout is the one named after that run, whatever ``target.repo_root`` says (a
    target read back from a run.json names paths nobody checked). Anything but a real checkout directory of
    ``target.clone`` is refused with a :class:`TargetError`.
    """
    if target.clone is None or target.kind != "git":
        return
    path = target.repo_root if run_id is None else clone_checkouts_dir(target.clone) / run_id
    remove_run_checkout(target.clone, path.name, timeout=timeout, path=path)


def remove_run_checkout(clone: Path, run_id: str, *, timeout: float = 60, path: Path | None = None) -> None:
    """Remove the checkout of ``clone`` named after ``run_id`` (nothing when there is none); refuses
    (:class:`TargetError`) anything :func:`checkout_problem` names, before the clone's lock is opened."""
    path = clone_checkouts_dir(clone) / run_id if path is None else path
    if not os.path.lexists(path):
        return
    if not os.path.islink(path) and (problem := checkout_problem(clone, path)):
        raise TargetError(f"{problem}; not removing it")
    git = _Git(timeout)
    with _cache_lock(clone, git):
        _drop(git, clone, path)
        if clone.is_dir():
            git("worktree", "prune", cwd=clone, what="prune checkouts", check=False)


def restore_checkout(target: ResolvedTarget, run_dir: Path, *, timeout: float = 300) -> bool:
    """Re-create a git run's removed checkout at its recorded commit from the clone cache (no network).

    Returns False when there is nothing to do (a local target, or the checkout is still there, with
    whatever fixes were made in it); raises :class:`TargetError` saying what to do when the cache cannot.
    """
    path, clone = target.repo_root, target.clone
    if clone is None or path.exists():
        return False
    url = strip_credentials(target.url or target.spec)
    hint = f"start a new run instead: fsm-runner run {url}@{target.commit}"
    if not target.commit or path.parent != clone_checkouts_dir(clone) or single_name_problem(path.name):
        raise TargetError(f"{path} is not a checkout of the clone cache {clone}; not re-creating it; {hint}")
    git = _Git(timeout)
    if not _is_clone_of(git, clone, target.url):
        raise TargetError(f"the checkout {path} was removed and so was its clone cache entry {clone}; {hint}")
    with _cache_lock(clone, git):
        if not _verify(git, clone, target.commit):
            raise TargetError(f"commit {target.commit[:12]} is no longer in the clone cache {clone}; {hint}")
        git("worktree", "prune", cwd=clone, what="prune checkouts", check=False)
        write_text_atomic(checkout_owner(path), f"{run_dir.absolute()}\n")
        add = ("worktree", "add", "--detach", str(path), target.commit)
        git(*add, cwd=clone, what=f"cannot re-create {path}")
    return True


def with_url_credentials(target: ResolvedTarget, *, timeout: float = 30) -> ResolvedTarget:
    """A git target as run.json recorded it, with the credentials of its URL back (read from the clone's
    origin, when that is the same URL): run.json never holds them, but replay needs the real URL to find
    the clone, and the run's redactor needs the token to mask it."""
    url = target.url
    if target.clone is None or not url or "://***@" not in url:
        return target  # not a git target, or it had no credentials
    config = target.clone / ".git" / "config"
    try:
        done = run_captured(
            ["git", "config", "--file", str(config), "--get", "remote.origin.url"], timeout=timeout
        )
    except OSError:
        return target
    origin = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0 or strip_credentials(origin) != url:
        return target
    spec = origin + target.spec[len(url) :] if target.spec.startswith(url) else target.spec
    return attrs.evolve(target, url=origin, spec=spec)


# -- naming a target -----------------------------------------------------------------------------------------


def _split_target(target: str | os.PathLike[str], ref: str | None) -> tuple[str, str | None, Path | None]:
    """``(url, ref, None)`` for a git target, ``(spec, None, directory)`` for a work tree used in place.

    Reads the file system only: no git and no network.
    """
    spec = os.fspath(target)
    if not spec.strip():
        raise UsageError("target is empty; pass a directory or a git URL")
    whole = not isinstance(target, str) or Path(spec).expanduser().exists()
    url, spec_ref = (spec, None) if whole else split_ref(spec)
    if spec_ref is not None and ref is not None and spec_ref != ref:
        raise UsageError(f"target {spec!r} names ref {spec_ref!r} but ref={ref!r} was also given; pass one")
    ref = ref if ref is not None else spec_ref
    if ref is not None and (not ref.strip() or ref.startswith("-") or not ref.isprintable() or " " in ref):
        raise UsageError(f"ref {ref!r} is not a valid ref; pass a branch, tag or commit sha")
    path = Path(url).expanduser()
    if not _looks_like_url(url) or path.exists():
        if not path.exists():
            raise TargetError(f"target path {path.absolute()} does not exist; pass a directory or a git URL")
        if not path.is_dir():
            raise TargetError(f"target path {path} is not a directory; pass a repository or a git URL")
        path = path.resolve()
        if not _is_bare_repo(path):
            if ref is not None:
                raise UsageError(f"ref {ref!r} given for local directory {path}, which is used in place; "
                                 "check the ref out there yourself or pass a git URL")  # fmt: skip
            return spec, None, path
        return str(path), ref, None
    problem = url_scheme_problem(url)
    if problem:
        raise TargetError(f"target {url!r}: {problem}")
    return url, ref, None


def url_scheme_problem(url: str) -> str | None:
    """Why git cannot fetch ``url`` by its scheme (``ftp://``), or None."""
    scheme = _SCHEME_RE.match(url)
    if scheme and scheme[1].lower() not in _SUPPORTED_SCHEMES:
        return f"unsupported URL scheme {scheme[1]!r}; use https, ssh or file"
    return None


def _entry(url: str, clones_dir: Path | None) -> Path:
    return (clones_dir or default_clones_dir()).absolute() / _entry_name(url)


def url_clone(spec: str, clones_dir: Path | None = None) -> Path | None:
    """The clone cache entry of the git target ``spec`` (whether or not it was cloned yet); None when
    ``spec`` is a local work tree. Needs no git and no network."""
    try:
        url, _, local = _split_target(spec, None)
    except TargetError:
        return None
    return None if local is not None else _entry(url, clones_dir)


def url_runs_root(spec: str, clones_dir: Path | None = None) -> Path | None:
    """Where the runs of the git target ``spec`` (``URL`` or ``URL@REF``, any ref) live unless they were
    given an ``artifacts_dir``; None when ``spec`` is a local work tree. Needs no git and no network."""
    clone = url_clone(spec, clones_dir)  # None: a path that does not exist, or not a URL this runner clones
    return None if clone is None else clone_runs_dir(clone)


def resolve_target(
    target: str | os.PathLike[str],
    *,
    clones_dir: Path | None = None,
    ref: str | None = None,
    timeout: float = 300,
    run_id: str | None = None,
    artifacts_dir: Path | None = None,
) -> ResolvedTarget:
    """Resolve ``target`` to a repository root: a local work tree in place, or, for a git URL, a fresh
    checkout of the clone cache named after ``run_id``.

    With ``run_id``, the run's directory (under ``artifacts_dir``, else beside the clone) is created and
    the checkout belongs to that run: it is removed when the run ends well (:func:`remove_checkout`, which
    ``Session.close`` calls) or by a later resolve once the run is gone. Without it, the checkout is the
    caller's to remove.
    """
    if run_id is not None and (problem := single_name_problem(run_id)):
        raise UsageError(f"invalid run id: {problem}")
    git = _Git(timeout)
    spec = os.fspath(target)
    url, ref, local = _split_target(target, ref)
    if local is not None:
        commit = git("rev-parse", "--verify", "--quiet", "HEAD", cwd=local, what="read HEAD", check=False)
        return ResolvedTarget(spec=spec, repo_root=local, kind="local", commit=commit or None)
    entry = _entry(url, clones_dir)
    try:
        checkout, commit, hit = _clone(url, ref, entry, git, run_id, artifacts_dir)
    except TargetError as exc:  # never echo a password or token embedded in the URL
        raise TargetError(strip_credentials(str(exc))) from None
    return ResolvedTarget(spec, checkout, "git", url=url, ref=ref, commit=commit, cache_hit=hit, clone=entry)


# -- outputs that must not be committed --------------------------------------------------------------------


def tracked_files(repo_root: Path, rels: list[str], *, timeout: float = 30) -> set[str]:
    """Which of ``rels`` (relative to ``repo_root``) git tracks there; none when git is missing or
    ``repo_root`` is not inside a work tree."""
    if not rels:
        return set()
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        argv = ["git", *_HOST_SIDE, "ls-files", "-z", "--", *rels]
        done = run_captured(argv, cwd=repo_root, env=env, timeout=timeout)
    except OSError:
        return set()
    if done.returncode != 0 or done.timed_out:
        return set()
    return {posixpath.normpath(name) for name in done.stdout.decode("utf-8", "replace").split("\0") if name}


def refuse_committed_outputs(repo_root: Path, pipeline: PipelineSpec, pipeline_rel: str) -> None:
    """A file a run writes must not be committed: a leftover output is moved into the evidence before its
    phase runs, which would take a tracked file out of the work tree. Raises :class:`ContractError` naming
    the file and the key that makes it an output."""
    outputs = run_outputs(pipeline, repo_root)
    tracked = tracked_files(repo_root, [out.rel for out in outputs])
    for out in outputs:
        if posixpath.normpath(out.rel) not in tracked:
            continue
        if out.key.endswith(".metrics_path"):
            instead = f", or point {out.key} at a file that is not committed"
        elif out.named_in:
            instead = f", or delete the leftover {out.named_in}"
        else:
            instead = ""
        raise ContractError(
            f"{out.rel} is committed to git, but every run writes it (and first moves a leftover copy into "
            f"its evidence); untrack it with `git rm --cached {out.rel}` and add it to .gitignore{instead}",
            path=out.named_in or pipeline_rel,
            key=out.key,
        )


# -- what a run would see now ------------------------------------------------------------------------------


def current_contract(
    target: str | os.PathLike[str],
    *,
    pipeline_rel: str = PIPELINE_REL,
    clones_dir: Path | None = None,
    timeout: float = 300,
) -> tuple[str | None, str | None]:
    """(commit, sha256 of the pipeline file) that a run of ``target`` started now would record, without a
    run: a local tree's HEAD (None outside git) and its pipeline file; a git URL fetched into the clone cache
    and the pipeline file at the resolved commit (no checkout is made). The hash is None when the file is
    missing. Raises TargetError or UsageError as :func:`resolve_target` does."""
    git = _Git(timeout)
    url, ref, local = _split_target(target, None)
    if local is not None:
        commit = git("rev-parse", "--verify", "--quiet", "HEAD", cwd=local, what="read HEAD", check=False)
        try:
            data: bytes | None = (local / pipeline_rel).read_bytes()
        except OSError:
            data = None
        return commit or None, hashlib.sha256(data).hexdigest() if data is not None else None
    entry = _entry(url, clones_dir)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with _cache_lock(entry, git):
            sha, _ = _fetched(url, ref, entry, git)
    except TargetError as exc:
        raise TargetError(strip_credentials(str(exc))) from None
    except OSError as exc:
        raise TargetError(f"cannot create clone cache {entry.parent}: {exc.strerror}") from None
    shown = run_captured(
        ["git", *_HOST_SIDE, "cat-file", "blob", f"{sha}:{pipeline_rel}"],
        cwd=entry,
        env=git.env,
        timeout=git.remaining("read the pipeline file"),
    )
    if shown.timed_out or shown.returncode != 0:
        return sha, None
    return sha, hashlib.sha256(shown.stdout).hexdigest()
