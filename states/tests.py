"""tests: the target's own checks, run before anything is deployed."""

from __future__ import annotations

from fsm_runner.contract.pipeline import TestsSpec
from fsm_runner.states._command import CommandPhase


class TestsPhase(CommandPhase[TestsSpec]):
    __test__ = False  # not a pytest class
    name = "tests"
    section_name = "tests"
