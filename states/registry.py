"""The one place the engine looks up a phase by state name."""

from __future__ import annotations

from fsm_runner.phase import Phase
from states.auth import AuthPhase
from states.bootstrap import BootstrapPhase
from states.clone import ClonePhase
from states.deploy import DeployPhase
from states.evaluate import BenchmarkPhase, EvaluatePhase
from states.health import HealthPhase
from states.repair import RepairPhase
from states.rollout import RolloutPhase
from states.teardown import TeardownPhase
from states.tests import TestsPhase
from states.verify import VerifyPhase

PHASES: dict[str, Phase] = {
    phase.name: phase
    for phase in (
        ClonePhase(),
        BootstrapPhase(),
        AuthPhase(),
        TestsPhase(),
        DeployPhase(),
        HealthPhase(),
        RolloutPhase(),
        EvaluatePhase(),
        BenchmarkPhase(),
        VerifyPhase(),
        TeardownPhase(),
        RepairPhase(),
    )
}
