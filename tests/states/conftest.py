"""The ``make_ctx`` fixture of the phase tests: run contexts in the test's tmp dir, nothing left deployed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.phases import PhaseContexts, phase_contexts


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[PhaseContexts]:
    with phase_contexts(tmp_path) as made:
        yield made
