"""Teardown: stop the server named in the pid file (SIGTERM, then SIGKILL) and remove its files.

Safe to run at any time: nothing running, or a stale pid file, is not an error.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import benchlib


def alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def is_our_server(pid: int) -> bool:
    """Guard against a recycled pid: on Linux, the process must be running server.py."""
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): trust the pid file
    try:
        return b"server.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop(pid: int, grace: float) -> str:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return "stopped"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return "killed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pid-file", default=".aider_fsm/server.pid")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args()
    pid_file = benchlib.repo_path(args.pid_file)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid and alive(pid) and is_our_server(pid):
        print(f"stop: server pid {pid} {stop(pid, args.grace)}")
    else:
        print("stop: no server running")
    pid_file.unlink(missing_ok=True)
    benchlib.runtime_env_path().unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    benchlib.cli(main)
