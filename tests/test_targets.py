"""Target resolution against real git repositories built in tmp_path (no network)."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import attrs
import pytest

from fsm_runner.errors import TargetError, UsageError
from fsm_runner.evidence.layout import checkout_owner, clone_checkouts_dir, clone_lock, clone_runs_dir
from fsm_runner.evidence.records import strip_credentials
from fsm_runner.targets import (
    ResolvedTarget,
    _entry_name,
    default_clones_dir,
    remove_checkout,
    resolve_target,
    restore_checkout,
    split_ref,
    tracked_files,
    url_runs_root,
    with_url_credentials,
)

GIT_ID = ("-c", "user.email=fsm@example.invalid", "-c", "user.name=fsm test", "-c", "commit.gpgsign=false")


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *GIT_ID, *args], cwd=cwd, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return done.stdout.strip()


def commit(work: Path, name: str, text: str) -> str:
    (work / name).write_text(text)
    git(work, "add", name)
    git(work, "commit", "-q", "-m", f"{name}={text}")
    return git(work, "rev-parse", "HEAD")


@attrs.define
class Upstream:
    work: Path
    bare: Path
    shas: dict[str, str]

    @property
    def file_url(self) -> str:
        return self.bare.as_uri()

    def push_commit(self, text: str, branch: str = "main") -> str:
        git(self.work, "checkout", "-q", branch)
        sha = commit(self.work, "app.txt", text)
        git(self.work, "push", "-q", "origin", branch)
        return sha


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user or system git config, and no real cache dir, may leak into a test."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("FSM_RUNNER_CACHE_DIR", str(tmp_path / "env-cache"))


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    """main: c1 (tag v1) -> c3; feature: c1 -> c2; served from a bare clone origin.git."""
    work = tmp_path / "src"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    shas = {"c1": commit(work, "app.txt", "one")}
    git(work, "tag", "-a", "v1", "-m", "release 1")
    git(work, "checkout", "-q", "-b", "feature")
    shas["c2"] = commit(work, "app.txt", "feature")
    git(work, "checkout", "-q", "main")
    shas["c3"] = commit(work, "app.txt", "three")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))
    return Upstream(work=work, bare=bare, shas=shas)


@pytest.fixture
def clones(tmp_path: Path) -> Path:
    return tmp_path / "clones"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("https://github.com/org/repo.git", ("https://github.com/org/repo.git", None)),
        ("https://github.com/org/repo.git@v1.2", ("https://github.com/org/repo.git", "v1.2")),
        ("https://host:8443/org/repo.git@main", ("https://host:8443/org/repo.git", "main")),
        ("https://user@host:8443/org/repo.git", ("https://user@host:8443/org/repo.git", None)),
        ("https://user@host/org/repo@feature/x", ("https://user@host/org/repo", "feature/x")),
        ("http://host/repo", ("http://host/repo", None)),
        ("git@github.com:org/repo.git", ("git@github.com:org/repo.git", None)),
        ("git@github.com:org/repo.git@v1", ("git@github.com:org/repo.git", "v1")),
        ("github.com:org/repo@0123abcd", ("github.com:org/repo", "0123abcd")),
        ("ssh://git@host:2222/org/repo.git@release/2", ("ssh://git@host:2222/org/repo.git", "release/2")),
        ("ssh://git@host/org/repo.git", ("ssh://git@host/org/repo.git", None)),
        ("file:///tmp/x.git@main", ("file:///tmp/x.git", "main")),
        ("file:///tmp/x.git", ("file:///tmp/x.git", None)),
        ("/srv/repos/x.git@v2", ("/srv/repos/x.git", "v2")),
        ("relative/dir", ("relative/dir", None)),
    ],
)
def test_split_ref_table(spec: str, expected: tuple[str, str | None]) -> None:
    assert split_ref(spec) == expected


@pytest.mark.parametrize("spec", ["https://host/org/repo.git@", "git@host:@v1", "/srv/x.git@"])
def test_split_ref_rejects_empty_halves(spec: str) -> None:
    with pytest.raises(UsageError, match="URL@REF"):
        split_ref(spec)


def test_default_clones_dir_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_clones_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("FSM_RUNNER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_clones_dir() == tmp_path / "xdg" / "fsm-runner" / "clones"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_clones_dir() == tmp_path / "home" / ".cache" / "fsm-runner" / "clones"


def test_default_cache_dir_is_used_without_clones_dir(upstream: Upstream, tmp_path: Path) -> None:
    resolved = resolve_target(upstream.file_url)
    assert resolved.clone is not None and resolved.clone.parent == tmp_path / "env-cache"
    assert resolved.repo_root.parent == clone_checkouts_dir(resolved.clone)
    assert (resolved.repo_root / "app.txt").read_text() == "three"


def test_plain_local_dir_is_used_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clones: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.chdir(tmp_path)
    resolved = resolve_target("plain", clones_dir=clones)
    assert resolved == ResolvedTarget(spec="plain", repo_root=plain.resolve(), kind="local")
    assert not clones.exists()


def test_local_work_tree_records_head_commit(upstream: Upstream, clones: Path) -> None:
    resolved = resolve_target(upstream.work, clones_dir=clones)
    assert (resolved.kind, resolved.repo_root, resolved.commit) == (
        "local",
        upstream.work,
        upstream.shas["c3"],
    )
    assert resolved.spec == str(upstream.work) and resolved.url is None and not resolved.cache_hit


def test_local_dir_rejects_ref(upstream: Upstream) -> None:
    with pytest.raises(UsageError, match="used in place"):
        resolve_target(upstream.work, ref="v1")


@pytest.mark.parametrize("spec", ["does/not/exist", "/no/such/dir@main"])
def test_nonexistent_path_error(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TargetError, match="does not exist"):
        resolve_target(spec)


def test_file_is_not_a_target(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(TargetError, match="not a directory"):
        resolve_target(tmp_path / "f.txt")


@pytest.mark.parametrize("form", ["bare", "file_url"])
def test_git_target_is_cloned_at_default_branch(upstream: Upstream, clones: Path, form: str) -> None:
    url = str(upstream.bare) if form == "bare" else upstream.file_url
    resolved = resolve_target(url, clones_dir=clones)
    assert (resolved.kind, resolved.url, resolved.ref, resolved.cache_hit) == ("git", url, None, False)
    assert resolved.commit == upstream.shas["c3"]
    clone = resolved.clone
    assert clone is not None and clone.parent == clones
    assert clone.name.startswith("origin-") and len(clone.name) == len("origin-") + 10
    assert resolved.repo_root.parent == clones / f"{clone.name}.checkouts"
    assert (resolved.repo_root / "app.txt").read_text() == "three"
    assert git(resolved.repo_root, "rev-parse", "HEAD") == upstream.shas["c3"]
    assert git(resolved.repo_root, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached
    assert not (clone / "app.txt").exists()  # the shared clone is never checked out


@pytest.mark.parametrize("form", ["bare", "file_url"])
@pytest.mark.parametrize(
    ("ref", "sha_key", "text"), [("v1", "c1", "one"), ("feature", "c2", "feature"), ("sha", "c1", "one")]
)
def test_url_at_ref(upstream: Upstream, clones: Path, form: str, ref: str, sha_key: str, text: str) -> None:
    ref = upstream.shas[sha_key] if ref == "sha" else ref
    url = str(upstream.bare) if form == "bare" else upstream.file_url
    via_spec = resolve_target(f"{url}@{ref}", clones_dir=clones)
    assert (via_spec.url, via_spec.ref, via_spec.commit) == (url, ref, upstream.shas[sha_key])
    assert (via_spec.repo_root / "app.txt").read_text() == text
    via_kwarg = resolve_target(url, clones_dir=clones, ref=ref)
    assert via_kwarg.clone == via_spec.clone and via_kwarg.cache_hit
    assert via_kwarg.repo_root != via_spec.repo_root and (via_kwarg.repo_root / "app.txt").read_text() == text
    assert via_kwarg.commit == upstream.shas[sha_key]


def test_conflicting_refs_are_a_usage_error(upstream: Upstream, clones: Path) -> None:
    with pytest.raises(UsageError, match="'v1'.*'main'"):
        resolve_target(f"{upstream.file_url}@v1", clones_dir=clones, ref="main")
    assert (
        resolve_target(f"{upstream.file_url}@v1", clones_dir=clones, ref="v1").commit == upstream.shas["c1"]
    )


@pytest.mark.parametrize("ref", ["-oops", "", "a b"])
def test_invalid_ref_rejected(upstream: Upstream, clones: Path, ref: str) -> None:
    with pytest.raises(UsageError, match="not a valid ref"):
        resolve_target(upstream.file_url, clones_dir=clones, ref=ref)


def test_refresh_picks_up_new_commit_in_a_checkout_of_its_own(upstream: Upstream, clones: Path) -> None:
    first = resolve_target(upstream.file_url, clones_dir=clones)
    (first.repo_root / "app.txt").write_text("local edit")
    (first.repo_root / "evidence.log").write_text("kept")
    new = upstream.push_commit("four")
    second = resolve_target(upstream.file_url, clones_dir=clones)
    assert (second.clone, second.cache_hit, second.commit) == (first.clone, True, new)
    assert (second.repo_root / "app.txt").read_text() == "four"
    assert not (second.repo_root / "evidence.log").exists()
    assert (first.repo_root / "app.txt").read_text() == "local edit"  # the first checkout is untouched
    assert (first.repo_root / "evidence.log").read_text() == "kept"


def test_refresh_follows_branch_and_default_branch_moves(upstream: Upstream, clones: Path) -> None:
    assert resolve_target(str(upstream.bare), clones_dir=clones, ref="feature").commit == upstream.shas["c2"]
    moved = upstream.push_commit("feature 2", branch="feature")
    assert resolve_target(str(upstream.bare), clones_dir=clones, ref="feature").commit == moved
    git(upstream.bare, "symbolic-ref", "HEAD", "refs/heads/feature")
    back = resolve_target(str(upstream.bare), clones_dir=clones)
    assert (back.commit, back.cache_hit) == (moved, True)
    assert git(back.repo_root, "rev-parse", "HEAD") == moved


def test_missing_ref_error_leaves_no_entry(upstream: Upstream, clones: Path) -> None:
    with pytest.raises(TargetError, match="ref 'nope' not found in file://") as info:
        resolve_target(f"{upstream.file_url}@nope", clones_dir=clones)
    assert len(str(info.value).splitlines()) <= 11
    assert [p.suffix for p in clones.iterdir()] == [".lock"]
    root = resolve_target(upstream.file_url, clones_dir=clones).repo_root
    with pytest.raises(TargetError, match="not found"):
        resolve_target(upstream.file_url, clones_dir=clones, ref="nope")
    assert (root / "app.txt").read_text() == "three"


@pytest.mark.parametrize("kind", ["plain_dir", "missing"])
def test_not_a_repo_error(tmp_path: Path, clones: Path, kind: str) -> None:
    target = tmp_path / "notrepo"
    if kind == "plain_dir":
        target.mkdir()
    with pytest.raises(
        TargetError, match=r"cannot clone file://.*\(git clone exit 128\)\n.*repository"
    ) as info:
        resolve_target(target.as_uri(), clones_dir=clones)
    assert len(str(info.value).splitlines()) <= 11
    assert [p.suffix for p in clones.iterdir()] == [".lock"]


def test_empty_bare_repo_has_no_default_branch(tmp_path: Path, clones: Path) -> None:
    git(tmp_path, "init", "-q", "--bare", "empty.git")
    with pytest.raises(TargetError, match="no default branch"):
        resolve_target(tmp_path / "empty.git", clones_dir=clones)


def test_unsupported_scheme(clones: Path) -> None:
    with pytest.raises(TargetError, match="unsupported URL scheme 'ftp'"):
        resolve_target("ftp://host/repo.git", clones_dir=clones)


@pytest.mark.parametrize("damage", ["junk_dir", "wrong_origin", "file"])
def test_corrupt_cache_entry_is_recloned(upstream: Upstream, clones: Path, damage: str) -> None:
    root = resolve_target(upstream.file_url, clones_dir=clones).clone
    assert root is not None
    if damage == "junk_dir":
        shutil.rmtree(root / ".git")
        (root / "junk").write_text("x")
    elif damage == "wrong_origin":
        git(root, "remote", "set-url", "origin", "file:///elsewhere.git")
    else:
        shutil.rmtree(root)
        root.write_text("not a dir")
    again = resolve_target(upstream.file_url, clones_dir=clones)
    assert (again.clone, again.cache_hit, again.commit) == (root, False, upstream.shas["c3"])
    assert not (root / "junk").exists() and (again.repo_root / "app.txt").read_text() == "three"


def test_entry_names_are_stable_and_distinct(upstream: Upstream, clones: Path) -> None:
    a = resolve_target(upstream.file_url, clones_dir=clones).clone
    b = resolve_target(upstream.bare, clones_dir=clones).clone
    assert a is not None and b is not None
    assert a != b and a.name.split("-")[0] == b.name.split("-")[0] == "origin"
    assert resolve_target(upstream.file_url, clones_dir=clones).clone == a


def test_concurrent_resolves_share_one_entry(upstream: Upstream, clones: Path) -> None:
    results: list[ResolvedTarget] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_target(upstream.file_url, clones_dir=clones)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.clone for r in results}) == 1 and {r.commit for r in results} == {upstream.shas["c3"]}
    assert len({r.repo_root for r in results}) == 3  # one checkout each
    assert all((r.repo_root / "app.txt").read_text() == "three" for r in results)
    assert sorted(r.cache_hit for r in results) == [False, True, True]


def test_held_lock_times_out_instead_of_hanging(upstream: Upstream, clones: Path) -> None:
    clone = resolve_target(upstream.file_url, clones_dir=clones).clone
    assert clone is not None
    with open(clone_lock(clone), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TargetError, match="wait for lock"):
            resolve_target(upstream.file_url, clones_dir=clones, timeout=0.3)


def test_hanging_transport_is_killed_at_timeout(
    clones: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transport that never answers (like a credential prompt) is killed, children too, at the deadline."""
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {tmp_path}/child.pid\nwait\n")
    fake_ssh.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(fake_ssh))
    started = time.monotonic()
    with pytest.raises(TargetError, match="timed out after 0.5s"):
        resolve_target("ssh://git@localhost/org/repo.git", clones_dir=clones, timeout=0.5)
    assert time.monotonic() - started < 5
    stat = Path(f"/proc/{(tmp_path / 'child.pid').read_text().strip()}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_to_json_and_validators(upstream: Upstream, clones: Path) -> None:
    resolved = resolve_target(f"{upstream.file_url}@v1", clones_dir=clones)
    data = json.loads(json.dumps(resolved.to_json()))
    assert data == {
        "spec": f"{upstream.file_url}@v1",
        "repo_root": str(resolved.repo_root),
        "kind": "git",
        "url": upstream.file_url,
        "ref": "v1",
        "commit": upstream.shas["c1"],
        "cache_hit": False,
        "clone": str(resolved.clone),
    }
    with pytest.raises(ValueError, match="absolute"):
        ResolvedTarget(spec="x", repo_root=Path("rel"), kind="local")
    with pytest.raises(ValueError, match="kind"):
        ResolvedTarget(spec="x", repo_root=Path("/x"), kind="svn")


def test_errors_do_not_echo_url_passwords(clones: Path) -> None:
    with pytest.raises(TargetError, match=r"cannot clone http://\*\*\*@127\.0\.0\.1:9/") as info:
        resolve_target("http://bob:s3cret-token@127.0.0.1:9/org/repo.git", clones_dir=clones, timeout=30)
    assert "s3cret-token" not in str(info.value) and "bob" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://ghp-usertoken-77@127.0.0.1:9/org/repo.git",
        "http://ghp-usertoken-77@127.0.0.1:9",
        "http://bob:ghp-usertoken-77@127.0.0.1:9",
    ],
)
def test_a_url_token_is_in_no_error_and_no_cache_name(clones: Path, url: str) -> None:
    with pytest.raises(TargetError) as info:
        resolve_target(url, clones_dir=clones, timeout=30)
    assert "ghp-usertoken" not in str(info.value) and "http://***@127.0.0.1:9" in str(info.value)
    assert "ghp-usertoken" not in _entry_name(url)
    assert [p for p in clones.rglob("*") if "ghp-usertoken" in p.name] == []


def test_replay_gets_a_url_token_back_from_the_clone(upstream: Upstream, clones: Path) -> None:
    """run.json keeps the URL without its token; the clone's origin still has it, and replay needs it."""
    resolved = resolve_target(upstream.file_url, clones_dir=clones)
    assert resolved.clone is not None
    real = "http://tok-from-clone-9@127.0.0.1:9/org/repo.git"
    git(resolved.clone, "config", "remote.origin.url", real)
    recorded = attrs.evolve(resolved, url=strip_credentials(real), spec=strip_credentials(real) + "@v1")
    again = with_url_credentials(recorded)
    assert (again.url, again.spec) == (real, real + "@v1")
    other = attrs.evolve(recorded, url="http://***@127.0.0.1:9/other.git")
    assert with_url_credentials(other) == other  # the clone is not of that URL: left as recorded
    assert with_url_credentials(resolved) == resolved  # nothing was stripped


# -- tracked outputs -------------------------------------------------------------------------------------


def test_tracked_files_are_relative_to_the_target_even_inside_a_larger_repo(upstream: Upstream) -> None:
    work = upstream.work
    (work / "bench" / "out").mkdir(parents=True)
    commit(work, "bench/out/metrics.json", "{}")
    (work / "bench" / "out" / "untracked.json").write_text("{}")
    assert tracked_files(work, ["app.txt", "./app.txt", "missing.txt"]) == {"app.txt"}
    # A target in a subdirectory of a repository (examples/arith_bench in this one) names paths from there.
    sub = work / "bench"
    assert tracked_files(sub, ["out/metrics.json", "out/untracked.json"]) == {"out/metrics.json"}
    assert tracked_files(sub, []) == set()


def test_no_tracked_files_outside_a_repo_or_without_git(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "m.json").write_text("{}")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert tracked_files(plain, ["m.json"]) == set()
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert tracked_files(upstream.work, ["app.txt"]) == set()


# -- one checkout per run --------------------------------------------------------------------------------

RUN_ID = "20260101T000000Z-abcdef"


def test_a_run_checkout_is_named_after_the_run_and_names_its_run_dir(
    upstream: Upstream, clones: Path, tmp_path: Path
) -> None:
    resolved = resolve_target(f"{upstream.file_url}@v1", clones_dir=clones, run_id=RUN_ID)
    assert resolved.clone is not None and resolved.runs_root == clone_runs_dir(resolved.clone)
    assert resolved.repo_root == clone_checkouts_dir(resolved.clone) / RUN_ID
    assert (resolved.repo_root / "app.txt").read_text() == "one"
    assert (resolved.runs_root / RUN_ID).is_dir()  # made before the checkout, so a pruner sees its run
    assert checkout_owner(resolved.repo_root).read_text().strip() == str(resolved.runs_root / RUN_ID)
    elsewhere = resolve_target(
        upstream.file_url, clones_dir=clones, run_id="r2", artifacts_dir=tmp_path / "ev"
    )
    assert checkout_owner(elsewhere.repo_root).read_text().strip() == str(tmp_path / "ev" / "r2")
    with pytest.raises(UsageError, match="invalid run id"):
        resolve_target(upstream.file_url, clones_dir=clones, run_id="a/b")


def test_remove_and_restore_a_checkout(upstream: Upstream, clones: Path, tmp_path: Path) -> None:
    resolved = resolve_target(f"{upstream.file_url}@feature", clones_dir=clones, run_id=RUN_ID)
    clone, checkout = resolved.clone, resolved.repo_root
    assert clone is not None
    remove_checkout(resolved)
    assert not checkout.exists() and not checkout_owner(checkout).exists()
    assert str(checkout) not in git(clone, "worktree", "list")
    assert restore_checkout(resolved, tmp_path / "run") is True
    assert git(checkout, "rev-parse", "HEAD") == upstream.shas["c2"] and str(checkout) in git(
        clone, "worktree", "list"
    )
    assert checkout_owner(checkout).read_text().strip() == str(tmp_path / "run")
    (checkout / "app.txt").write_text("fixed by hand")
    assert restore_checkout(resolved, tmp_path / "run") is False  # there already, fixes and all
    assert (checkout / "app.txt").read_text() == "fixed by hand"
    local = resolve_target(upstream.work)
    assert restore_checkout(local, tmp_path / "run") is False
    remove_checkout(local)
    assert (upstream.work / "app.txt").exists()


def test_checkout_paths_outside_the_clone_are_never_removed_or_made(
    upstream: Upstream, clones: Path, tmp_path: Path
) -> None:
    """A hand-edited run.json cannot point removal or re-creation at another directory."""
    resolved = resolve_target(upstream.file_url, clones_dir=clones, run_id=RUN_ID)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("x")
    hostile = attrs.evolve(resolved, repo_root=victim)
    with pytest.raises(TargetError, match="not a checkout of the clone cache"):
        remove_checkout(hostile)
    assert (victim / "keep.txt").exists()
    with pytest.raises(TargetError, match="not a checkout of the clone cache"):
        restore_checkout(attrs.evolve(resolved, repo_root=tmp_path / "new"), tmp_path / "run")
    assert not (tmp_path / "new").exists()


def test_restore_says_what_to_do_when_the_cache_cannot(
    upstream: Upstream, clones: Path, tmp_path: Path
) -> None:
    resolved = resolve_target(upstream.file_url, clones_dir=clones, run_id=RUN_ID)
    remove_checkout(resolved)
    unknown = attrs.evolve(resolved, commit="0" * 40)
    with pytest.raises(
        TargetError, match=r"commit 000000000000 is no longer in the clone cache .*fsm-runner run"
    ):
        restore_checkout(unknown, tmp_path / "run")
    assert resolved.clone is not None
    shutil.rmtree(resolved.clone)
    with pytest.raises(TargetError, match=rf"clone cache entry .*fsm-runner run {upstream.file_url}@"):
        restore_checkout(resolved, tmp_path / "run")


def test_url_runs_root_needs_neither_git_nor_the_network(
    upstream: Upstream, clones: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_url = resolve_target(upstream.file_url, clones_dir=clones).clone
    by_path = resolve_target(upstream.bare, clones_dir=clones).clone
    assert by_url is not None and by_path is not None
    monkeypatch.setenv("PATH", "/nonexistent")  # no git to run
    for spec in (upstream.file_url, f"{upstream.file_url}@v1", f"{upstream.file_url}@{upstream.shas['c2']}"):
        assert url_runs_root(spec, clones) == clone_runs_dir(by_url)
    for spec in (str(upstream.bare), f"{upstream.bare}@feature"):
        assert url_runs_root(spec, clones) == clone_runs_dir(by_path)
    remote = url_runs_root("https://git.example.invalid/org/bench.git@v1", clones)
    assert remote is not None and remote.parent == clones
    assert remote.name.startswith("bench-") and remote.name.endswith(".runs")
    assert url_runs_root("https://git.example.invalid/org/bench.git", clones) == remote
    assert url_runs_root(str(upstream.work), clones) is None  # a work tree keeps its runs itself
    assert url_runs_root("no/such/dir", clones) is None
    assert url_runs_root(upstream.file_url) == clone_runs_dir(default_clones_dir() / by_url.name)


def test_cache_names_do_not_carry_url_passwords(clones: Path) -> None:
    """The entry's name appears in run.json (clone, repo_root) and on disk."""
    runs = url_runs_root("https://bob:s3cret-token@git.example.invalid", clones)
    assert runs is not None and "s3cret" not in str(runs) and runs.name.startswith("git.example.invalid-")


def test_credentials_do_not_change_which_clone_and_runs_a_url_has(clones: Path) -> None:
    """A rotated token must find the runs made with the old one (and reuse the clone)."""
    plain = url_runs_root("https://git.example.invalid/org/bench.git", clones)
    for with_token in (
        "https://bob:old-token@git.example.invalid/org/bench.git",
        "https://new-token@git.example.invalid/org/bench.git",
    ):
        assert url_runs_root(with_token, clones) == plain


def test_a_trees_own_git_config_runs_nothing_on_the_host(upstream: Upstream, tmp_path: Path) -> None:
    """A (sandboxed) stage may write .git/config; git run by the runner in that tree must not run its programs."""
    marker = tmp_path / "ran"
    git(upstream.work, "config", "core.fsmonitor", f"touch {marker}; false")
    assert tracked_files(upstream.work, ["app.txt"]) == {"app.txt"}
    resolve_target(upstream.work)
    assert not marker.exists()


@pytest.mark.parametrize(
    "forged",
    ["x.checkouts/..", "x.checkouts/20200101T000000Z-aaaaaa", "x.checkouts/file"],
)
def test_remove_checkout_never_follows_a_link_or_leaves_the_checkouts_dir(tmp_path: Path, forged: str) -> None:
    victim = tmp_path / "v"
    (victim / "sub" / "20200101T000000Z-aaaaaa").mkdir(parents=True)
    (victim / "p.txt").write_text("precious\n")
    (victim / "sub" / "file").write_text("precious\n")
    base = tmp_path / "a"
    (base / "x").mkdir(parents=True)
    (base / "x.checkouts").symlink_to(victim / "sub")
    (base / "x.lock").symlink_to(victim / "p.txt")
    target = ResolvedTarget(spec="file:///nowhere", repo_root=base / forged, kind="git", clone=base / "x")
    with pytest.raises(TargetError, match="not removing it"):
        remove_checkout(target)
    with pytest.raises(TargetError, match="not removing it"):
        remove_checkout(target, run_id="20200101T000000Z-aaaaaa")
    assert (victim / "p.txt").read_text() == "precious\n" and (victim / "sub" / "file").is_file()
    assert (victim / "sub" / "20200101T000000Z-aaaaaa").is_dir()
