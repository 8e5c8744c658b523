"""Runs of one git URL at once, each in its own checkout; their runs found by the URL; checkouts cleaned up.

Real processes, real git repositories in tmp_path, no network. The evaluation of the target below scores the
VERSION file of the commit it runs in, after waiting at a barrier until every run of the test is evaluating,
so runs that shared one checkout would score each other's commit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from fsm_runner import ContractError, RepairRequest, ReplayError, can_replay, check_replay, replay, setup
from fsm_runner.evidence.layout import clone_checkouts_dir, clone_runs_dir
from fsm_runner.execution.process import group_alive

GIT_ID = ("-c", "user.email=fsm@example.invalid", "-c", "user.name=fsm test", "-c", "commit.gpgsign=false")

PIPELINE = """\
version: 1
evaluation:
  run_cmds: python3 evaluate.py
  metrics_path: .aider_fsm/metrics.json
  required_keys: [ok, score]
"""

EVALUATE = r"""
import json, os, time
barrier, overlap = os.environ.get("BARRIER"), None
if barrier:
    os.makedirs(barrier, exist_ok=True)
    open(os.path.join(barrier, os.environ["AIDER_FSM_RUN_ID"]), "w").close()
    deadline = time.monotonic() + 30
    while len(os.listdir(barrier)) < int(os.environ["BARRIER_N"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    overlap = len(os.listdir(barrier)) >= int(os.environ["BARRIER_N"])
version = open("VERSION").read().strip()
os.makedirs(".aider_fsm", exist_ok=True)
json.dump({"ok": True, "score": float(version), "overlap": overlap}, open(".aider_fsm/metrics.json", "w"))
"""

BROKEN = 'import os, sys\nif not os.environ.get("FIXED"):\n    sys.exit("evaluate.py: broken")\n' + EVALUATE


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *GIT_ID, *args], cwd=cwd, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return done.stdout.strip()


@attrs.define
class Upstream:
    """v1 -> v2 (main); ``broken`` (v3, evaluate.py fails unless FIXED is set); ``nocontract``."""

    bare: Path
    clones: Path
    shas: dict[str, str]

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    @property
    def clone(self) -> Path:
        entries = [p for p in self.clones.iterdir() if (p / ".git").is_dir()]
        assert len(entries) == 1, entries
        return entries[0]

    @property
    def runs_dir(self) -> Path:
        return clone_runs_dir(self.clone)

    def checkouts(self) -> list[Path]:
        root = clone_checkouts_dir(self.clone)
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


@pytest.fixture
def upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Upstream:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    clones = tmp_path / "clones"
    monkeypatch.setenv("FSM_RUNNER_CACHE_DIR", str(clones))
    work = tmp_path / "src"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "pipeline.yml").write_text(PIPELINE)
    (work / "evaluate.py").write_text(EVALUATE)
    shas = {}
    for version in ("1", "2"):
        (work / "VERSION").write_text(version + "\n")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", f"version {version}")
        git(work, "tag", f"v{version}")
        shas[f"v{version}"] = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "-b", "broken")
    (work / "VERSION").write_text("3\n")
    (work / "evaluate.py").write_text(BROKEN)
    git(work, "commit", "-q", "-am", "version 3, broken")
    shas["broken"] = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", "-b", "nocontract", "main")
    git(work, "rm", "-q", "pipeline.yml")
    git(work, "commit", "-q", "-m", "no contract")
    git(work, "checkout", "-q", "main")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    return Upstream(bare=bare, clones=clones, shas=shas)


def cli(*args: object, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsm_runner", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def run_json(run_dir: Path | str) -> dict[str, Any]:
    return dict(json.loads((Path(run_dir) / "run.json").read_text()))


def barrier(tmp_path: Path, count: int) -> dict[str, str]:
    return {"BARRIER": str(tmp_path / "barrier"), "BARRIER_N": str(count)}


def test_two_cli_runs_at_two_refs_at_once_each_score_their_own_commit(
    upstream: Upstream, tmp_path: Path
) -> None:
    env = [arg for k, v in barrier(tmp_path, 2).items() for arg in ("--env", f"{k}={v}")]
    argv = [sys.executable, "-m", "fsm_runner", "run", "--json", *env]
    procs = {
        ref: subprocess.Popen(
            [*argv, f"{upstream.url}@{ref}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for ref in ("v1", "v2")
    }
    outputs = {ref: proc.communicate(timeout=120) for ref, proc in procs.items()}
    for ref, expected in (("v1", 1.0), ("v2", 2.0)):
        out, err = outputs[ref]
        assert procs[ref].returncode == 0, err
        result = json.loads(out)
        assert result["metrics"]["overlap"] is True, "the two evaluations did not overlap"
        assert result["score"] == expected
        run = run_json(result["run_dir"])
        assert run["target"]["commit"] == upstream.shas[ref] and run["target"]["ref"] == ref
        assert Path(result["run_dir"]).parent == upstream.runs_dir
        assert not Path(run["target"]["repo_root"]).exists()
    assert upstream.checkouts() == []


def test_four_runs_from_threads_alternating_refs(upstream: Upstream, tmp_path: Path) -> None:
    results: dict[int, Any] = {}

    def one(i: int) -> None:
        ref = ("v1", "v2")[i % 2]
        try:
            with setup(f"{upstream.url}@{ref}", env_overrides=barrier(tmp_path, 4)) as session:
                checkout = session.repo_root
                results[i] = (ref, session.run(), checkout)
        except BaseException as exc:  # reported below, with the thread it came from
            results[i] = (ref, exc, None)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == [0, 1, 2, 3]
    checkouts = set()
    for ref, result, checkout in results.values():
        assert not isinstance(result, BaseException), result
        assert result.ok, result.error
        assert result.metrics["overlap"] is True and result.score == {"v1": 1.0, "v2": 2.0}[ref]
        assert run_json(result.run_dir)["target"]["commit"] == upstream.shas[ref]
        checkouts.add(checkout)
    assert len(checkouts) == 4 and not any(c.exists() for c in checkouts)
    assert upstream.checkouts() == []


def test_runs_show_and_diagram_find_the_runs_of_a_url_without_reaching_it(
    upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = []
    for ref in ("v1", "v2"):
        with setup(f"{upstream.url}@{ref}") as session:
            assert session.run().ok
            ids.append(session.run_id)
    url = upstream.url
    # The URL no longer answers: finding its runs must not need it.
    upstream.bare.rename(tmp_path / "moved.git")
    for spec in (url, f"{url}@v1", f"{url}@{upstream.shas['v2']}"):
        listed = cli("runs", spec, "--json")
        assert listed.returncode == 0, listed.stderr
        assert [r["run_id"] for r in json.loads(listed.stdout)] == ids[::-1]
    table = cli("runs", url)
    assert table.returncode == 0 and ids[0] in table.stdout and ids[1] in table.stdout
    shown = cli("show", "latest", "--repo", url)
    assert shown.returncode == 0, shown.stderr
    assert f"run      {ids[1]}" in shown.stdout and f"{url}  checkout " in shown.stdout
    assert "(removed)" in shown.stdout and "score    2" in shown.stdout
    as_json = cli("show", "latest", "--repo", f"{url}@v1", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["run"]["run_id"] == ids[1] and data["run"]["target"]["commit"] == upstream.shas["v2"]
    by_id = json.loads(cli("show", ids[0][:-2], "--repo", url, "--json").stdout)
    assert by_id["summary"]["score"] == 1.0 and Path(by_id["run_dir"]).parent == upstream.runs_dir
    drawn = cli("diagram", "--run", "latest", "--repo", url)
    assert drawn.returncode == 0 and "evaluate" in drawn.stdout, drawn.stderr
    # A cache elsewhere than the default is named with --clones-dir.
    monkeypatch.setenv("FSM_RUNNER_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert json.loads(cli("runs", url, "--json").stdout) == []
    found = cli("runs", url, "--json", "--clones-dir", upstream.clones)
    assert [r["run_id"] for r in json.loads(found.stdout)] == ids[::-1]
    shown = cli("show", "latest", "--repo", url, "--clones-dir", upstream.clones, "--json")
    assert json.loads(shown.stdout)["run"]["run_id"] == ids[1]


def test_a_failed_run_keeps_its_checkout_where_it_is_fixed_and_replayed_by_url(upstream: Upstream) -> None:
    failed = cli("run", f"{upstream.url}@broken", "--json")
    assert failed.returncode == 1, failed.stderr
    run_dir = Path(json.loads(failed.stdout)["run_dir"])
    assert run_dir.parent == upstream.runs_dir and run_json(run_dir)["status"] == "failed"
    checkout = Path(run_json(run_dir)["target"]["repo_root"])
    assert upstream.checkouts() == [checkout] and (checkout / "VERSION").read_text() == "3\n"
    (checkout / "evaluate.py").write_text(EVALUATE)  # the fix, made where the run failed
    replayed = cli("replay", "latest", "--repo", f"{upstream.url}@broken", "--json")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    run = run_json(run_dir)
    assert (run["status"], run["redrive_count"], json.loads(replayed.stdout)["score"]) == ("ok", 1, 3.0)
    assert not checkout.exists() and upstream.checkouts() == []


@pytest.mark.parametrize("removed", ["checkout", "checkout_and_cache"])
def test_replay_recreates_a_deleted_checkout_from_the_cache(upstream: Upstream, removed: str) -> None:
    with setup(f"{upstream.url}@broken") as session:
        result = session.run()
        checkout, run_dir = session.repo_root, session.run_dir
    assert not result.ok and checkout.is_dir()
    shutil.rmtree(checkout)
    if removed == "checkout_and_cache":
        shutil.rmtree(upstream.clone)
        hint = rf"start a new run instead: fsm-runner run {upstream.url}@{upstream.shas['broken']}"
        with pytest.raises(ReplayError, match=hint):
            replay(run_dir, env_overrides={"FIXED": "1"})
        assert not checkout.exists()
        return
    report = check_replay(run_dir)
    assert report.ok and report.contract_problem is None, report.lines()
    replayed = replay(run_dir, env_overrides={"FIXED": "1"})
    assert replayed.ok and replayed.score == 3.0  # evaluated in a checkout of the recorded commit
    run = run_json(run_dir)
    assert (run["status"], run["target"]["repo_root"]) == ("ok", str(checkout))
    assert not checkout.exists() and upstream.checkouts() == []


KILLED_AFTER_RUN = """
import os, signal, sys
import fsm_runner
session = fsm_runner.setup(sys.argv[1])
assert session.run().ok
os.kill(os.getpid(), signal.SIGKILL)  # before close() could remove the checkout
"""


def test_setup_prunes_checkouts_whose_run_is_gone_or_ended_ok(upstream: Upstream) -> None:
    failed = []
    for _ in range(2):
        with setup(f"{upstream.url}@broken") as session:
            assert not session.run().ok
        failed.append((session.repo_root, session.run_dir))
    (kept, _), (gone, deleted_run) = failed
    shutil.rmtree(deleted_run)  # a failed run deleted by hand: its checkout is of no use any more
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_RUN, f"{upstream.url}@v1"], timeout=90)
    assert killed.returncode == -signal.SIGKILL
    (ended_ok,) = [c for c in upstream.checkouts() if c not in (kept, gone)]
    with setup(f"{upstream.url}@v2") as fresh:
        assert upstream.checkouts() == sorted([kept, fresh.repo_root])
        assert (fresh.repo_root / "VERSION").read_text() == "2\n"
    assert upstream.checkouts() == [kept]  # the fresh session closed before it ran: nothing can continue it
    assert not any(os.path.exists(f"{c}.run") for c in (gone, ended_ok, fresh.repo_root))


def test_setup_that_fails_before_the_session_leaves_no_checkout_and_no_run(upstream: Upstream) -> None:
    with pytest.raises(ContractError, match="pipeline.yml"):
        setup(f"{upstream.url}@nocontract")
    assert upstream.checkouts() == []
    assert not upstream.runs_dir.exists() or list(upstream.runs_dir.iterdir()) == []


def test_a_contract_scaffolded_for_a_git_target_keeps_its_evidence_beside_the_runs(upstream: Upstream) -> None:
    def agent(request: RepairRequest) -> str:
        (request.repo / "pipeline.yml").write_text(PIPELINE)
        return "wrote pipeline.yml"

    with setup(f"{upstream.url}@nocontract", repair_agent=agent) as session:
        result = session.run()
        checkout = session.repo_root
    assert result.ok and result.score == 2.0
    (scaffold,) = upstream.runs_dir.glob("scaffold-*")
    assert json.loads((scaffold / "reply.json").read_text())["summary"] == "wrote pipeline.yml"
    assert not checkout.exists() and upstream.checkouts() == []


def test_an_interrupted_run_keeps_its_checkout_through_later_setups(upstream: Upstream, tmp_path: Path) -> None:
    env = [arg for k, v in barrier(tmp_path, 2).items() for arg in ("--env", f"{k}={v}")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", "run", f"{upstream.url}@v1", *env],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "barrier").is_dir() or not os.listdir(tmp_path / "barrier"):  # evaluating, alone
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    (run_dir,) = upstream.runs_dir.iterdir()
    run = run_json(run_dir)
    checkout = Path(run["target"]["repo_root"])
    assert run["status"] == "interrupted" and upstream.checkouts() == [checkout]
    with setup(f"{upstream.url}@v2") as session:
        assert session.run().ok
    assert upstream.checkouts() == [checkout] and (checkout / "VERSION").read_text() == "1\n"


def test_what_a_killed_run_of_the_url_left_running_is_ended_by_the_next_setup(
    upstream: Upstream, tmp_path: Path
) -> None:
    env = [arg for k, v in barrier(tmp_path, 2).items() for arg in ("--env", f"{k}={v}")]
    proc = subprocess.Popen([sys.executable, "-m", "fsm_runner", "run", f"{upstream.url}@v1", *env])
    deadline = time.monotonic() + 30
    # Evaluating, alone, and on record (the record is written just after the command starts).
    while (
        not (tmp_path / "barrier").is_dir()
        or not os.listdir(tmp_path / "barrier")
        or not list(upstream.runs_dir.glob("*/evaluate/cmd01_try01.json"))
    ):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    (run_dir,) = upstream.runs_dir.iterdir()
    pgid = json.loads((run_dir / "evaluate" / "cmd01_try01.json").read_text())["pgid"]
    assert group_alive(pgid), "the killed run's evaluation should still be waiting"
    with setup(f"{upstream.url}@v2") as session:
        assert not group_alive(pgid)
        events = [json.loads(line) for line in (session.run_dir / "events.jsonl").read_text().splitlines()]
        (ended,) = [e for e in events if e["event"] == "leftovers.ended"]
        assert ended["run_id"] == run_dir.name and ended["command_pgids"] == [pgid]
        assert session.run().ok
    assert can_replay(run_dir)[0], "the killed run stays replayable"


def test_gc_removes_the_runs_of_a_url_and_the_checkout_a_failed_one_left(upstream: Upstream) -> None:
    ok = cli("run", upstream.url, "--json")
    failed = cli("run", f"{upstream.url}@broken", "--json")
    assert ok.returncode == 0 and failed.returncode == 1, ok.stderr + failed.stderr
    ok_dir, failed_dir = (Path(json.loads(p.stdout)["run_dir"]) for p in (ok, failed))
    checkout = Path(run_json(failed_dir)["target"]["repo_root"])
    assert upstream.checkouts() == [checkout]

    kept = cli("gc", upstream.url)
    assert kept.returncode == 0, kept.stderr
    assert not ok_dir.exists() and failed_dir.is_dir() and upstream.checkouts() == [checkout]

    gone = cli("gc", f"{upstream.url}@broken", "--include-failed", "--json")
    assert gone.returncode == 0, gone.stderr
    (entry,) = json.loads(gone.stdout)["runs"]
    assert entry["removed"] and entry["checkout"] == str(checkout) and entry["problem"] is None
    assert not failed_dir.exists() and upstream.checkouts() == []
    assert checkout.name not in git(upstream.clone, "worktree", "list")


def forge(run_dir: Path, into: Path, **target: str) -> Path:
    """A copy of the real run ``run_dir`` at ``into``, ended ok, its run.json's target edited."""
    shutil.copytree(run_dir, into)
    (into / ".lock").unlink(missing_ok=True)
    data = run_json(into)
    data["status"] = "ok"
    data["target"].update(target)
    (into / "run.json").write_text(json.dumps(data))
    return into


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A directory nothing may remove: ``sub`` is what forged checkouts point at, ``p.txt`` its content."""
    root = tmp_path / "v"
    (root / "sub").mkdir(parents=True)
    (root / "p.txt").write_text("precious\n")
    (root / "sub" / "s.txt").write_text("precious\n")
    return root


def test_gc_of_a_local_repo_never_follows_a_forged_run_json_out_of_its_runs(
    upstream: Upstream, tmp_path: Path, victim: Path
) -> None:
    done = cli("run", upstream.url, "--json")
    assert done.returncode == 0, done.stderr
    real = Path(json.loads(done.stdout)["run_dir"])
    repo = tmp_path / "a"
    (repo / "x").mkdir(parents=True)
    (repo / "pipeline.yml").write_text("version: 1\n")
    (repo / "x.checkouts").symlink_to(victim / "sub")
    (repo / "x.lock").write_text("precious\n")
    run_id = "20200101T000000Z-aaaaaa"
    forged = forge(
        real,
        repo / ".aider_fsm" / "artifacts" / run_id,
        clone=str(repo / "x"),
        repo_root=str(repo / "x.checkouts" / ".."),
    )
    (victim / "sub" / run_id).mkdir()  # a checkout named after the run, through the link

    gc = cli("gc", repo)
    assert gc.returncode == 0, gc.stderr
    assert not forged.exists()
    assert (victim / "p.txt").read_text() == "precious\n" and (victim / "sub" / run_id).is_dir()
    assert (repo / "x.lock").read_text() == "precious\n"
    assert "was not removed" in gc.stdout and "gc URL" in gc.stdout, gc.stdout


@pytest.mark.parametrize("how", ["link", "linked_parent", "elsewhere"])
def test_gc_of_a_url_removes_only_real_checkouts_named_after_the_run(
    upstream: Upstream, tmp_path: Path, victim: Path, how: str
) -> None:
    done = cli("run", upstream.url, "--json")
    assert done.returncode == 0, done.stderr
    real = Path(json.loads(done.stdout)["run_dir"])
    run_id = "20200101T000000Z-bbbbbb"
    checkouts = clone_checkouts_dir(upstream.clone)
    other = tmp_path / "other"
    (other / "y").mkdir(parents=True)
    other_lock = other / "y.lock"
    other_lock.write_text("precious\n")
    if how == "link":  # the run's checkout is a link to the victim
        (checkouts / run_id).symlink_to(victim / "sub")
        target = {"repo_root": str(checkouts / run_id)}
    elif how == "linked_parent":  # run.json names a checkouts dir behind a link, and another clone
        (other / "y.checkouts").symlink_to(victim / "sub")
        (victim / "sub" / run_id).mkdir()
        target = {"clone": str(other / "y"), "repo_root": str(other / "y.checkouts" / run_id)}
    else:  # run.json names a real directory that is not the run's checkout
        (victim / "sub" / "x.checkouts").mkdir()
        target = {"repo_root": str(victim / "sub")}
    forge(real, upstream.runs_dir / run_id, **target)

    gc = cli("gc", upstream.url)
    assert gc.returncode == 0, gc.stderr
    assert not (upstream.runs_dir / run_id).exists()
    assert (victim / "p.txt").read_text() == "precious\n" and (victim / "sub" / "s.txt").is_file()
    assert other_lock.read_text() == "precious\n"
    assert "was not removed" in gc.stdout, gc.stdout
