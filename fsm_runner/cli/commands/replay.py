"""``fsm-runner replay RUN``: continue a failed run; ``--dry-run`` only checks that it would."""

from __future__ import annotations

import argparse
import os

from fsm_runner.cli.commands.run import finish, repair_options
from fsm_runner.cli.errors import EXIT_FAILED, EXIT_OK
from fsm_runner.cli.live import LiveReport, interrupted
from fsm_runner.cli.output import emit_json, find_run, note, print_lines
from fsm_runner.errors import ReplayError
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.replays import can_replay, check_replay, replay


def command(args: argparse.Namespace) -> int:
    run_dir = find_run(args, args.run)
    if args.dry_run:
        report = check_replay(run_dir, sandbox=args.sandbox)
        if args.json:
            emit_json(report.to_json())
        else:
            print_lines(report.lines())
        return EXIT_OK if report.ok else EXIT_FAILED
    ok, reason = can_replay(run_dir)
    if not ok:
        raise ReplayError(f"cannot replay: {reason}")
    agent, iters = repair_options(args)
    live = LiveReport(quiet=args.json)
    live.watch(run_dir, Redactor.from_env({**os.environ, **dict(args.env)}).mask)
    with live:
        try:
            result = replay(
                run_dir,
                repair_iters=iters,
                repair_agent=agent,
                env_overrides=dict(args.env),
                console=False,
                on_transition=live,
                wait=args.wait,
                on_wait=note,
                sandbox=args.sandbox,
                progress=live.progress,
                heartbeat_s=args.heartbeat,
            )
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: say where the run is and how to continue it
            raise interrupted(exc, run_dir) from None
    return finish(result.to_json(), json_mode=args.json)
