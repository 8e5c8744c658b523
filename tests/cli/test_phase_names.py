"""Section names stand for their phase (``--until evaluation`` is ``--until evaluate``), and a result's
``phase`` is where the call ended."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import fsm_runner
from fsm_runner.contract.pipeline import PipelineSpec
from fsm_runner.engine import topology
from fsm_runner.states import phase_named, phases, section_aliases
from tests.conftest import TargetFactory, pid_alive, service_pid

#: pipeline.yml's stage sections: every key but the format version, the policy and the evidence location.
STAGE_SECTIONS = [
    f.name
    for f in attrs.fields(PipelineSpec)
    if f.name not in ("version", "security", "artifacts", "path", "sha256")
]
ALIASES = [("evaluation", "evaluate", "benchmark"), ("deploy", "deploy_setup", "health")]


def test_the_aliases_are_the_sections_named_otherwise_than_their_phase() -> None:
    assert section_aliases() == {"deploy": "deploy_setup", "evaluation": "evaluate"}
    for section in STAGE_SECTIONS:
        assert phase_named(section) in topology.PHASES, section  # every section names a phase
    for phase in phases().values():
        section = getattr(phase, "section_name", "")
        if section:
            assert phase_named(section) == phase.name
    assert all(phase_named(p) == p for p in topology.PHASES)
    assert phase_named("lunch") is None and phase_named("repair") is None


@pytest.mark.parametrize(("alias", "phase", "next_phase"), ALIASES)
def test_run_until_a_section_name_stops_after_its_phase(
    make_target: TargetFactory, alias: str, phase: str, next_phase: str
) -> None:
    repo = make_target()
    proc = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--llm", "toy", "--until", alias, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert (result["ok"], result["until"], result["phase"]) == (True, phase, phase)
    assert result["state"] == next_phase and [p["phase"] for p in result["phases"]][-1] == phase
    run_dir = Path(result["run_dir"])
    assert (run_dir / phase).is_dir() and not (run_dir / next_phase).exists()
    assert (run_dir / "teardown").is_dir()  # what deploy started was stopped
    pid = service_pid(repo)  # the service may have been stopped before it wrote its pid file
    assert pid is None or not pid_alive(pid)


@pytest.mark.parametrize(("alias", "phase", "next_phase"), ALIASES)
def test_advance_takes_a_section_name(
    make_target: TargetFactory, alias: str, phase: str, next_phase: str
) -> None:
    with fsm_runner.setup(make_target()) as sess:
        result = sess.advance(alias, llm="toy")
        assert result.ok and result.phase == phase and sess.state == next_phase


def test_an_unknown_name_lists_the_phases_and_the_aliases(make_target: TargetFactory) -> None:
    with (
        fsm_runner.setup(make_target()) as sess,
        pytest.raises(fsm_runner.UsageError, match=r"phases are clone, .*evaluation \(evaluate\)"),
    ):
        sess.advance("evaluations")


def test_a_result_phase_is_where_the_call_ended(make_target: TargetFactory) -> None:
    with fsm_runner.setup(make_target()) as sess:
        rolled = sess.rollout(llm="toy", require_samples=True)
        assert rolled.ok and rolled.phase == "rollout" and sess.state == "evaluate"
        assert rolled.to_json()["phase"] == "rollout"
        evaluated = sess.evaluate()
        assert evaluated.ok and evaluated.phase == topology.DONE
