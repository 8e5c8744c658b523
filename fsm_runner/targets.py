"""Resolve the target the user names (a local directory or a git URL) to a checked-out repository root.

Local work trees are used in place so the user's edits are what runs; remote or bare repositories are cloned
once into a cache and refreshed on later runs, so repeat runs are cheap and still reflect the requested ref.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import time
from pathlib import Path

from fsm_runner.contract.outputs import run_outputs
from fsm_runner.contract.pipeline import PipelineSpec
from fsm_runner.errors import ContractError, TargetError, UsageError
from fsm_runner.evidence.records import ResolvedTarget, strip_credentials
from fsm_runner.execution.process import run_captured

__all__ = [
    "ResolvedTarget",
    "default_clones_dir",
    "refuse_committed_outputs",
    "resolve_target",
    "split_ref",
    "tracked_files",
]

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
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
            done = run_captured(["git", *args], cwd=cwd, env=self.env, timeout=remaining)
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
    tail = re.split(r"[/:]", url.rstrip("/"))[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", tail.removesuffix(".git")).strip("._") or "repo"
    return f"{name[:60]}-{hashlib.sha1(url.encode()).hexdigest()[:10]}"


def _verify(git: _Git, repo: Path, rev: str) -> str:
    return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", cwd=repo, what="resolve", check=False)


def _checkout(git: _Git, repo: Path, url: str, ref: str | None) -> str:
    """Check out ``ref`` (branch, tag, sha, any fetchable ref) or the default branch; return its sha."""
    branch: str | None = None
    opts = _file_opts(url)
    if ref is None:
        git(*opts, "remote", "set-head", "origin", "-a", cwd=repo, what="set-head", check=False)
        head = git("symbolic-ref", "-q", "refs/remotes/origin/HEAD", cwd=repo, what="resolve", check=False)
        sha = _verify(git, repo, head) if head else ""
        if not sha:
            raise TargetError(f"{url} has no default branch with commits; pass a ref (URL@REF or ref=)")
        branch = head.removeprefix("refs/remotes/origin/")
    elif sha := _verify(git, repo, f"refs/remotes/origin/{ref}"):
        branch = ref
    else:
        sha = _verify(git, repo, f"refs/tags/{ref}")
        if not sha and re.fullmatch(r"[0-9a-fA-F]{4,64}", ref):
            sha = _verify(git, repo, ref)
        if not sha:
            try:
                git(*opts, "fetch", "-q", "origin", ref, cwd=repo, what=f"cannot fetch ref {ref!r}")
            except TargetError as exc:
                raise TargetError(f"ref {ref!r} not found in {url}: {exc}") from None
            sha = _verify(git, repo, "FETCH_HEAD")
    if branch:
        git("checkout", "--quiet", "--force", "-B", branch, sha, cwd=repo, what=f"cannot check out {branch}")
    else:
        git("checkout", "--quiet", "--force", "--detach", sha, cwd=repo, what=f"cannot check out {ref}")
    git("reset", "--quiet", "--hard", sha, cwd=repo, what=f"cannot reset to {sha[:12]}")
    return sha


def _is_clone_of(git: _Git, entry: Path, url: str) -> bool:
    if not (entry / ".git").is_dir():
        return False
    top = git("rev-parse", "--show-toplevel", cwd=entry, what="inspect cache", check=False)
    origin = git("config", "--get", "remote.origin.url", cwd=entry, what="inspect cache", check=False)
    return bool(top) and Path(top).resolve() == entry.resolve() and origin == url


def _clone(url: str, ref: str | None, clones_dir: Path, git: _Git) -> tuple[Path, str, bool]:
    try:
        clones_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TargetError(f"cannot create clone cache {clones_dir}: {exc.strerror}") from None
    entry, opts = clones_dir / _entry_name(url), _file_opts(url)
    try:
        lock = open(entry.with_name(entry.name + ".lock"), "w")  # noqa: SIM115 - held for the whole block below
    except OSError as exc:
        raise TargetError(f"cannot open lock file for {entry}: {exc.strerror}") from None
    with lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                git.remaining(f"wait for lock on {entry} (another run is cloning it)")
                time.sleep(0.05)
        if entry.exists() and _is_clone_of(git, entry, url):
            git(
                *opts,
                "fetch",
                "-q",
                "--prune",
                "--tags",
                "--force",
                "origin",
                cwd=entry,
                what=f"cannot fetch {url}",
            )
            return entry, _checkout(git, entry, url, ref), True
        if entry.exists() or entry.is_symlink():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=clones_dir))
        try:
            git(*opts, "clone", "-q", "--no-checkout", "--", url, str(tmp), what=f"cannot clone {url}")
            sha = _checkout(git, tmp, url, ref)
            tmp.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return entry, sha, False


def resolve_target(
    target: str | os.PathLike[str],
    *,
    clones_dir: Path | None = None,
    ref: str | None = None,
    timeout: float = 300,
) -> ResolvedTarget:
    """Resolve ``target`` to a repository root; clone or refresh git targets in the cache (see module doc)."""
    spec = os.fspath(target)
    if not spec.strip():
        raise UsageError("target is empty; pass a directory or a git URL")
    git = _Git(timeout)
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
            commit = git("rev-parse", "--verify", "--quiet", "HEAD", cwd=path, what="read HEAD", check=False)
            return ResolvedTarget(spec=spec, repo_root=path, kind="local", commit=commit or None)
        url = str(path)
    else:
        scheme = _SCHEME_RE.match(url)
        if scheme and scheme[1].lower() not in _SUPPORTED_SCHEMES:
            raise TargetError(f"target {url!r}: unsupported URL scheme {scheme[1]!r}; use https, ssh or file")
    try:
        root, commit, hit = _clone(url, ref, (clones_dir or default_clones_dir()).absolute(), git)
    except TargetError as exc:  # never echo a password or token embedded in the URL
        raise TargetError(strip_credentials(str(exc))) from None
    return ResolvedTarget(spec, root, "git", url=url, ref=ref, commit=commit, cache_hit=hit)


# -- outputs that must not be committed --------------------------------------------------------------------


def tracked_files(repo_root: Path, rels: list[str], *, timeout: float = 30) -> set[str]:
    """Which of ``rels`` (relative to ``repo_root``) git tracks there; none when git is missing or
    ``repo_root`` is not inside a work tree."""
    if not rels:
        return set()
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        done = run_captured(["git", "ls-files", "-z", "--", *rels], cwd=repo_root, env=env, timeout=timeout)
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
