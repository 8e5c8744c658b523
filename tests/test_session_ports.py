"""Each run's TCP port: AIDER_FSM_PORT in every stage, the same for the whole run, recorded and replayed."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

import fsm_runner
from fsm_runner.execution.ports import free_port
from fsm_runner.replays import replay
from tests.conftest import TargetFactory
from tests.helpers import target_files as files

#: Stages whose commands dump their environment (stage.py) in the fixture target.
DUMPING = ("bootstrap", "tests", "deploy", "rollout", "evaluate")


def stage_ports(repo: Path) -> dict[str, str | None]:
    """AIDER_FSM_PORT as the command of each stage that ran saw it."""
    envs = repo / ".aider_fsm" / "envs"
    dumps = {stage: envs / f"{stage}.json" for stage in DUMPING}
    return {s: json.loads(p.read_text()).get("AIDER_FSM_PORT") for s, p in dumps.items() if p.exists()}


def run_json(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "run.json").read_text()))


def test_every_stage_of_every_round_sees_the_port_recorded_in_run_json(make_target: TargetFactory) -> None:
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        assert sess.rollout(llm="m").ok and sess.evaluate().ok
        port = run_json(sess.run_dir)["port"]
        assert isinstance(port, int) and 1 <= port <= 65535
        assert stage_ports(repo) == dict.fromkeys(DUMPING, str(port))
        for stage in ("rollout", "evaluate"):
            (repo / ".aider_fsm" / "envs" / f"{stage}.json").unlink()
        assert sess.rollout(llm="m2").ok and sess.evaluate().ok  # a second round (and a new deploy)
        assert stage_ports(repo) == dict.fromkeys(DUMPING, str(port))
    assert run_json(sess.run_dir)["port"] == port


def test_concurrent_runs_get_different_ports(make_target: TargetFactory) -> None:
    repos = [make_target("one"), make_target("two")]
    sessions = [fsm_runner.setup(repo) for repo in repos]
    try:
        for sess in sessions:
            assert sess.rollout(llm="m").ok  # both deployed at the same time
        ports = [run_json(sess.run_dir)["port"] for sess in sessions]
        assert ports[0] != ports[1]
        for repo, port in zip(repos, ports, strict=True):
            assert stage_ports(repo)["rollout"] == str(port)
    finally:
        for sess in sessions:
            sess.close()


def test_an_inherited_port_is_replaced_but_an_override_pins_it(
    make_target: TargetFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIDER_FSM_PORT", "9")  # say, this process is itself a stage of an outer run
    repo = make_target()
    with fsm_runner.setup(repo) as sess:
        assert sess.evaluate(llm="m").ok
    assert stage_ports(repo)["tests"] == str(run_json(sess.run_dir)["port"]) != "9"
    pinned = str(free_port())
    with fsm_runner.setup(repo, env_overrides={"AIDER_FSM_PORT": pinned}) as sess:
        assert sess.evaluate(llm="m").ok
    assert stage_ports(repo) == dict.fromkeys(("bootstrap", "tests", "deploy", "rollout", "evaluate"), pinned)
    assert run_json(sess.run_dir)["port"] == int(pinned)


def test_a_pinned_port_that_is_not_a_port_fails_before_the_run_starts(make_target: TargetFactory) -> None:
    repo = make_target()
    with pytest.raises(fsm_runner.UsageError, match="AIDER_FSM_PORT must be a TCP port number"):
        fsm_runner.setup(repo, env_overrides={"AIDER_FSM_PORT": "http"})
    assert not (repo / ".aider_fsm" / "artifacts").exists()


# -- replay ------------------------------------------------------------------------------------------------


def failed_run(repo: Path) -> Path:
    with fsm_runner.setup(repo) as sess:
        sess.rollout(llm="m")
        assert not sess.evaluate().ok
    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    (repo / ".aider_fsm" / "envs" / "evaluate.json").unlink()
    return sess.run_dir


def events(run_dir: Path, name: str) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def test_replay_continues_on_the_runs_port(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    port = run_json(run_dir)["port"]
    assert replay(run_dir).ok
    assert stage_ports(repo)["evaluate"] == stage_ports(repo)["deploy"] == str(port)
    assert run_json(run_dir)["port"] == port
    assert not events(run_dir, "replay.port_changed")


def test_replay_moves_to_a_free_port_when_the_runs_port_was_taken(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    port = run_json(run_dir)["port"]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        assert replay(run_dir).ok
    new = run_json(run_dir)["port"]
    assert new != port and stage_ports(repo)["evaluate"] == stage_ports(repo)["deploy"] == str(new)
    [changed] = events(run_dir, "replay.port_changed")
    assert (changed["old_port"], changed["port"], changed["level"]) == (port, new, "warning")


def test_replay_of_a_run_recorded_without_a_port_gives_it_one(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    run_dir = failed_run(repo)
    old = run_json(run_dir)
    del old["port"]  # run.json as runners before ports wrote it
    (run_dir / "run.json").write_text(json.dumps(old))
    assert replay(run_dir).ok
    port = run_json(run_dir)["port"]
    assert isinstance(port, int) and stage_ports(repo)["evaluate"] == str(port)
    assert [e["port"] for e in events(run_dir, "replay.port_assigned")] == [port]
