"""The machine's topology: every state, trigger and guard, and nowhere else.

A state names the *next phase to run*; the phase runs while the machine is in it. The driver
(:mod:`fsm_runner.engine.driver`) runs the phase, then fires one of the triggers below; guards, named after
the functions in :mod:`fsm_runner.engine.guards`, pick the destination. The definition is fixed data, never
built from repository content (``transitions`` imports dotted strings as callables).
"""

from __future__ import annotations

from typing import Any

from transitions import Machine

#: The phases in pipeline order; each has a class in ``states/``.
PHASES: tuple[str, ...] = (
    "clone",
    "bootstrap",
    "auth",
    "tests",
    "deploy_setup",
    "health",
    "rollout",
    "evaluate",
    "benchmark",
    "verify",
    "teardown",
)
REPAIR = "repair"
DONE = "done"
FAILED = "failed"
STATES: tuple[str, ...] = (*PHASES, REPAIR, DONE, FAILED)
FINAL_STATES: frozenset[str] = frozenset({DONE, FAILED})

#: Phases that use the deployment; entering one with the deployment gone goes back to deploy_setup.
NEEDS_DEPLOYMENT: frozenset[str] = frozenset({"health", "rollout", "evaluate", "benchmark"})
#: Phases that re-check health first when a repair may have touched the service.
RECHECK_HEALTH: frozenset[str] = frozenset({"rollout", "evaluate", "benchmark"})
#: How often one round may go back to deploy_setup because the service vanished (a crash loop stops here).
MAX_REDEPLOYS = 2
#: Phases a repair may not retry (nothing in the repository can fix them, or they are the cleanup).
NOT_REPAIRABLE: frozenset[str] = frozenset({"clone", "teardown"})

#: The guard each phase's success must pass before the machine moves on.
SUCCESS_GUARDS: dict[str, str] = {
    "health": "is_healthy",
    "rollout": "samples_valid",
    "evaluate": "has_required_keys",
    "benchmark": "has_required_keys",
    "verify": "contract_intact",
}

# Trigger names are not Session methods (transitions would skip binding a clashing name).
PHASE_DONE = "phase_done"
PHASE_SKIPPED = "phase_skipped"
PHASE_FAILED = "phase_failed"
RETRY = "retry"
REDEPLOY = "redeploy"
RESTART = "restart"
CLEANUP = "cleanup"
INTERRUPT = "interrupt"
WIND_DOWN = "wind_down"
REDRIVE = "redrive"
RECHECK = "recheck_health"
TRIGGERS: tuple[str, ...] = (
    PHASE_DONE,
    PHASE_SKIPPED,
    PHASE_FAILED,
    RETRY,
    REDEPLOY,
    RESTART,
    CLEANUP,
    INTERRUPT,
    WIND_DOWN,
    REDRIVE,
    RECHECK,
)


def unknown_names(source: str, trigger: str, dest: str) -> list[str]:
    """The names of a journaled transition this machine lacks (a journal from another version)."""
    unknown = [f"{key} {name!r}" for key, name in (("source", source), ("dest", dest)) if name not in STATES]
    if trigger not in TRIGGERS:
        unknown.append(f"trigger {trigger!r}")
    return unknown


def is_past(phase: str, state: str) -> bool:
    """Whether ``state`` comes after ``phase`` in pipeline order (repair and failed never do)."""
    if state == DONE:
        return True
    return state in PHASES and PHASES.index(state) > PHASES.index(phase)


def retry_guard(phase: str) -> str:
    """Name of the guard that sends a repaired run back to ``phase``."""
    return f"failed_in_{phase}"


def _next(phase: str) -> str:
    index = PHASES.index(phase)
    return PHASES[index + 1] if index + 1 < len(PHASES) else DONE


def _failure_edges(trigger: str, source: str, unless: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "trigger": trigger,
            "source": source,
            "dest": REPAIR,
            "conditions": ["can_repair"],
            "unless": unless,
        },
        {"trigger": trigger, "source": source, "dest": FAILED, "unless": [*unless, "can_repair"]},
    ]


def transitions_table() -> list[dict[str, Any]]:
    """Every transition of the machine, in the order ``transitions`` tries them."""
    table: list[dict[str, Any]] = []
    for phase in PHASES:
        guard = SUCCESS_GUARDS.get(phase)
        done: dict[str, Any] = {"trigger": PHASE_DONE, "source": phase, "dest": _next(phase)}
        if guard:
            done["conditions"] = [guard]
        table.append(done)
        if guard:
            # A phase whose commands passed but whose guard did not is a failure like any other.
            table.extend(_failure_edges(PHASE_DONE, phase, [guard]))
        table.append({"trigger": PHASE_SKIPPED, "source": phase, "dest": _next(phase)})
        if phase in NOT_REPAIRABLE:
            table.append({"trigger": PHASE_FAILED, "source": phase, "dest": FAILED})
        else:
            table.extend(_failure_edges(PHASE_FAILED, phase, []))
    for phase in PHASES:
        if phase not in NOT_REPAIRABLE:
            table.append(
                {
                    "trigger": RETRY,
                    "source": REPAIR,
                    "dest": phase,
                    "conditions": [retry_guard(phase), "contract_intact"],
                }
            )
    table.append({"trigger": RETRY, "source": REPAIR, "dest": FAILED, "unless": ["contract_intact"]})
    table.append({"trigger": PHASE_FAILED, "source": REPAIR, "dest": FAILED})
    for phase in sorted(NEEDS_DEPLOYMENT, key=PHASES.index):
        table.append({"trigger": REDEPLOY, "source": phase, "dest": "deploy_setup"})
    for phase in sorted(RECHECK_HEALTH, key=PHASES.index):
        table.append({"trigger": RECHECK, "source": phase, "dest": "health"})
    # A later session call starts a new round; phases that already succeeded are skipped by the driver.
    table.append(
        {"trigger": RESTART, "source": [s for s in STATES if s not in ("clone", REPAIR)], "dest": "bootstrap"}
    )
    # A session closed early still tears down through the machine.
    table.append({"trigger": WIND_DOWN, "source": list(PHASES[1:-1]), "dest": "teardown"})
    # SIGINT/SIGTERM or an exception in the middle of a phase; teardown then runs as the cleanup self-loop.
    table.append(
        {"trigger": INTERRUPT, "source": [s for s in STATES if s not in FINAL_STATES], "dest": FAILED}
    )
    table.append({"trigger": CLEANUP, "source": FAILED, "dest": FAILED})
    # Replay continues a failed run at the phase that failed.
    for phase in PHASES:
        if phase not in NOT_REPAIRABLE:
            table.append(
                {"trigger": REDRIVE, "source": FAILED, "dest": phase, "conditions": [retry_guard(phase)]}
            )
    return table


GUARD_NAMES: tuple[str, ...] = (
    "is_healthy",
    "has_required_keys",
    "samples_valid",
    "can_repair",
    "contract_intact",
    *(retry_guard(p) for p in PHASES if p not in NOT_REPAIRABLE),
)


def machine_config(initial: str = "clone") -> dict[str, Any]:
    """Keyword arguments for a ``transitions`` machine of this topology."""
    return {
        "states": list(STATES),
        "transitions": transitions_table(),
        "initial": initial,
        "auto_transitions": False,
        "send_event": False,
        "ignore_invalid_triggers": False,
    }


def build_machine(model: object, initial: str = "clone") -> Machine:
    """A machine bound to ``model``, which must provide one method per name in :data:`GUARD_NAMES`."""
    return Machine(model=model, **machine_config(initial))


def guards_of(source: str, trigger: str) -> tuple[str, ...]:
    """The guard names consulted when ``trigger`` fires in ``source`` (for the journal)."""
    names: list[str] = []
    for row in transitions_table():
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        if row["trigger"] == trigger and source in sources:
            for name in [*row.get("conditions", []), *row.get("unless", [])]:
                if name not in names:
                    names.append(name)
    return tuple(names)
