"""Child processes that hold a run's lock, for the tests of the lock and of the run store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HOLDER = """
import sys, time
from pathlib import Path
from fsm_runner.evidence.lock import hold_lock
handle = hold_lock(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""

#: Locks the file without writing a pid into it, as a foreign tool might.
BARE_HOLDER = """
import fcntl, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


class LockHolders:
    """Starts children that hold a lock (a run dir's, or a bare lock file) until they are killed."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def start(self, target: Path, *, bare: bool = False) -> subprocess.Popen[str]:
        script = BARE_HOLDER if bare else HOLDER
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
        )
        self.started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def holders() -> Iterator[LockHolders]:
    """Lock-holding children, killed at the end whatever the test did."""
    started = LockHolders()
    yield started
    started.stop_all()
