"""Health check: exit 0 once the server answers GET /health with status ok.

It probes 127.0.0.1 on --port (the run's $AIDER_FSM_PORT under the runner); by hand, without a port, it asks
the server named in runtime_env.json. It polls for up to --wait seconds (the runner also retries with
backoff), so a slow start is not a failure.
"""

from __future__ import annotations

import argparse
import sys
import time

import benchlib


def check_once(port: int) -> str:
    """Return "" when healthy, else why not."""
    path = benchlib.runtime_env_path()
    if not port and not path.is_file():
        return f"{path} not written yet"
    try:
        url = f"http://127.0.0.1:{port}/health" if port else benchlib.read_json(path)["service"]["health_url"]
        body = benchlib.http_json(url, timeout=2.0)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        return f"not healthy: {exc}"
    return "" if isinstance(body, dict) and body.get("status") == "ok" else f"not healthy: {body!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--port", type=benchlib.port_number, default=benchlib.run_port(), help="default $AIDER_FSM_PORT"
    )
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to keep polling (0 = one check)")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        problem = check_once(args.port)
        if not problem:
            print("healthy")
            return 0
        if time.monotonic() >= deadline:
            print(problem, file=sys.stderr)
            return 1
        time.sleep(0.1)


if __name__ == "__main__":
    benchlib.cli(main)
