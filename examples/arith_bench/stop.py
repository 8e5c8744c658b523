"""Teardown: stop the server named in the pid file (SIGTERM, then SIGKILL), remove its files, and wait until
its port (--port, the run's $AIDER_FSM_PORT) is free again, so the next deploy can listen on it.

Safe to run at any time: nothing running, or a stale pid file, is not an error.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
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


def is_our_server(pid: int, port: int | None) -> bool:
    """Guard against a recycled pid and a copied pid file: on Linux, the process must be running server.py,
    on this run's port (a copy of the directory carries the pid file of the original's live server)."""
    if not Path("/proc/self").exists():
        return True  # no /proc (macOS): trust the pid file
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not any(arg.endswith(b"server.py") for arg in args):
        return False
    flag = [b"--port", str(port).encode()]
    return not port or any(args[i : i + 2] == flag for i in range(len(args) - 1))


def stop(pid: int, grace: float) -> str:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return "stopped"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return "killed"


def port_in_use(port: int) -> bool:
    """True while something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port_free(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while port_in_use(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pid-file", default=".aider_fsm/server.pid")
    parser.add_argument(
        "--port", type=benchlib.port_number, default=benchlib.run_port(), help="default $AIDER_FSM_PORT"
    )
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args()
    pid_file = benchlib.repo_path(args.pid_file)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = 0
    if pid and alive(pid) and is_our_server(pid, args.port):
        print(f"stop: server pid {pid} {stop(pid, args.grace)}")
    else:
        print("stop: no server running")
    pid_file.unlink(missing_ok=True)
    benchlib.runtime_env_path().unlink(missing_ok=True)
    if args.port and not wait_port_free(args.port, args.grace):
        print(f"stop: port {args.port} is still in use by another program")
    return 0


if __name__ == "__main__":
    benchlib.cli(main)
