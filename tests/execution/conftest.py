"""What the execution tests share: a /proc view of process groups, and cleanup of groups left running."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm_runner.execution.process import group_alive, kill_group


def pgrp_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``, read straight from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


@pytest.fixture
def pgids() -> Iterator[list[int]]:
    """Groups a test started on purpose; killed afterwards even when the test fails."""
    started: list[int] = []
    yield started
    for pgid in started:
        if group_alive(pgid):
            kill_group(pgid, grace=0.2)
