"""The run's TCP port: a port on 127.0.0.1, free when the run started, in ``AIDER_FSM_PORT`` for every stage.

A service the contract deploys listens on it and its health check probes it, so two runs of one contract on
one machine never fight over a port. The port is picked by binding port 0 and closing the socket: nothing
holds it for the run, so it is "free at the start", not reserved (another program may still take it).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from fsm_runner.contract.fields import PORT_ENV
from fsm_runner.errors import UsageError

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a service could listen on ``port`` now.

    SO_REUSEADDR as servers set it: connections of an earlier listener still in TIME_WAIT do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def pinned_port(overrides: Mapping[str, str]) -> int | None:
    """The port a caller pinned with ``env_overrides`` / ``--env AIDER_FSM_PORT=N``, or None.

    Only the caller's overrides pin a port; an ``AIDER_FSM_PORT`` inherited from the environment (a run
    started from a stage of another run) does not, so a nested run still gets a port of its own.
    """
    raw = overrides.get(PORT_ENV)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 65535):
        raise UsageError(
            f"{PORT_ENV} must be a TCP port number from 1 to 65535, got {raw!r}; "
            "leave it unset and the runner picks a free port for the run"
        )
    return int(raw)


def run_port(overrides: Mapping[str, str]) -> int:
    """The port of a new run: the caller's pinned one, else a free one."""
    pinned = pinned_port(overrides)
    return free_port() if pinned is None else pinned
