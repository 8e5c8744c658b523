"""``fsm-runner run TARGET``: a whole run (or one up to ``--until``), reported as it happens."""

from __future__ import annotations

import argparse
from typing import Any

from fsm_runner.api import setup
from fsm_runner.cli.errors import EXIT_FAILED, EXIT_OK
from fsm_runner.cli.live import LiveReport, interrupted, summary_lines
from fsm_runner.cli.output import emit_json, note, print_lines
from fsm_runner.engine import topology
from fsm_runner.repair import CommandAgent


def repair_options(args: argparse.Namespace) -> tuple[CommandAgent | None, int]:
    """The agent ``--repair-cmd`` names and the repair budget (3 with an agent, 0 without, unless given)."""
    agent = CommandAgent(args.repair_cmd) if args.repair_cmd else None
    if agent is None and args.repair_iters:
        note("--repair-iters has no effect without --repair-cmd")
    iters = args.repair_iters if args.repair_iters is not None else (3 if agent else 0)
    return agent, iters


def finish(result: dict[str, Any], *, json_mode: bool, until: str | None = None) -> int:
    """Print the closing block (or the JSON result); the exit code says whether the run succeeded."""
    if json_mode:
        emit_json(result)
    else:
        print_lines(["", *summary_lines(result, until=until)])
    return EXIT_OK if result.get("ok") else EXIT_FAILED


def command(args: argparse.Namespace) -> int:
    agent, iters = repair_options(args)
    until = args.until if args.until and args.until != topology.PHASES[-1] else None
    live = LiveReport(quiet=args.json)
    with live:
        session = setup(
            args.target,
            pipeline_rel=args.pipeline,
            clones_dir=args.clones_dir,
            artifacts_dir=args.artifacts_dir,
            unattended=args.unattended,
            repair_agent=agent,
            ref=args.ref,
            env_overrides=dict(args.env),
            console=False,
            on_transition=live,
            wait=args.wait,
            on_wait=note,
            isolate=args.isolate,
            sandbox=args.sandbox,
            progress=live.progress,
            heartbeat_s=args.heartbeat,
            require_metrics=not args.no_require_metrics,
        )
        live.watch(session.run_dir, lambda text: session.ctx.redactor.mask(text))
        options: dict[str, Any] = {
            "mode": args.mode,
            "require_samples": args.require_samples,
            "repair_iters": iters,
        }
        try:
            try:
                if until:
                    result = session.advance(until, llm=args.llm, **options)
                    report = {**result.to_json(), "until": until, "state": session.state}
                else:
                    report = session.run(args.llm, **options).to_json()
            finally:
                session.close()
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: say where the run is and how to continue it
            raise interrupted(exc, session.run_dir) from None
    return finish(report, json_mode=args.json, until=until)
