"""The machine's guards: named, side-effect-free functions of the run context.

Each guard has an ``explain_*`` twin that says, for the error message, why it did not hold and which
evidence file to open.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fsm_runner.contract.outputs import MetricsCheck, RolloutCheck, check_metrics, check_rollout
from fsm_runner.contract.pipeline import EvaluationSpec
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.topology import NOT_REPAIRABLE, PHASES, retry_guard
from fsm_runner.evidence import layout

Guard = Callable[[RunContext], bool]


def _metrics_spec(ctx: RunContext) -> EvaluationSpec | None:
    return ctx.pipeline.benchmark if ctx.phase == "benchmark" else ctx.pipeline.evaluation


def metrics_check(ctx: RunContext) -> MetricsCheck | None:
    spec = _metrics_spec(ctx)
    if spec is None or not spec.metrics_path:
        return None
    return check_metrics(ctx.repo_root / spec.metrics_path, spec.required_keys, root=ctx.repo_root)


def rollout_check(ctx: RunContext) -> RolloutCheck:
    return check_rollout(ctx.repo_root, require_samples=ctx.require_samples)


def is_healthy(ctx: RunContext) -> bool:
    """Health passed after the current deployment started (a stale success does not count)."""
    if ctx.health_passed_at is None:
        return False
    return ctx.deployed_at is None or ctx.health_passed_at >= ctx.deployed_at


def has_required_keys(ctx: RunContext) -> bool:
    check = metrics_check(ctx)
    # No metrics file declared: the evaluate phase already refused that when metrics are required.
    return check is None or check.ok


def samples_valid(ctx: RunContext) -> bool:
    return rollout_check(ctx).ok


def can_repair(ctx: RunContext) -> bool:
    return ctx.repairer is not None and ctx.repairs_used < ctx.repair_iters


def contract_intact(ctx: RunContext) -> bool:
    return ctx.contract_now() == ctx.contract_sha256


def _failed_in(phase: str) -> Guard:
    def guard(ctx: RunContext) -> bool:
        return ctx.failed_phase == phase

    guard.__name__ = retry_guard(phase)
    return guard


GUARDS: dict[str, Guard] = {
    "is_healthy": is_healthy,
    "has_required_keys": has_required_keys,
    "samples_valid": samples_valid,
    "can_repair": can_repair,
    "contract_intact": contract_intact,
    **{retry_guard(p): _failed_in(p) for p in PHASES if p not in NOT_REPAIRABLE},
}


def explain(name: str, ctx: RunContext) -> tuple[str, str | None]:
    """Why guard ``name`` does not hold: (message, evidence path or None)."""
    if name == "has_required_keys":
        spec = _metrics_spec(ctx)
        check = metrics_check(ctx)
        if check is None:
            return "guard has_required_keys: no metrics_path is declared", None
        path = str(Path(ctx.repo_root, spec.metrics_path)) if spec and spec.metrics_path else None
        return f"guard has_required_keys failed: {'; '.join(check.problems)}", path
    if name == "samples_valid":
        rcheck = rollout_check(ctx)
        where = str(rcheck.samples_path) if rcheck.samples_path else str(ctx.repo_root / layout.ROLLOUT_REL)
        return f"guard samples_valid failed: {'; '.join(rcheck.problems)}", where
    if name == "is_healthy":
        return "guard is_healthy failed: no health command succeeded within the health window", None
    if name == "contract_intact":
        return (
            f"guard contract_intact failed: {ctx.pipeline_rel} changed since the run started "
            f"(sha256 {ctx.contract_sha256[:12]} -> {(ctx.contract_now() or 'missing')[:12]}); "
            "restore it or start a new run",
            str(ctx.pipeline_path),
        )
    if name == "can_repair":
        if ctx.repairer is None:
            return "no repair agent is configured", None
        return f"repair budget exhausted ({ctx.repairs_used}/{ctx.repair_iters} repairs used)", None
    return f"guard {name} failed", None
