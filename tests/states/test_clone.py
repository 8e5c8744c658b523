"""clone: setup resolved the target already; the phase checks the contract is there and records both."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from fsm_runner.engine.outcome import FAILED, OK
from fsm_runner.evidence.records import ResolvedTarget
from fsm_runner.targets import resolve_target
from tests.helpers.phases import PhaseContexts, run_phase

PIPELINE = "version: 1\ntests:\n  cmds: 'true'\n"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    )
    return done.stdout.strip()


def committed(repo: Path) -> str:
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "target")
    return git(repo, "rev-parse", "HEAD")


def test_clone_records_the_target_and_the_contract_hash(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "clone", PIPELINE)
    assert run.outcome.status == OK and run.outcome.error is None and run.outcome.commands == ()
    sha = hashlib.sha256((run.repo / "pipeline.yml").read_bytes()).hexdigest()
    assert run.outcome.data == {
        "target": {
            "spec": str(run.repo), "repo_root": str(run.repo), "kind": "local", "url": None, "ref": None,
            "commit": None, "cache_hit": False, "clone": None,
        },
        "contract_sha256": sha,
    }
    assert run.evidence == run.ctx.run_dir / "clone"
    assert run.summary()["data"]["contract_sha256"] == sha


def test_a_local_work_tree_records_its_commit(make_ctx: PhaseContexts) -> None:
    ctx = make_ctx(PIPELINE)
    head = committed(ctx.repo_root)
    ctx.target = resolve_target(ctx.repo_root)
    run = run_phase(ctx, "clone")
    assert run.outcome.ok
    assert run.outcome.data["target"]["kind"] == "local" and run.outcome.data["target"]["commit"] == head


def test_a_cloned_target_is_checked_in_the_clone(make_ctx: PhaseContexts, tmp_path: Path) -> None:
    ctx = make_ctx(PIPELINE)
    origin = ctx.repo_root
    head = committed(origin)
    ctx.target = resolve_target(f"file://{origin}", clones_dir=tmp_path / "clones")
    run = run_phase(ctx, "clone")
    assert run.outcome.ok, run.outcome.error
    target = run.outcome.data["target"]
    assert target["kind"] == "git" and target["commit"] == head and target["url"] == f"file://{origin}"
    assert Path(target["repo_root"]).is_relative_to(tmp_path / "clones") and run.repo != origin
    assert (Path(target["repo_root"]) / "pipeline.yml").read_text() == PIPELINE


def test_credentials_in_the_target_url_are_not_recorded(make_ctx: PhaseContexts) -> None:
    ctx = make_ctx(PIPELINE)
    url = "https://bot:hunter2-token@git.example.invalid/bench.git"
    ctx.target = ResolvedTarget(spec=url, repo_root=ctx.repo_root, kind="git", url=url, commit="0" * 40)
    run = run_phase(ctx, "clone")
    assert run.outcome.data["target"]["url"] == "https://***@git.example.invalid/bench.git"
    assert run.outcome.data["target"]["spec"] == "https://***@git.example.invalid/bench.git"
    assert "hunter2" not in (run.evidence / "summary.json").read_text()


@pytest.mark.parametrize("pipeline_rel", ["pipeline.yml", "contracts/bench.yml"])
def test_clone_fails_when_the_contract_is_gone(make_ctx: PhaseContexts, pipeline_rel: str) -> None:
    ctx = make_ctx(PIPELINE, pipeline_rel=pipeline_rel)
    (ctx.repo_root / "pipeline.yml").unlink()
    run = run_phase(ctx, "clone")
    error = run.outcome.error
    assert run.outcome.status == FAILED and error is not None
    assert error.kind == "contract" and error.phase == "clone"
    assert error.message == f"{ctx.repo_root / pipeline_rel} is missing"
    assert run.outcome.data["contract_sha256"] == ctx.contract_sha256  # what the run started with
    assert run.summary()["status"] == "failed"
