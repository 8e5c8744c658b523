"""The run's TCP port: free when picked, detected when taken, pinned only by the caller's overrides."""

from __future__ import annotations

import socket

import pytest

from fsm_runner.errors import UsageError
from fsm_runner.execution.ports import free_port, pinned_port, port_is_free, run_port


def test_a_free_port_can_be_listened_on() -> None:
    port = free_port()
    assert 1024 <= port <= 65535 and port_is_free(port)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert not port_is_free(port)
    assert port_is_free(port)


def test_a_port_whose_connections_linger_in_time_wait_counts_as_free() -> None:
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end stays in TIME_WAIT
        client.close()
    assert port_is_free(port)


def test_ports_of_new_runs_differ() -> None:
    ports = {run_port({}) for _ in range(20)}
    assert len(ports) > 1


@pytest.mark.parametrize("raw, port", [("8123", 8123), ("1", 1), ("65535", 65535)])
def test_the_callers_override_pins_the_port(raw: str, port: int) -> None:
    assert pinned_port({"AIDER_FSM_PORT": raw}) == port == run_port({"AIDER_FSM_PORT": raw})
    assert pinned_port({"OTHER": raw}) is None


@pytest.mark.parametrize("raw", ["", "0", "65536", "http", " 80", "-1", "８０"])
def test_a_pinned_port_that_is_not_a_port_is_a_usage_error(raw: str) -> None:
    with pytest.raises(UsageError, match=f"AIDER_FSM_PORT must be a TCP port number from 1 to 65535, got {raw!r}"):
        pinned_port({"AIDER_FSM_PORT": raw})
