"""``fsm-runner``: run a target, check or start a contract, and read, replay or draw past runs.

Exit codes: 0 success, 1 the run (or dry-run check) failed, 2 usage or contract error, 130 on SIGINT,
143 on SIGTERM. Errors are one ``error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fsm_runner import __version__
from fsm_runner import machine as topology
from fsm_runner.api import setup
from fsm_runner.cli_live import LiveReport, summary_lines
from fsm_runner.cli_report import (
    artifacts_root,
    list_runs,
    resolve_run,
    run_info,
    runs_table,
    timeline_json,
    timeline_lines,
)
from fsm_runner.contract import (
    actions_json_schema,
    bootstrap_json_schema,
    pipeline_json_schema,
    validate_repo,
)
from fsm_runner.contract.actions import ACTIONS_REL
from fsm_runner.contract.bootstrap import BOOTSTRAP_REL
from fsm_runner.errors import ContractError, FsmRunnerError, ReplayError, UsageError
from fsm_runner.lifecycle import Interrupted, sigterm_raises
from fsm_runner.repair import CommandAgent
from fsm_runner.session import Session
from fsm_runner.skeleton import write_skeleton

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "pipeline": pipeline_json_schema,
    "bootstrap": bootstrap_json_schema,
    "actions": actions_json_schema,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fsm-runner`` script and ``python -m fsm_runner``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with sigterm_raises():
            return int(args.handler(args))
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("interrupted: received SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except FsmRunnerError as exc:
        if getattr(args, "json", False):
            _emit_json({"ok": False, "error": {"kind": type(exc).__name__, "message": str(exc)}})
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, ContractError) and args.command == "run":
            print("hint: `fsm-runner validate TARGET` lists every problem of the contract", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `fsm-runner runs | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# -- argument types --------------------------------------------------------------------------------------


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not _ENV_NAME.match(name):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (NAME: letters, digits, _)")
    return name, value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def _repair(args: argparse.Namespace) -> tuple[CommandAgent | None, int]:
    """The agent ``--repair-cmd`` names and the repair budget (3 with an agent, 0 without, unless given)."""
    agent = CommandAgent(args.repair_cmd) if args.repair_cmd else None
    if agent is None and args.repair_iters:
        print("note: --repair-iters has no effect without --repair-cmd", file=sys.stderr)
    iters = args.repair_iters if args.repair_iters is not None else (3 if agent else 0)
    return agent, iters


def _emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _print(lines: Sequence[str]) -> None:
    if lines:
        print("\n".join(lines), flush=True)


# -- run -------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    agent, iters = _repair(args)
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
        )
        live.watch(session.run_dir)
        try:
            if args.until and args.until != topology.PHASES[-1]:
                result = _run_until(session, args, iters)
            else:
                result = session.run(
                    args.llm, mode=args.mode, require_samples=args.require_samples, repair_iters=iters
                ).to_json()
        finally:
            session.close()
    return _finish(result, json_mode=args.json, until=args.until)


def _run_until(session: Session, args: argparse.Namespace, iters: int) -> dict[str, Any]:
    """Run through ``--until``; ``close()`` then tears down whatever is deployed."""
    session.advance(
        args.until, llm=args.llm, mode=args.mode, require_samples=args.require_samples, repair_iters=iters
    )
    ctx = session.ctx
    failed = session.state == topology.FAILED
    metrics = (ctx.outputs.get("evaluate") or {}).get("metrics")
    return {
        "ok": not failed,
        "until": args.until,
        "state": session.state,
        "phase": (ctx.failed_phase or session.state) if failed else args.until,
        "run_id": ctx.run_id,
        "run_dir": str(ctx.run_dir),
        "error": ctx.last_error.to_json() if failed and ctx.last_error else None,
        "metrics": metrics,
        "score": metrics.get("score") if isinstance(metrics, dict) else None,
    }


def _finish(result: dict[str, Any], *, json_mode: bool, until: str | None = None) -> int:
    if json_mode:
        _emit_json(result)
    else:
        _print(["", *summary_lines(result, until=until)])
    return EXIT_OK if result.get("ok") else EXIT_FAILED


# -- contract commands -----------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    root = Path(args.path).resolve()
    if not root.is_dir():
        raise UsageError(f"{args.path}: not a directory (give the repository root)")
    problems = validate_repo(root, args.pipeline)
    if args.json:
        _emit_json([{"path": p.path, "line": p.line, "key": p.key, "problem": p.problem} for p in problems])
    else:
        _print([str(p) for p in problems])
    if problems:
        print(f"error: {len(problems)} problem(s) in the contract of {root}", file=sys.stderr)
        return EXIT_USAGE
    checked = [args.pipeline, *(rel for rel in (BOOTSTRAP_REL, ACTIONS_REL) if (root / rel).exists())]
    if not args.json:
        print(f"ok: {root}: {', '.join(checked)} valid")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    written = write_skeleton(root, force=args.force)
    for path in written:
        print(f"wrote {path}")
    problems = validate_repo(root.resolve())
    if problems:  # the skeleton is ours: this would be a bug, but say so rather than hide it
        _print([str(p) for p in problems])
        return EXIT_USAGE
    print(
        f"next: replace the evaluation placeholder in {written[0]}, then "
        f"`fsm-runner validate {args.dir}` and `fsm-runner run {args.dir} --llm MODEL`"
    )
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    _emit_json(SCHEMAS[args.file]())
    return EXIT_OK


# -- reading runs ----------------------------------------------------------------------------------------


def _find_run(args: argparse.Namespace, spec: str) -> Path:
    return resolve_run(spec, repo=Path(args.repo).resolve(), artifacts_dir=args.artifacts_dir)


def cmd_runs(args: argparse.Namespace) -> int:
    repo = Path(args.repo).resolve()
    if not repo.is_dir():
        raise UsageError(
            f"{args.repo}: not a directory; give the repository root (for a git target, the clone "
            "directory: the parent of `.aider_fsm` in the run dir that `run` printed)"
        )
    root = args.artifacts_dir.resolve() if args.artifacts_dir else artifacts_root(repo, args.pipeline)
    infos = [run_info(p) for p in list_runs(root)][: args.limit or None]
    if args.json:
        _emit_json([i.to_json() for i in infos])
    elif not infos:
        print(f"no runs under {root}")
    else:
        _print(runs_table(infos))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    run_dir = _find_run(args, args.run)
    if args.json:
        _emit_json(timeline_json(run_dir))
    else:
        _print(timeline_lines(run_dir))
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from fsm_runner.redrive import DryRunReport, can_replay, replay

    run_dir = _find_run(args, args.run)
    if args.dry_run:
        report = replay(run_dir, dry_run=True)
        assert isinstance(report, DryRunReport)
        if args.json:
            _emit_json(report.to_json())
        else:
            _print(report.lines())
        return EXIT_OK if report.ok else EXIT_FAILED
    ok, reason = can_replay(run_dir)
    if not ok:
        raise ReplayError(f"cannot replay: {reason}")
    agent, iters = _repair(args)
    live = LiveReport(quiet=args.json)
    live.watch(run_dir)
    with live:
        result = replay(
            run_dir,
            repair_iters=iters,
            repair_agent=agent,
            env_overrides=dict(args.env),
            console=False,
            on_transition=live,
        )
    return _finish(result.to_json(), json_mode=args.json)


def cmd_diagram(args: argparse.Namespace) -> int:
    from fsm_runner.diagrams import diagram

    run_dir = _find_run(args, args.run) if args.run else None
    text = diagram(format=args.format, run_dir=run_dir)
    if not args.output:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output}")
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------------------

#: Per command: what it does (its --help description) and an example for the epilog.
HELP: dict[str, tuple[str, str]] = {
    "run": (
        "run a target through every phase and report each transition",
        "fsm-runner run https://github.com/org/bench@v1 --llm deepseek-v3.2 --mode smoke --require-samples\n"
        "fsm-runner run ./bench --until health --env OPENAI_API_BASE=http://127.0.0.1:8000/v1",
    ),
    "validate": (
        "check pipeline.yml, bootstrap.yml and actions.yml; print every problem with file:line",
        "fsm-runner validate ./bench",
    ),
    "init": ("write a commented skeleton contract that validates", "fsm-runner init ./bench"),
    "runs": ("list the runs of a repository, newest first", "fsm-runner runs ./bench --limit 5"),
    "show": (
        "a run's timeline: transitions, durations, commands with exit codes, evidence",
        "fsm-runner show latest --repo ./bench",
    ),
    "replay": (
        "continue a failed run from the transition where it failed (same run id)",
        "fsm-runner replay latest --repo ./bench --repair-cmd 'aider --yes --message-file {prompt_file}'",
    ),
    "diagram": (
        "the state machine as Mermaid or DOT text, optionally with the path a run took",
        "fsm-runner diagram --run latest --repo ./bench --format dot --output run.dot",
    ),
    "schema": (
        "print the JSON Schema of pipeline.yml v1 (or of another contract file)",
        "fsm-runner schema > pipeline.schema.json",
    ),
}


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """Option groups several commands accept, as argparse parent parsers."""
    groups = {
        name: argparse.ArgumentParser(add_help=False) for name in ("json", "pipeline", "lookup", "repair")
    }
    groups["json"].add_argument("--json", action="store_true", help="print JSON instead of text")
    groups["pipeline"].add_argument(
        "--pipeline",
        default="pipeline.yml",
        metavar="REL",
        help="pipeline file in the repo (default: pipeline.yml)",
    )
    lookup = groups["lookup"]
    lookup.add_argument("--repo", default=".", metavar="DIR", help="repo whose runs RUN names (default: .)")
    lookup.add_argument("--artifacts-dir", type=Path, metavar="DIR", help="look for runs here instead")
    repair = groups["repair"]
    repair.add_argument(
        "--repair-cmd",
        metavar="CMD",
        help="coding agent command line run on failure; {prompt_file}, {request_file}, {repo} are filled in",
    )
    repair.add_argument(
        "--repair-iters",
        type=_count,
        metavar="N",
        help="repairs allowed (default: 3 with --repair-cmd, else 0)",
    )
    return groups


def _env_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--env", action="append", type=_env_pair, default=[], metavar="K=V", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsm-runner",
        description="Drive a benchmark repository through its own contract (pipeline.yml), step by step.",
        epilog="example:\n  fsm-runner init . && fsm-runner validate . && fsm-runner run . --llm my-model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fsm-runner {__version__}")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _shared_options()

    def command(name: str, handler: Callable[[argparse.Namespace], int], groups: str = "") -> Any:
        text, example = HELP[name]
        sub = subs.add_parser(
            name,
            help=text,
            description=text,
            epilog="example:\n  " + example.replace("\n", "\n  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[shared[g] for g in groups.split()],
        )
        sub.set_defaults(handler=handler)
        return sub

    run = command("run", cmd_run, "json pipeline repair")
    run.add_argument("target", metavar="TARGET", help="local directory or git URL (optionally URL@REF)")
    run.add_argument("--llm", help="model: a local model directory or a remote model name")
    run.add_argument(
        "--mode", choices=("smoke", "full"), default="smoke", help="AIDER_EVAL_MODE (default: smoke)"
    )
    run.add_argument("--require-samples", action="store_true", help="the rollout must write valid samples")
    _env_option(run, "variable for every stage (repeatable)")
    run.add_argument(
        "--until",
        choices=topology.PHASES,
        metavar="PHASE",
        help="stop after PHASE: " + ", ".join(topology.PHASES),
    )
    run.add_argument("--artifacts-dir", metavar="DIR", help="write run evidence here instead of the repo")
    run.add_argument("--clones-dir", metavar="DIR", help="where git targets are cloned")
    run.add_argument("--ref", help="git branch, tag or commit to check out")
    run.add_argument(
        "--unattended",
        choices=("strict", "guided"),
        default="strict",
        help="strict (default): no stdin, CI=1, interactive-looking commands refused; guided: allows "
        "auth.interactive steps (see docs/security_model.md)",
    )

    validate = command("validate", cmd_validate, "json pipeline")
    validate.add_argument("path", nargs="?", default=".", metavar="PATH", help="repository (default: .)")

    init = command("init", cmd_init)
    init.add_argument("dir", nargs="?", default=".", metavar="DIR", help="repository (default: .)")
    init.add_argument("--force", action="store_true", help="overwrite existing contract files")

    runs = command("runs", cmd_runs, "json pipeline")
    runs.add_argument("repo", nargs="?", default=".", metavar="REPO", help="repository (default: .)")
    runs.add_argument("--artifacts-dir", type=Path, metavar="DIR", help="list runs here instead")
    runs.add_argument("-n", "--limit", type=_count, metavar="N", help="show at most N runs")

    for name, handler in (("show", cmd_show), ("replay", cmd_replay)):
        sub = command(name, handler, "json lookup" + (" repair" if name == "replay" else ""))
        sub.add_argument("run", metavar="RUN", help="run directory, run id, or `latest`")
        if name == "replay":
            sub.add_argument("--dry-run", action="store_true", help="only check that the run can be replayed")
            _env_option(sub, "override again (secret overrides are not stored with the run; repeatable)")

    diagram = command("diagram", cmd_diagram, "lookup")
    diagram.add_argument("--run", metavar="RUN", help="mark the path this run took")
    diagram.add_argument("--format", choices=("mermaid", "dot"), default="mermaid", help="default: mermaid")
    diagram.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")

    schema = command("schema", cmd_schema)
    schema.add_argument("--file", choices=tuple(SCHEMAS), default="pipeline", help="default: pipeline")
    return parser
