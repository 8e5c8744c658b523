"""The driver loop: run the current phase outside any transition callback, then fire its trigger.

Guards (named in :mod:`fsm_runner.engine.topology`, defined in :mod:`fsm_runner.engine.guards`) pick the
destination. Every fired trigger becomes one durable journal record and one ``transition`` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from functools import partial

from fsm_runner.engine import topology
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.deployment import deployment_alive
from fsm_runner.engine.guards import GUARDS, explain
from fsm_runner.engine.outcome import FAILED, OK, SKIPPED, ErrorInfo, Outcome, skipped
from fsm_runner.engine.phase import Phase
from fsm_runner.engine.progress import DEFAULT_HEARTBEAT_S, ProgressHook, heartbeat
from fsm_runner.evidence.journal import Journal
from fsm_runner.evidence.records import TransitionRecord
from fsm_runner.execution.interrupts import check_stop
from fsm_runner.typing import TransitionHook

#: Phases that succeed once per session; later rounds skip them.
ONCE_PER_SESSION = frozenset({"clone", "bootstrap", "auth", "tests"})
#: Phases that succeed once per round (each rollout()/evaluate() pair is a round).
PER_ROUND = frozenset({"rollout", "evaluate", "benchmark", "verify"})


class MachineModel:
    """The object ``transitions`` drives: its state, and one method per guard.

    The driver evaluates the guards once per transition and stores the answers in ``values``, so the
    machine decides on exactly what the journal records.
    """

    state: str

    def __init__(self) -> None:
        self.values: dict[str, bool] = {}
        for name in topology.GUARD_NAMES:
            setattr(self, name, partial(self.values.__getitem__, name))


class Driver:
    """Owns the machine, the journal and run.json for one run."""

    def __init__(
        self,
        ctx: RunContext,
        journal: Journal,
        phases: Mapping[str, Phase],
        *,
        initial: str = "clone",
        on_transition: TransitionHook | None = None,
        progress: ProgressHook | None = None,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self.ctx = ctx
        self.journal = journal
        self.model = MachineModel()
        self.machine = topology.build_machine(self.model, initial)
        self.on_transition = on_transition
        #: Called every ``heartbeat_s`` seconds while a phase runs (see :mod:`fsm_runner.engine.progress`).
        self.progress = progress
        self.heartbeat_s = heartbeat_s
        self.phases = phases
        #: The trigger and source of the transition that led to the current state (None: none yet).
        self._entered_by: tuple[str, str] | None = None
        ctx.phase = initial

    @property
    def state(self) -> str:
        return self.model.state

    # -- the loop ----------------------------------------------------------------------------------------

    def run_until(self, stop: Callable[[str], bool]) -> None:
        """Step until the machine is final or ``stop(state)`` holds."""
        while self.state not in topology.FINAL_STATES and not stop(self.state):
            check_stop()  # a shutdown asked this thread to stop: no next phase
            self.step()

    def step(self) -> None:
        phase = self.state
        ctx = self.ctx
        reason = self._skip_reason(phase)
        if reason:
            self.fire(topology.PHASE_SKIPPED, skipped(phase, reason))
            return
        if (
            phase in topology.NEEDS_DEPLOYMENT
            and ctx.redeploys < topology.MAX_REDEPLOYS
            and not deployment_alive(ctx)
            and not self._judges_its_own_deploy(phase)
        ):
            ctx.redeploys += 1
            self.fire(topology.REDEPLOY, skipped(phase, "the deployment is gone; deploying again"))
            return
        if phase in topology.RECHECK_HEALTH and self._health_unconfirmed():
            self.fire(topology.RECHECK, skipped(phase, "health is not confirmed since the last repair"))
            return
        outcome = self._run_phase(phase)
        if phase == topology.REPAIR and outcome.status == OK:
            self.fire(topology.RETRY, outcome)
        elif outcome.status == OK:
            self.fire(topology.PHASE_DONE, outcome)
        elif outcome.status == SKIPPED:
            self.fire(topology.PHASE_SKIPPED, outcome)
        else:
            self.fire(topology.PHASE_FAILED, outcome)

    def _skip_reason(self, phase: str) -> str:
        """Why ``phase`` need not run now ("" when it must)."""
        ctx = self.ctx
        if phase in ONCE_PER_SESSION and phase in ctx.completed:
            return "already succeeded in this session"
        if phase in PER_ROUND and ctx.completed.get(phase) == ctx.round:
            return "already succeeded in this round"
        if (
            phase == "deploy_setup"
            and ctx.deployed
            and ctx.failed_phase != phase
            and ctx.deployed_llm == ctx.llm
            and deployment_alive(ctx)
        ):
            return "already deployed"
        return ""

    def _judges_its_own_deploy(self, phase: str) -> bool:
        """Health right after the deploy that started the deployment checks that deployment itself: services
        that crashed at start-up fail there with their exit code and output, rather than being deployed
        again and again (a repair or a later round still redeploys a deployment that went away)."""
        return phase == "health" and self._entered_by == (topology.PHASE_DONE, "deploy_setup")

    def _health_unconfirmed(self) -> bool:
        """A repair may have touched the service: re-check health before using it again."""
        ctx = self.ctx
        deploy = ctx.pipeline.deploy
        return bool(deploy and deploy.health_cmds and ctx.deployed and ctx.health_passed_at is None)

    def _run_phase(self, phase: str) -> Outcome:
        ctx = self.ctx
        log = ctx.log.bind(phase=phase, attempt=ctx.repairs_used)
        log.info("phase.start")
        started = time.monotonic()
        try:
            with self.watched(phase):
                outcome = self.phases[phase].run(ctx)
        except Exception as exc:  # a bug or an environment failure must still end in a journaled state
            log.exception("phase.crashed")
            error = ErrorInfo("internal", f"{type(exc).__name__}: {exc}", phase)
            outcome = Outcome(phase=phase, status=FAILED, duration_s=time.monotonic() - started, error=error)
        log.info("phase.end", status=outcome.status, duration_s=round(outcome.duration_s, 4))
        return outcome

    def watched(self, phase: str) -> AbstractContextManager[None]:
        """The heartbeat of ``phase`` for the block that runs it."""
        return heartbeat(self.ctx, phase, self.progress, self.heartbeat_s)

    # -- transitions -------------------------------------------------------------------------------------

    def fire(self, trigger: str, outcome: Outcome | None = None, *, reason: str = "") -> TransitionRecord:
        ctx = self.ctx
        source = self.state
        if outcome is not None and trigger != topology.CLEANUP:
            # A cleanup teardown is journaled with its own outcome; the run keeps the failure that ended it.
            self._absorb(outcome)
        if outcome is not None and outcome.status != SKIPPED:
            ctx.round_ran(outcome.phase)
        guards = {name: bool(GUARDS[name](ctx)) for name in topology.guards_of(source, trigger)}
        success_guard = topology.SUCCESS_GUARDS.get(source)
        if trigger == topology.PHASE_DONE and success_guard and not guards.get(success_guard, True):
            message, evidence = explain(success_guard, ctx)
            ctx.failed_phase = source
            ctx.completed.pop(source, None)
            ctx.outputs.pop(source, None)
            ctx.last_error = ErrorInfo("guard", message, source, evidence)
        if trigger in (topology.PHASE_FAILED, topology.PHASE_DONE) and ctx.failed_phase == source:
            guards["can_repair"] = bool(GUARDS["can_repair"](ctx))
            if not guards["can_repair"] and ctx.last_error is not None:
                ctx.last_error = _with_repair_note(ctx)
        if trigger == topology.RETRY and not guards.get("contract_intact", True):
            message, evidence = explain("contract_intact", ctx)
            ctx.last_error = ErrorInfo("guard", message, source, evidence)
        self.model.values.clear()
        self.model.values.update(guards)
        self.model.trigger(trigger)  # type: ignore[attr-defined]
        dest = self.state
        self._entered_by = (trigger, source)
        ctx.phase = dest
        if dest == topology.FAILED and ctx.status == "running":
            ctx.status = "failed"
        elif dest == topology.DONE:
            ctx.status = "closed" if ctx.stopping else "ok"
        record = self.journal.append(
            ctx.redactor,
            trigger=trigger,
            source=source,
            dest=dest,
            guards=guards,
            outcome=outcome,
            reason=reason or (outcome.reason if outcome else ""),
            round=ctx.round,
            repairs_used=ctx.repairs_used,
            repair_iters=ctx.repair_iters,
            redrive_count=ctx.redrive_count,
            status=ctx.status,
            error=ctx.last_error if dest == topology.FAILED else None,
        )
        self.save()
        ctx.log.bind(phase=source, attempt=ctx.repairs_used).info(
            "transition",
            trigger=trigger,
            source=source,
            dest=dest,
            status=outcome.status if outcome else ctx.status,
            duration_s=outcome.duration_s if outcome else 0.0,
            guards=guards,
            error=str(ctx.last_error) if dest == topology.FAILED and ctx.last_error else None,
        )
        if self.on_transition is not None:
            self.on_transition(record.to_json())
        return record

    def _absorb(self, outcome: Outcome) -> None:
        ctx = self.ctx
        if outcome.status == OK and outcome.phase != "repair":
            ctx.completed[outcome.phase] = ctx.round
            # Outputs are the latest run of the phase's: an earlier round's never stand in for this one's.
            if outcome.data:
                ctx.outputs[outcome.phase] = outcome.data
            else:
                ctx.outputs.pop(outcome.phase, None)
            if ctx.failed_phase == outcome.phase:
                ctx.failed_phase = None
        elif outcome.status == FAILED:
            if outcome.phase != "repair":
                ctx.failed_phase = outcome.phase
            ctx.last_error = outcome.error or ErrorInfo("unknown", "the phase failed", outcome.phase)

    def save(self) -> None:
        self.ctx.save()


def _with_repair_note(ctx: RunContext) -> ErrorInfo:
    """Say why no repair was tried, on the error's first line (the rest is often an output tail)."""
    error = ctx.last_error
    assert error is not None
    if ctx.repairer is None:
        note = " (no repair agent is configured, so the run failed here)"
    else:
        note = f" (repair budget exhausted: {ctx.repairs_used}/{ctx.repair_iters} repairs used)"
    first, sep, rest = error.message.partition("\n")
    if note in first:
        return error
    return ErrorInfo(error.kind, first + note + sep + rest, error.phase, error.evidence)
