"""The pipeline's phases: one module per state of the machine, named after the state it runs.

Each phase is a small class with ``run(ctx) -> Outcome`` that depends only on :mod:`fsm_runner.engine`
(plus the contract and execution layers). Modules starting with ``_`` are helpers shared by phases.
:func:`phases` is the registry the session hands to the driver.
"""

from __future__ import annotations

from fsm_runner.engine.phase import Phase
from fsm_runner.engine.topology import PHASES
from fsm_runner.states.auth import AuthPhase
from fsm_runner.states.benchmark import BenchmarkPhase
from fsm_runner.states.bootstrap import BootstrapPhase
from fsm_runner.states.clone import ClonePhase
from fsm_runner.states.deploy_setup import DeploySetupPhase
from fsm_runner.states.evaluate import EvaluatePhase
from fsm_runner.states.health import HealthPhase
from fsm_runner.states.repair import RepairPhase
from fsm_runner.states.rollout import RolloutPhase
from fsm_runner.states.teardown import TeardownPhase
from fsm_runner.states.tests import TestsPhase
from fsm_runner.states.verify import VerifyPhase


def phases() -> dict[str, Phase]:
    """A fresh phase object per state name, in pipeline order (``repair`` last)."""
    found: tuple[Phase, ...] = (
        ClonePhase(),
        BootstrapPhase(),
        AuthPhase(),
        TestsPhase(),
        DeploySetupPhase(),
        HealthPhase(),
        RolloutPhase(),
        EvaluatePhase(),
        BenchmarkPhase(),
        VerifyPhase(),
        TeardownPhase(),
        RepairPhase(),
    )
    return {phase.name: phase for phase in found}


def section_aliases() -> dict[str, str]:
    """pipeline.yml sections named otherwise than the phase that runs their commands (``evaluation`` ->
    ``evaluate``, ``deploy`` -> ``deploy_setup``): the names that stand for a phase besides its own."""
    return {
        section: phase.name
        for phase in phases().values()
        if (section := getattr(phase, "section_name", "")) and section != phase.name
    }


def phase_named(name: str) -> str | None:
    """The phase ``name`` is (a phase name, or a section name of :func:`section_aliases`), or None."""
    if name in PHASES:
        return name
    return section_aliases().get(name)
