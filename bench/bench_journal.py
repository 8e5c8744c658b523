"""Journal: write a journal of 10,000 transitions, then load it the way replay does.

The records are shaped like the driver's (trigger, source, dest, guard results, a phase outcome with its
command list, counters) and form a path the machine accepts: the phases up to ``evaluate``, then repair loops
(``evaluate --phase_failed--> repair --retry--> evaluate``), so the dry run fires every one of them through a
fresh machine. Writing goes through :class:`fsm_runner.evidence.journal.Journal` (one fsynced append per
record); loading is :func:`fsm_runner.evidence.journal.read_journal`, :func:`fsm_runner.replays.check_replay`
(the dry run, which reads the journal again) and :func:`fsm_runner.replays.can_replay`.

    python bench/bench_journal.py [-n 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Figure, report

from fsm_runner.engine import topology
from fsm_runner.evidence.journal import Journal, read_journal
from fsm_runner.evidence.records import Outcome
from fsm_runner.replays import can_replay, check_replay

TARGET_LOAD_S = 1.0
PIPELINE = "version: 1\ntests:\n  cmds: 'true'\nevaluation:\n  run_cmds: 'true'\n  metrics_path: m.json\n"


def _outcome(phase: str, status: str, seq: int) -> dict[str, Any]:
    commands = [
        {
            "index": i,
            "attempt": 1,
            "exit_code": 0 if status == "ok" else 1,
            "duration_s": 0.0123,
            "timed_out": False,
            "blocked": None,
            "result": f"{phase}.{seq}/cmd{i:02d}_try01.json",
        }
        for i in (1, 2)
    ]
    error = None
    if status == "failed":
        error = {
            "kind": "command",
            "message": f"{phase}: command 2/2 `python3 evaluate.py` exit code 1; see {phase}/cmd02.stderr",
            "phase": phase,
            "evidence": f"{phase}/cmd02_try01.stderr",
        }
    return {
        "phase": phase,
        "status": status,
        "duration_s": 0.0456,
        "reason": "",
        "commands": commands,
        "error": error,
        "data": {"metrics_path": "m.json"} if phase == "evaluate" else {},
    }


def transitions(n: int) -> list[tuple[str, str, str, dict[str, bool], str | None]]:
    """(trigger, source, dest, guards, outcome status) for ``n`` (> 8) transitions along an accepted path."""
    path: list[tuple[str, str, str, dict[str, bool], str | None]] = []
    for source, dest in zip(topology.PHASES[:7], topology.PHASES[1:8], strict=True):
        guards = {
            name: True for name in topology.guards_of(source, topology.PHASE_DONE) if name != "can_repair"
        }
        path.append((topology.PHASE_DONE, source, dest, guards, "ok"))
    fail = (topology.PHASE_FAILED, "evaluate", topology.REPAIR, {"can_repair": True}, "failed")
    wanted = ("failed_in_evaluate", "contract_intact")
    retry_guards = {name: name in wanted for name in topology.guards_of(topology.REPAIR, topology.RETRY)}
    retry = (topology.RETRY, topology.REPAIR, "evaluate", retry_guards, "ok")
    while len(path) < n - 1:
        path.append(fail if path[-1][2] == "evaluate" else retry)
    # The run ends failed with the repair budget spent, as a run worth replaying does.
    last = path[-1][2]
    guards = {"can_repair": False} if last == "evaluate" else {}
    path.append((topology.PHASE_FAILED, last, topology.FAILED, guards, "failed"))
    return path[:n]


def write_run(run_dir: Path, repo: Path, n: int) -> float:
    """Write run.json and ``n`` journal records; returns the time spent appending."""
    journal = Journal.open(run_dir)
    start = time.perf_counter()
    for i, (trigger, source, dest, guards, status) in enumerate(transitions(n), start=1):
        phase = topology.REPAIR if source == topology.REPAIR else source
        journal.append(
            trigger=trigger,
            source=source,
            dest=dest,
            guards=guards,
            outcome=Outcome.from_json(_outcome(phase, status, i)) if status else None,
            repairs_used=i // 2,
            repair_iters=n,
            status="running",
        )
    elapsed = time.perf_counter() - start
    run = {
        "run_id": run_dir.name,
        "status": "failed",
        "target": {"spec": str(repo), "repo_root": str(repo), "kind": "local"},
        "pipeline_rel": "pipeline.yml",
        "contract_sha256": "",
        "failed_phase": "evaluate",
    }
    (run_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    return elapsed


def _best(fn: Any, rounds: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=10_000, help="transitions (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="loads, best kept (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    args.n = max(10, args.n)
    rounds = max(1, args.rounds)
    with tempfile.TemporaryDirectory(prefix="fsm-bench-journal-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / "pipeline.yml").write_text(PIPELINE, encoding="utf-8")
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        written = write_run(run_dir, repo, args.n)
        size = (run_dir / "journal.jsonl").stat().st_size
        read_s, read = _best(lambda: read_journal(run_dir / "journal.jsonl"), rounds)
        walk_s, walk = _best(lambda: check_replay(run_dir), rounds)
        check_s, verdict = _best(lambda: can_replay(run_dir), rounds)
    if len(read.records) != args.n or read.problem:
        raise SystemExit(f"journal did not read back: {len(read.records)} records, {read.problem}")
    if not walk.ok:
        rejected = [s for s in walk.steps if not s.accepted][:3]
        raise SystemExit(f"the dry run rejected the generated journal: {rejected} {walk.contract_problem}")
    figures = [
        Figure(f"read_journal, {args.n} records", read_s, "s", TARGET_LOAD_S),
        Figure(
            f"check_replay (dry run), {args.n} records", walk_s, "s", TARGET_LOAD_S, note="includes a read"
        ),
        Figure("can_replay", check_s, "s", TARGET_LOAD_S, note=verdict[1][:40]),
        Figure("journal append (fsynced)", written / args.n * 1000, "ms/record"),
        Figure("dry run per transition", (walk_s - read_s) / args.n * 1e6, "us"),
    ]
    details = [
        ("records", f"{args.n} ({size / 1e6:.1f} MB, {size // args.n} bytes/record)"),
        ("write (Journal.append each)", f"{written:.3f} s"),
        ("loads", f"best of {rounds}"),
    ]
    return report(figures, details, as_json=args.json)


if __name__ == "__main__":
    raise SystemExit(main())
