"""Health detection: time from a service becoming ready to the ``health`` phase passing.

The target's deploy starts a service that waits a known delay, starts listening, and only then writes the
wall-clock time it became ready. The health command is a cheap TCP connect (bash ``/dev/tcp``), so what is
measured is the runner's polling and bookkeeping, not the probe's own start-up; a second series uses a
Python probe like most real contracts do. The latency is the ``transition`` event that leaves ``health``
(``events.jsonl``, microsecond timestamps) minus the ready time. Delays are drawn from a seeded RNG.

    python bench/bench_health.py [--runs 12] [--poll-cap SECONDS] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import textwrap
from pathlib import Path

from common import Figure, median, report

import fsm_runner
import fsm_runner.states.health

TARGET_S = 0.25

SERVICE = textwrap.dedent(
    """
    import os, socket, time
    time.sleep(float(os.environ.get("SVC_DELAY", "0")))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    ready = time.time()
    port = srv.getsockname()[1]
    with open(".aider_fsm/port.tmp", "w") as fh:
        fh.write(f"{port}\\n")
    os.replace(".aider_fsm/port.tmp", ".aider_fsm/port")
    with open(".aider_fsm/ready_at", "w") as fh:
        fh.write(repr(ready))
    while True:
        conn, _ = srv.accept()
        conn.close()
    """
)
PY_PROBE = textwrap.dedent(
    """
    import socket, sys
    try:
        port = int(open(".aider_fsm/port").read())
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except (OSError, ValueError) as exc:
        sys.exit(f"not ready: {exc}")
    """
)
PROBES = {
    "bash /dev/tcp probe": "read -r port < .aider_fsm/port && exec 3<>/dev/tcp/127.0.0.1/$port",
    "python3 probe": "python3 probe.py",
}


def _target(root: Path, probe: str) -> Path:
    (root / ".aider_fsm").mkdir(parents=True)
    (root / "svc.py").write_text(SERVICE, encoding="utf-8")
    (root / "probe.py").write_text(PY_PROBE, encoding="utf-8")
    pipeline = {
        "version": 1,
        "deploy": {
            "setup_cmds": ["python3 svc.py > .aider_fsm/svc.log 2>&1 &"],
            "health_cmds": [probe],
            "timeout_seconds": 30,
        },
    }
    (root / "pipeline.yml").write_text(json.dumps(pipeline), encoding="utf-8")  # JSON is YAML
    return root


def _latency(repo: Path, delay: float) -> float:
    for name in ("port", "ready_at"):
        (repo / ".aider_fsm" / name).unlink(missing_ok=True)
    with fsm_runner.setup(repo, env_overrides={"SVC_DELAY": f"{delay:.3f}"}) as sess:
        result = sess.rollout(llm="bench")
        run_dir = sess.run_dir
    if not result.ok:
        raise SystemExit(f"health did not pass: {result.error}")
    ready = float((repo / ".aider_fsm" / "ready_at").read_text())
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "transition" and event.get("source") == "health":
            if event.get("trigger") != "phase_done":
                raise SystemExit(f"health left with {event.get('trigger')}")
            return float(event["ts"]) - ready
    raise SystemExit(f"no transition out of health in {run_dir / 'events.jsonl'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=12, help="runs per probe (default 12)")
    parser.add_argument(
        "--poll-cap",
        type=float,
        help="override the health phase's longest poll interval (states.health.MAX_DELAY) to try a fix",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.poll_cap is not None:
        fsm_runner.states.health.MAX_DELAY = args.poll_cap
    rng = random.Random(1234)
    delays = [round(rng.uniform(0.2, 1.5), 3) for _ in range(max(1, args.runs))]
    figures: list[Figure] = []
    details = [("service delays (s)", ", ".join(f"{d:.2f}" for d in delays))]
    if args.poll_cap is not None:
        details.append(("poll interval cap (overridden)", f"{args.poll_cap} s"))
    with tempfile.TemporaryDirectory(prefix="fsm-bench-health-") as tmp:
        for index, (label, probe) in enumerate(PROBES.items()):
            repo = _target(Path(tmp) / f"repo{index}", probe)
            latencies = [_latency(repo, d) for d in delays]
            target = TARGET_S if index == 0 else None
            figures.append(Figure(f"health latency, median ({label})", median(latencies), "s", target))
            figures.append(Figure(f"health latency, max ({label})", max(latencies), "s", target))
            details.append((f"latencies, {label} (s)", ", ".join(f"{v:.3f}" for v in latencies)))
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
