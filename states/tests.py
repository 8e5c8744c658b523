"""tests: the target's own checks, run before anything is deployed."""

from __future__ import annotations

from states.base import CommandPhase


class TestsPhase(CommandPhase):
    __test__ = False  # not a pytest class
    name = "tests"
    section_name = "tests"
