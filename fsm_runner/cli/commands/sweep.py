"""``fsm-runner sweep SWEEP.yml``: every target x llm of a sweep file, a table (or JSON) at the end."""

from __future__ import annotations

import argparse
import sys

from fsm_runner.cli.errors import EXIT_FAILED, EXIT_OK
from fsm_runner.cli.output import emit_json, print_error, print_lines
from fsm_runner.engine.progress import printable
from fsm_runner.errors import UsageError
from fsm_runner.sweeps.compare import one_line
from fsm_runner.sweeps.progress import Progress, aligned, short_name
from fsm_runner.sweeps.spec import load_sweep
from fsm_runner.sweeps.sweep import SweepResult, plan_sweep, run_plan


def table_lines(result: SweepResult) -> list[str]:
    """The rows as a text table, then one line of counts and where the rows are."""
    header = ("target", "llm", "status", "score", "time", "error / run")
    lines = []
    run_dirs: list[str | None] = []  # a failed row's run dir, on a line of its own under it
    for row in result.rows:
        status = "ok" if row.ok else "FAILED"
        score = "-" if row.score is None else f"{row.score:.3f}"
        failed = not row.ok and bool(row.error)
        detail = one_line(row.error or "") if failed else (row.run_dir or "")
        run_dirs.append(row.run_dir if failed and row.run_dir and row.run_dir not in detail else None)
        lines.append(
            (
                short_name(row.target, 32),
                short_name(row.llm, 32),
                status,
                score,
                f"{row.duration_s:.1f}s",
                detail,
            )
        )
    table = aligned([header, *lines])
    indent = " " * table[0].index(header[-1])
    text = [table[0]]
    for line, run_dir in zip(table[1:], run_dirs, strict=True):
        text.append(line)
        if run_dir:
            text.append(indent + printable(f"run: {run_dir}"))
    resumed = f", {result.skipped} kept from before (resume)" if result.skipped else ""
    stopped = "; interrupted: the cells without a row did not run" if result.interrupted else ""
    cells = "1 cell" if result.total == 1 else f"{result.total} cells"
    text.append("")
    text.append(
        f"{cells}: {result.ok} ok, {result.failed} failed{resumed} in {result.duration_s:.1f}s"
        f"{stopped}; rows: {result.results_path}"
    )
    return text


def command(args: argparse.Namespace) -> int:
    spec = load_sweep(args.sweep_file)
    executor = args.executor or spec.executor
    address = args.address if args.address is not None else spec.address
    if address is not None and executor != "ray":
        raise UsageError("--address joins a Ray cluster: use it with --executor ray (or `executor: ray`)")
    plan = plan_sweep(
        spec.resolved_targets(),
        spec.resolved_llms(),
        mode=spec.mode,
        executor=executor,
        concurrency=args.concurrency or spec.concurrency,
        env_overrides=spec.env,
        repair_iters=spec.repair.iters,
        repair_agent=spec.repair.cmd,
        out_dir=spec.resolved_out_dir(),
        resume=args.resume,
        address=address,
        num_cpus=spec.num_cpus,
        base=spec.base,
    )
    progress = Progress(len(plan.cells), sink=print_error, stream=sys.stderr)
    result = run_plan(plan, progress=progress)
    assert isinstance(result, SweepResult)
    if args.json:
        emit_json(result.to_json())
    else:
        print_lines(table_lines(result))
    return EXIT_OK if result.failed == 0 else EXIT_FAILED
