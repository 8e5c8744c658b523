"""End-to-end: real targets in tmp dirs driven through setup -> rollout -> evaluate."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

import fsm_runner
import runner_env
from fsm_runner.evidence.journal import read_journal
from fsm_runner.evidence.records import TransitionRecord
from tests.conftest import TargetFactory, pid_alive, service_pid
from tests.helpers import target_files as files


def journal(run_dir: Path) -> list[TransitionRecord]:
    read = read_journal(run_dir / "journal.jsonl")
    assert read.problem is None, read.problem
    return list(read.records)


def path_of(run_dir: Path) -> list[tuple[str, str, str]]:
    return [(r.trigger, r.source, r.dest) for r in journal(run_dir)]


def stage_env(repo: Path, stage: str) -> dict[str, str]:
    return dict(json.loads((repo / ".aider_fsm" / "envs" / f"{stage}.json").read_text()))


def test_full_run_walks_every_phase_and_leaves_nothing_running(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        rolled = sess.rollout(llm="toy-model", mode="smoke", require_samples=True)
        assert rolled.ok, rolled.error
        assert rolled.sample_count == 8 and rolled.samples_path == repo / ".aider_fsm" / "samples.jsonl"
        pid = service_pid(repo)
        assert pid is not None and pid_alive(pid)
        result = sess.evaluate()
    assert result.ok, result.error
    assert result.metrics == {"ok": True, "score": 1.0, "run_id": sess.run_id, "llms": ["toy-model"]}
    assert result.benchmark == {"ok": True, "rps": 1.0}
    assert not pid_alive(pid)
    assert path_of(sess.run_dir) == [
        ("phase_done", "clone", "bootstrap"),
        ("phase_done", "bootstrap", "auth"),
        ("phase_skipped", "auth", "tests"),
        ("phase_done", "tests", "deploy_setup"),
        ("phase_done", "deploy_setup", "health"),
        ("phase_done", "health", "rollout"),
        ("phase_done", "rollout", "evaluate"),
        ("phase_done", "evaluate", "benchmark"),
        ("phase_done", "benchmark", "verify"),
        ("phase_done", "verify", "teardown"),
        ("phase_done", "teardown", "done"),
    ]
    records = journal(sess.run_dir)
    assert [r.seq for r in records] == list(range(1, 12))
    assert records[6].guards["samples_valid"] is True
    assert records[7].guards["has_required_keys"] is True
    run = json.loads((sess.run_dir / "run.json").read_text())
    assert run["status"] == "ok" and run["phase"] == "done"
    for rel in ("tests/cmd01_try01.stdout", "tests/cmd01_try01.json", "tests/summary.json",
                "deploy_setup/cmd02_try01.json", "evaluate/summary.json", "events.jsonl", "evaluate.metrics.json"):
        assert (sess.run_dir / rel).is_file(), rel
    events = [json.loads(line) for line in (sess.run_dir / "events.jsonl").read_text().splitlines()]
    transitions = [e for e in events if e["event"] == "transition"]
    assert len(transitions) == 11 and all(e["run_id"] == sess.run_id for e in events)
    assert {"command.start", "command.end", "phase.start", "phase.end"} <= {e["event"] for e in events}


def test_every_stage_sees_the_runner_env(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        sess.rollout(llm="toy-model", mode="full", env_overrides={"STAGE_EXTRA": "x", "AIDER_EVAL_LIMIT": "5"})
        sess.evaluate()
    boot = stage_env(repo, "bootstrap")
    assert boot["AIDER_FSM_STAGE"] == "bootstrap" and boot["CI"] == "1" and boot["GIT_TERMINAL_PROMPT"] == "0"
    roll = stage_env(repo, "rollout")
    assert roll["AIDER_LLM_KIND"] == "remote" and roll["AIDER_LLM_MODEL"] == "toy-model"
    assert roll["OPENAI_MODEL"] == "toy-model"
    assert roll["AIDER_EVAL_MODE"] == "full" and roll["AIDER_EVAL_LIMIT"] == "5"
    assert roll["STAGE_EXTRA"] == "x" and roll["BOOT_FLAG"] == "from-bootstrap"
    assert roll["PATH"].split(":")[0] == str(repo / ".venv" / "bin")
    assert roll["AIDER_FSM_RUN_ID"] == sess.run_id
    assert roll["AIDER_FSM_REPO_ROOT"] == str(repo)
    assert roll["AIDER_FSM_ARTIFACTS_DIR"] == str(sess.run_dir / "rollout")
    assert roll["AIDER_RUNTIME_ENV_PATH"] == str(repo / ".aider_fsm" / "runtime_env.json")
    assert stage_env(repo, "evaluate")["AIDER_LLM_MODEL"] == "toy-model"  # reused from rollout
    assert "AIDER_LLM_MODEL" not in stage_env(repo, "tests")


def test_local_model_dir_is_passed_as_local(make_target: TargetFactory, tmp_path: Path) -> None:
    repo = make_target()
    model = tmp_path / "ckpt"
    model.mkdir()
    with fsm_runner.setup(repo) as sess:
        sess.rollout(llm=str(model))
    env = stage_env(repo, "rollout")
    assert env["AIDER_LLM_KIND"] == "local_hf" and env["AIDER_TRAINED_MODEL_DIR"] == str(model)


def test_a_service_that_died_during_deploy_fails_health_without_a_second_deploy(make_target: TargetFactory) -> None:
    # The server's group is recorded by the first command and gone before health starts (the second sleeps).
    start = "    - python3 svc.py > .aider_fsm/svc.log 2>&1 &\n"
    repo = make_target(pipeline=files.PIPELINE.replace(start, "    - python3 no_such_server.py &\n    - sleep 0.5\n"))
    with fsm_runner.setup(repo) as sess:
        rolled = sess.rollout(llm="toy-model", mode="smoke")
    assert rolled.error is not None and rolled.error.phase == "health"
    assert rolled.error.message.startswith("the deploy's services exited (exit code ")
    assert "can't open file" in rolled.error.message
    path = path_of(sess.run_dir)
    assert ("phase_failed", "health", "failed") in path
    deploys = [t for t in path if "deploy_setup" in t[1:]]  # no redeploy: one way in, one way out
    assert deploys == [("phase_done", "tests", "deploy_setup"), ("phase_done", "deploy_setup", "health")]


#: A launcher whose helper stays in its group for a moment, then hands the server off to a session of its
#: own and exits 0: the group deploy recorded is gone while the server it started serves.
HAND_OFF = r"""
import os, subprocess, sys, time
if os.fork() == 0:
    time.sleep(0.5)
    log = open(".aider_fsm/svc.log", "w")
    subprocess.Popen([sys.executable, "svc.py"], start_new_session=True, stdout=log, stderr=log)
    os._exit(0)
"""


def test_a_server_handed_off_by_its_launcher_is_not_deployed_again(make_target: TargetFactory) -> None:
    """Rollout and evaluate need the deployment: one that left deploy's group (it keeps deploy's environment)
    is still it. Deploying again would start a second server and orphan the first."""
    start = "    - python3 svc.py > .aider_fsm/svc.log 2>&1 &\n"
    repo = make_target(pipeline=files.PIPELINE.replace(start, "    - python3 launch.py\n"))
    (repo / "launch.py").write_text(HAND_OFF)
    with fsm_runner.setup(repo) as sess:
        rolled = sess.rollout(llm="toy-model", mode="smoke")
        assert rolled.ok, rolled.error
        server = service_pid(repo)
        assert server is not None and pid_alive(server)
        result = sess.evaluate()
    assert result.ok, result.error
    path = path_of(sess.run_dir)
    assert [t for t in path if t[0] == "redeploy"] == []
    assert [t for t in path if t[1] == "deploy_setup"] == [("phase_done", "deploy_setup", "health")]
    assert not pid_alive(server), "teardown ended the one server"


def test_second_round_reuses_bootstrap_and_redeploys(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        scores = []
        for llm in ("ckpt-1", "ckpt-2"):
            sess.rollout(llm=llm)
            scores.append(sess.evaluate())
    assert all(r.ok for r in scores)
    records = journal(sess.run_dir)
    boot = [r for r in records if r.source == "bootstrap" and r.trigger != "restart"]
    assert [r.trigger for r in boot] == ["phase_done", "phase_skipped"]
    assert [r.trigger for r in records if r.source == "deploy_setup"] == ["phase_done", "phase_done"]
    assert (sess.run_dir / "rollout.2").is_dir()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.advance("tests", repair_iters=2.0), "repair_iters must be a whole number >= 0, got 2.0"),
        (lambda s: s.advance("tests", repair_iters=True), "repair_iters must be a whole number >= 0, got True"),
        (lambda s: s.evaluate(repair_iters="3"), "repair_iters must be a whole number >= 0, got '3'"),
        (lambda s: s.rollout(llm=5), "llm must be a model name or a directory path, got 5"),
        (lambda s: s.advance("tests", llm=["a"]), "llm must be a model name or a directory path"),
        (lambda s: s.rollout("m", env_overrides={"AIDER_EVAL_LIMIT": 3}), "AIDER_EVAL_LIMIT must be a string"),
        (lambda s: s.rollout("m", mode="huge"), "mode must be one of smoke, full, got 'huge'"),
    ],
)
def test_bad_call_arguments_are_refused_before_anything_runs(make_target: TargetFactory, call, message) -> None:  # type: ignore[no-untyped-def]
    with fsm_runner.setup(make_target()) as sess:
        records = len(read_journal(sess.run_dir / "journal.jsonl").records)
        with pytest.raises(fsm_runner.UsageError, match=re.escape(message)):
            call(sess)
        assert len(read_journal(sess.run_dir / "journal.jsonl").records) == records
    assert json.loads((sess.run_dir / "run.json").read_text())["status"] == "closed"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"AIDER_EVAL_LIMIT": 3}, "env_overrides: AIDER_EVAL_LIMIT must be a string, got 3; write it as '3'"),
        ({"bad name": "x"}, "env_overrides: 'bad name' is not a variable name"),
        (["A=1"], "env_overrides must map variable names to strings, got list"),
        ({"A": "x\0y"}, "env_overrides: A contains a NUL byte"),
        ({"A": "x\ud800"}, "env_overrides: A contains '\\ud800', a lone surrogate that is not valid Unicode"),
        ({"A": "x\udcff"}, "env_overrides: A contains the byte 0xff, which is not UTF-8"),
    ],
)
def test_setup_refuses_env_overrides_that_are_not_strings(
    make_target: TargetFactory, overrides: object, message: str
) -> None:
    with pytest.raises(fsm_runner.UsageError, match=re.escape(message)):
        fsm_runner.setup(make_target(), env_overrides=overrides)  # type: ignore[arg-type]


def test_runner_env_alias_is_the_same_api() -> None:
    assert runner_env.setup is fsm_runner.setup
    assert runner_env.Session is fsm_runner.Session


def test_missing_contract_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(fsm_runner.ContractError, match="fsm-runner init"):
        fsm_runner.setup(tmp_path)


def test_missing_contract_is_scaffolded_by_an_agent(make_target: TargetFactory) -> None:
    repo = make_target()
    text = (repo / "pipeline.yml").read_text()
    (repo / "pipeline.yml").unlink()

    def agent(request: fsm_runner.RepairRequest) -> None:
        (request.repo / "pipeline.yml").write_text(text)

    with fsm_runner.setup(repo, repair_agent=agent) as sess:
        assert sess.ctx.pipeline.evaluation is not None


def test_legacy_keywords_warn_once_and_unknown_ones_fail(make_target: TargetFactory) -> None:
    repo = make_target()
    with pytest.warns(UserWarning, match="aider_model, edit_format") as caught:
        fsm_runner.setup(repo, aider_model="x", edit_format="diff").close()
    assert len(caught) == 1
    with pytest.raises(fsm_runner.UsageError, match="no_such_option"):
        fsm_runner.setup(repo, no_such_option=1)


def test_slow_service_passes_health(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo, env_overrides={"SVC_DELAY": "2"}) as sess:
        result = sess.rollout(llm="m")
    assert result.ok, result.error
    health = next(r for r in journal(sess.run_dir) if r.source == "health")
    assert health.guards["is_healthy"] is True
    assert health.outcome is not None and health.outcome.data["polls"] > 1


GUARD_CASES = {
    "unhealthy": (
        {"pipeline": files.PIPELINE.replace("timeout_seconds: 20", "timeout_seconds: 1.5").replace(
            "health_cmds: python3 probe.py", "health_cmds: python3 -c 'import sys; print(\"refused\", file=sys.stderr); sys.exit(1)'")},
        "health", "is_healthy", "refused",
    ),
    "missing_key": (
        {"pipeline": files.PIPELINE.replace("required_keys: [ok, score]", "required_keys: [ok, score, eval.accuracy]")},
        "evaluate", "has_required_keys", "eval.accuracy",
    ),
    "ok_false": ({"scoring": files.SCORING_BROKEN}, "evaluate", "has_required_keys", "ok"),
    "bad_samples": (
        {"pipeline": files.PIPELINE.replace("- python3 rollout.py", "- python3 rollout.py\n    - sed -i 's/1.0/\"x\"/' .aider_fsm/samples.jsonl")},
        "rollout", "samples_valid", "reward",
    ),
    "contract_changed": (
        {"pipeline": files.PIPELINE.replace("- python3 evaluate.py", "- python3 evaluate.py\n    - echo '# edited' >> pipeline.yml")},
        "verify", "contract_intact", "pipeline.yml changed",
    ),
}


@pytest.mark.parametrize("case", sorted(GUARD_CASES))
def test_each_guard_failure_ends_failed_with_a_named_error(make_target: TargetFactory, case: str) -> None:
    kwargs, phase, name, detail = GUARD_CASES[case]
    repo = make_target(**kwargs)
    with fsm_runner.setup(repo) as sess:
        rolled = sess.rollout(llm="m", require_samples=True)
        result = sess.evaluate() if rolled.ok else rolled
    assert not result.ok
    assert result.phase == phase and sess.state == "failed"
    assert result.error is not None and result.error.phase == phase
    text = str(result.error)
    assert name in text or result.error.kind == name, text
    assert detail in text
    assert "no repair agent is configured" in text
    records = journal(sess.run_dir)
    failing = [r for r in records if r.dest == "failed" and r.trigger != "cleanup"]
    assert failing and failing[-1].source == phase
    assert failing[-1].error is not None and failing[-1].error.phase == phase
    if case != "unhealthy":
        assert result.error.evidence and Path(result.error.evidence).exists()
    cleanup = [r for r in records if r.trigger == "cleanup"]
    assert cleanup and cleanup[-1].outcome is not None and cleanup[-1].outcome.data["run_for"] == "failure"


@pytest.mark.parametrize("isolate", [False, True], ids=["in-place", "isolated"])
def test_an_artifacts_dir_linked_out_of_the_repo_is_refused(
    make_target: TargetFactory, tmp_path: Path, isolate: bool
) -> None:
    repo = make_target()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (repo / ".aider_fsm" / "artifacts").symlink_to(outside)
    with pytest.raises(fsm_runner.EvidenceError) as caught:
        fsm_runner.setup(repo, isolate=isolate)
    assert str(caught.value) == (
        f"the artifacts directory {repo / '.aider_fsm' / 'artifacts'} leads to {outside}, outside {repo} "
        "(through a symbolic link); evidence goes outside the repository only when asked: remove the link, "
        "or pass that directory as artifacts_dir= (--artifacts-dir)"
    )
    assert list(outside.iterdir()) == []
    # Asked for, it is used.
    with fsm_runner.setup(repo, artifacts_dir=outside, isolate=isolate) as sess:
        assert sess.run_dir.parent == outside


def test_every_file_a_run_creates_is_readable_by_its_owner_only(make_target: TargetFactory) -> None:
    """Evidence may hold a secret until it is masked: journal, events, lock, JSON and output files are 0600."""
    with fsm_runner.setup(make_target()) as sess:
        result = sess.run("exact")
    assert result.ok
    files = [p for p in sess.run_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    names = {p.name for p in files}
    assert {"journal.jsonl", "events.jsonl", ".lock", "run.json", "cmd01_try01.stdout"} <= names
    loose = {str(p.relative_to(sess.run_dir)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert loose == {}
