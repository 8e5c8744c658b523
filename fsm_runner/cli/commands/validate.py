"""``fsm-runner validate [PATH]``: every problem of the contract files, with file:line."""

from __future__ import annotations

import argparse
from pathlib import Path

from fsm_runner.cli.errors import EXIT_OK, EXIT_USAGE
from fsm_runner.cli.output import emit_json, print_error, print_lines
from fsm_runner.contract import load_pipeline, validate_repo
from fsm_runner.errors import ContractError, UsageError
from fsm_runner.evidence.layout import ACTIONS_REL, BOOTSTRAP_REL
from fsm_runner.execution.sandbox import resolve_sandbox, sandbox_problem
from fsm_runner.targets import refuse_committed_outputs


def command(args: argparse.Namespace) -> int:
    root = Path(args.path).resolve()
    if not root.is_dir():
        raise UsageError(f"{args.path}: not a directory (give the repository root)")
    problems = validate_repo(root, args.pipeline)
    if not problems:  # what setup() also refuses: a file every run writes, committed to git
        try:
            refuse_committed_outputs(root, load_pipeline(root, args.pipeline), args.pipeline)
        except ContractError as exc:
            problems.append(exc)
    if not problems:
        problems = _sandbox_problems(root, args.pipeline, args.sandbox)
    if args.json:
        emit_json([{"path": p.path, "line": p.line, "key": p.key, "problem": p.problem} for p in problems])
    else:
        print_lines([str(p) for p in problems])
    if problems:
        print_error(f"error: {len(problems)} problem(s) in the contract of {root}")
        return EXIT_USAGE
    checked = [args.pipeline, *(rel for rel in (BOOTSTRAP_REL, ACTIONS_REL) if (root / rel).exists())]
    if not args.json:
        print_lines([f"ok: {root}: {', '.join(checked)} valid"])
    return EXIT_OK


def _sandbox_problems(root: Path, pipeline_rel: str, requested: str | None) -> list[ContractError]:
    """A run of this contract (with ``--sandbox``) needs bwrap: say so now when this machine cannot run it."""
    spec = load_pipeline(root, pipeline_rel)
    mode = resolve_sandbox(spec.security.sandbox, requested)
    problem = sandbox_problem(spec.security.network) if mode == "bwrap" else None
    if problem is None:
        return []
    if spec.security.sandbox == "bwrap":
        return [ContractError(problem, path=spec.path, key="security.sandbox")]
    return [ContractError(f"--sandbox bwrap: {problem}")]
