"""The machine's topology: its invariants, and where each trigger leads under each guard outcome."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from transitions import MachineError

from fsm_runner.engine import topology as m
from fsm_runner.engine.guards import GUARDS
from fsm_runner.session import Session


class Model:
    """A stand-in model whose guards answer from a dict (everything the topology needs, nothing more)."""

    state: str

    def __init__(self, **answers: bool) -> None:
        self.answers = {name: False for name in m.GUARD_NAMES}
        self.answers.update({"contract_intact": True, "is_healthy": True})
        self.answers.update({"has_required_keys": True, "samples_valid": True})
        self.answers.update(answers)
        for name in m.GUARD_NAMES:
            setattr(self, name, lambda name=name: self.answers[name])


def _sources(row: dict[str, Any]) -> list[str]:
    return row["source"] if isinstance(row["source"], list) else [row["source"]]


def _edges() -> set[tuple[str, str, str]]:
    return {(src, row["trigger"], row["dest"]) for row in m.transitions_table() for src in _sources(row)}


def _reachable(start: str) -> set[str]:
    edges = _edges()
    seen, todo = {start}, deque([start])
    while todo:
        state = todo.popleft()
        for src, _, dest in edges:
            if src == state and dest not in seen:
                seen.add(dest)
                todo.append(dest)
    return seen


def fire(model: Model, trigger: str) -> str:
    model.trigger(trigger)  # type: ignore[attr-defined]
    return model.state


# -- invariants ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", m.PHASES)
@pytest.mark.parametrize("trigger", [m.PHASE_DONE, m.PHASE_SKIPPED, m.PHASE_FAILED])
def test_every_phase_answers_every_outcome(phase: str, trigger: str) -> None:
    assert any(src == phase and trig == trigger for src, trig, _ in _edges())


def test_repair_has_a_way_back_and_a_way_out() -> None:
    triggers = {trig for src, trig, _ in _edges() if src == m.REPAIR}
    assert {m.RETRY, m.PHASE_FAILED} <= triggers


def test_final_states_have_no_pipeline_edges() -> None:
    for src, trig, _ in _edges():
        if src in m.FINAL_STATES:
            assert trig in (m.RESTART, m.CLEANUP, m.REDRIVE), (src, trig)


@pytest.mark.parametrize("state", [*m.PHASES, m.REPAIR, m.DONE, m.FAILED])
def test_every_state_is_reachable_from_clone(state: str) -> None:
    assert state in _reachable("clone")


@pytest.mark.parametrize("phase", [*m.PHASES, m.REPAIR])
def test_done_or_failed_is_reachable_from_every_non_final_state(phase: str) -> None:
    reach = _reachable(phase)
    assert m.FAILED in reach
    if phase != m.REPAIR:
        assert m.DONE in reach


def test_the_happy_path_visits_the_phases_in_order() -> None:
    model = Model()
    m.build_machine(model)
    visited = [model.state]
    while model.state != m.DONE:
        visited.append(fire(model, m.PHASE_DONE))
    assert visited == [*m.PHASES, m.DONE]


def test_states_and_triggers_are_the_declared_ones() -> None:
    table = m.transitions_table()
    assert {row["trigger"] for row in table} == set(m.TRIGGERS)
    used = {s for row in table for s in _sources(row)} | {row["dest"] for row in table}
    assert used == set(m.STATES)


def test_auto_transitions_are_off_and_model_has_no_to_methods() -> None:
    config = m.machine_config()
    assert config["auto_transitions"] is False
    model = Model()
    m.build_machine(model)
    assert not any(name.startswith("to_") for name in dir(model))


@pytest.mark.parametrize("trigger", m.TRIGGERS)
def test_no_trigger_clashes_with_a_session_attribute(trigger: str) -> None:
    assert not hasattr(Session, trigger)
    model = Model()
    m.build_machine(model)
    assert callable(getattr(model, trigger))  # bound by transitions, so not skipped for a clash


def test_guard_names_match_the_guard_functions() -> None:
    assert set(m.GUARD_NAMES) == set(GUARDS)
    for row in m.transitions_table():
        for name in [*row.get("conditions", []), *row.get("unless", [])]:
            assert name in m.GUARD_NAMES
            assert name.isidentifier()  # never a dotted path that transitions would import


def test_config_is_plain_data_and_initial_is_respected() -> None:
    config = m.machine_config("evaluate")
    assert config["initial"] == "evaluate"
    assert config["states"] == list(m.STATES)
    model = Model()
    m.build_machine(model, "evaluate")
    assert model.state == "evaluate"


# -- guards_of -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, trigger, expected",
    [
        ("tests", m.PHASE_DONE, ()),
        ("tests", m.PHASE_SKIPPED, ()),
        ("tests", m.PHASE_FAILED, ("can_repair",)),
        ("clone", m.PHASE_FAILED, ()),
        ("teardown", m.PHASE_FAILED, ()),
        ("health", m.PHASE_DONE, ("is_healthy", "can_repair")),
        ("rollout", m.PHASE_DONE, ("samples_valid", "can_repair")),
        ("evaluate", m.PHASE_DONE, ("has_required_keys", "can_repair")),
        ("benchmark", m.PHASE_DONE, ("has_required_keys", "can_repair")),
        ("verify", m.PHASE_DONE, ("contract_intact", "can_repair")),
        ("rollout", m.REDEPLOY, ()),
        ("done", m.RESTART, ()),
    ],
)
def test_guards_of_lists_each_consulted_guard_once(
    source: str, trigger: str, expected: tuple[str, ...]
) -> None:
    assert m.guards_of(source, trigger) == expected


def test_guards_of_retry_and_redrive_name_every_repairable_phase() -> None:
    repairable = [p for p in m.PHASES if p not in m.NOT_REPAIRABLE]
    retry = m.guards_of(m.REPAIR, m.RETRY)
    assert len(retry) == len(set(retry))
    assert set(retry) == {*(m.retry_guard(p) for p in repairable), "contract_intact"}
    assert m.guards_of(m.FAILED, m.REDRIVE) == tuple(m.retry_guard(p) for p in repairable)


# -- destinations ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", sorted(m.SUCCESS_GUARDS, key=m.PHASES.index))
@pytest.mark.parametrize("can_repair, dest", [(True, m.REPAIR), (False, m.FAILED)])
def test_a_success_whose_guard_fails_is_a_failure(phase: str, can_repair: bool, dest: str) -> None:
    model = Model(can_repair=can_repair, **{m.SUCCESS_GUARDS[phase]: False})
    m.build_machine(model, phase)
    assert fire(model, m.PHASE_DONE) == dest


@pytest.mark.parametrize("phase", m.PHASES)
@pytest.mark.parametrize("can_repair", [True, False])
def test_a_failed_phase_goes_to_repair_only_when_repairable(phase: str, can_repair: bool) -> None:
    model = Model(can_repair=can_repair)
    m.build_machine(model, phase)
    expected = m.REPAIR if can_repair and phase not in m.NOT_REPAIRABLE else m.FAILED
    assert fire(model, m.PHASE_FAILED) == expected


@pytest.mark.parametrize("phase", [p for p in m.PHASES if p not in m.NOT_REPAIRABLE])
def test_retry_returns_to_the_phase_that_failed(phase: str) -> None:
    model = Model(**{m.retry_guard(phase): True})
    m.build_machine(model, m.REPAIR)
    assert fire(model, m.RETRY) == phase


def test_retry_with_a_changed_contract_fails() -> None:
    model = Model(contract_intact=False, failed_in_tests=True)
    m.build_machine(model, m.REPAIR)
    assert fire(model, m.RETRY) == m.FAILED


@pytest.mark.parametrize("phase", [p for p in m.PHASES if p not in m.NOT_REPAIRABLE])
def test_redrive_continues_a_failed_run_at_its_failed_phase(phase: str) -> None:
    model = Model(**{m.retry_guard(phase): True})
    m.build_machine(model, m.FAILED)
    assert fire(model, m.REDRIVE) == phase


@pytest.mark.parametrize("phase", m.PHASES)
def test_redeploy_exists_only_for_phases_that_need_the_deployment(phase: str) -> None:
    model = Model()
    m.build_machine(model, phase)
    if phase in m.NEEDS_DEPLOYMENT:
        assert fire(model, m.REDEPLOY) == "deploy_setup"
    else:
        with pytest.raises(MachineError):
            fire(model, m.REDEPLOY)


@pytest.mark.parametrize(
    "trigger, source, dest",
    [
        (m.RESTART, "done", "bootstrap"),
        (m.RESTART, "failed", "bootstrap"),
        (m.RESTART, "evaluate", "bootstrap"),
        (m.RESTART, "clone", None),
        (m.RESTART, "repair", None),
        (m.WIND_DOWN, "health", "teardown"),
        (m.WIND_DOWN, "clone", None),
        (m.WIND_DOWN, "teardown", None),
        (m.INTERRUPT, "repair", "failed"),
        (m.INTERRUPT, "clone", "failed"),
        (m.INTERRUPT, "done", None),
        (m.CLEANUP, "failed", "failed"),
        (m.CLEANUP, "done", None),
    ],
)
def test_session_level_triggers(trigger: str, source: str, dest: str | None) -> None:
    model = Model()
    m.build_machine(model, source)
    if dest is None:
        with pytest.raises(MachineError):
            fire(model, trigger)
        assert model.state == source
    else:
        assert fire(model, trigger) == dest


def test_an_unknown_trigger_is_an_error_not_ignored() -> None:
    model = Model()
    machine = m.build_machine(model)
    with pytest.raises(AttributeError):
        fire(model, "no_such_trigger")
    assert machine.get_triggers("clone")
