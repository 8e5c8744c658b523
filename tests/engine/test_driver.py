"""The driver loop with scripted phases: which trigger each outcome fires, and what each transition records."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.engine import topology as m
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.driver import Driver
from fsm_runner.engine.outcome import FAILED, OK, SKIPPED, ErrorInfo, Outcome
from fsm_runner.engine.phase import RepairReport
from fsm_runner.evidence.journal import Journal, read_journal
from fsm_runner.evidence.layout import JOURNAL, RUN_JSON
from fsm_runner.evidence.records import TransitionRecord
from tests.helpers.context import ContextFactory, contexts

Step = Callable[[RunContext], Outcome]

DEPLOY_PIPELINE = "version: 1\ndeploy:\n  setup_cmds: 'true'\n"
EVAL_PIPELINE = (
    "version: 1\nevaluation:\n  run_cmds: 'true'\n  metrics_path: metrics.json\n  required_keys: [ok]\n"
)
SECRET = "hunter2-very-secret"


class Scripted:
    """A phase that plays back a script: a status, an outcome factory, or an exception per call."""

    def __init__(self, name: str, *script: str | Step | BaseException) -> None:
        self.name = name
        self.script = list(script)
        self.calls = 0

    def run(self, ctx: RunContext) -> Outcome:
        self.calls += 1
        item = self.script.pop(0) if len(self.script) > 1 else (self.script[0] if self.script else SKIPPED)
        if self.name == m.REPAIR:
            ctx.repairs_used += 1  # what the real repair phase does
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            return item(ctx)
        error = ErrorInfo("command", f"{self.name} broke", self.name) if item == FAILED else None
        return Outcome(phase=self.name, status=item, duration_s=0.01, error=error)


class ScriptedRepairer:
    """Configures repair for the guards; the scripted repair phase stands in for the real one."""

    def repair(self, ctx: RunContext, work_dir: Path, failure: ErrorInfo) -> RepairReport:
        raise AssertionError("the scripted repair phase does not call the repairer")


def registry(**scripts: Scripted) -> dict[str, Any]:
    phases: dict[str, Any] = {name: Scripted(name) for name in (*m.PHASES, m.REPAIR)}
    phases.update(scripts)
    return phases


def ok(data: dict[str, Any] | None = None) -> Step:
    return lambda ctx: Outcome(phase=ctx.phase, status=OK, data=data or {})


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[ContextFactory]:
    with contexts(tmp_path) as factory:
        yield factory


def records(ctx: RunContext) -> list[TransitionRecord]:
    read = read_journal(ctx.run_dir / JOURNAL)
    assert read.problem is None
    return list(read.records)


def path_of(ctx: RunContext) -> list[tuple[str, str, str]]:
    return [(r.source, r.trigger, r.dest) for r in records(ctx)]


def outcome_of(record: TransitionRecord) -> Outcome:
    assert record.outcome is not None
    return record.outcome


def driver(ctx: RunContext, phases: dict[str, Any], initial: str = "clone", **kw: Any) -> Driver:
    return Driver(ctx, Journal.open(ctx.run_dir), phases, initial=initial, **kw)


def run_all(d: Driver) -> None:
    d.run_until(lambda state: False)


# -- outcomes and triggers -------------------------------------------------------------------------------


def test_a_run_of_skipped_phases_records_every_skip_and_ends_done(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    d = driver(ctx, registry())
    run_all(d)
    assert d.state == m.DONE and ctx.status == "ok"
    assert path_of(ctx) == [
        (p, m.PHASE_SKIPPED, m.PHASES[i + 1] if i + 1 < len(m.PHASES) else m.DONE)
        for i, p in enumerate(m.PHASES)
    ]
    assert [r.seq for r in records(ctx)] == list(range(1, len(m.PHASES) + 1))
    run = json.loads((ctx.run_dir / RUN_JSON).read_text())
    assert (run["status"], run["phase"]) == ("ok", m.DONE)


@pytest.mark.parametrize(
    "status, trigger, dest",
    [
        (OK, m.PHASE_DONE, "deploy_setup"),
        (SKIPPED, m.PHASE_SKIPPED, "deploy_setup"),
        (FAILED, m.PHASE_FAILED, m.FAILED),
    ],
)
def test_each_outcome_fires_its_trigger(
    make_ctx: ContextFactory, status: str, trigger: str, dest: str
) -> None:
    ctx = make_ctx()
    d = driver(ctx, registry(tests=Scripted("tests", status)), initial="tests")
    d.step()
    assert path_of(ctx) == [("tests", trigger, dest)]
    assert outcome_of(records(ctx)[0]).status == status
    assert ("tests" in ctx.completed) is (status == OK)
    assert ctx.phase == dest


def test_an_ok_phase_records_its_round_and_outputs(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(round=3)
    d = driver(ctx, registry(tests=Scripted("tests", ok({"passed": 5}))), initial="tests")
    d.step()
    assert ctx.completed == {"tests": 3}
    assert ctx.outputs == {"tests": {"passed": 5}}
    assert records(ctx)[0].round == 3


def test_a_failure_without_an_agent_fails_the_run_and_says_why(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    d = driver(ctx, registry(tests=Scripted("tests", FAILED)), initial="tests")
    run_all(d)
    assert d.state == m.FAILED and ctx.status == "failed" and ctx.failed_phase == "tests"
    assert ctx.last_error is not None and ctx.last_error.kind == "command"
    assert "no repair agent is configured" in ctx.last_error.message.splitlines()[0]
    record = records(ctx)[-1]
    assert record.error == ctx.last_error
    assert record.guards == {"can_repair": False}
    run = json.loads((ctx.run_dir / RUN_JSON).read_text())
    assert (run["status"], run["failed_phase"], run["last_error"]["kind"]) == ("failed", "tests", "command")


def test_a_phase_that_raises_becomes_an_internal_error(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    d = driver(ctx, registry(auth=Scripted("auth", RuntimeError("kaboom"))), initial="auth")
    d.step()
    assert d.state == m.FAILED
    assert ctx.last_error is not None
    assert (ctx.last_error.kind, ctx.last_error.phase) == ("internal", "auth")
    assert ctx.last_error.message.startswith("RuntimeError: kaboom")
    outcome = outcome_of(records(ctx)[0])
    assert outcome.status == FAILED
    assert outcome.error == ErrorInfo("internal", "RuntimeError: kaboom", "auth")  # the phase's own report
    assert records(ctx)[0].error == ctx.last_error  # the run's error adds why no repair was tried
    events = [json.loads(line) for line in (ctx.run_dir / "events.jsonl").read_text().splitlines()]
    (crash,) = [e for e in events if e["event"] == "phase.crashed"]
    assert crash["phase"] == "auth" and "RuntimeError: kaboom" in crash["exception"]  # the traceback is kept


def test_a_failed_outcome_without_error_info_still_has_one(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    bare = Scripted("tests", lambda c: Outcome(phase="tests", status=FAILED))
    driver(ctx, registry(tests=bare), initial="tests").step()
    assert ctx.last_error == ErrorInfo("unknown", ctx.last_error.message if ctx.last_error else "", "tests")
    assert records(ctx)[0].error == ctx.last_error


# -- success guards --------------------------------------------------------------------------------------


def _touch_contract(ctx: RunContext) -> Outcome:
    ctx.pipeline_path.write_text(ctx.pipeline_path.read_text() + "# edited\n")
    return Outcome(phase="verify", status=OK)


@pytest.mark.parametrize(
    "phase, pipeline, fields, step, guard, evidence",
    [
        ("health", "version: 1\n", {}, ok(), "is_healthy", None),
        (
            "rollout",
            "version: 1\n",
            {"require_samples": True},
            ok(),
            "samples_valid",
            ".aider_fsm/rollout.json",
        ),
        ("evaluate", EVAL_PIPELINE, {}, ok({"metrics": {}}), "has_required_keys", "metrics.json"),
        ("verify", "version: 1\n", {}, _touch_contract, "contract_intact", "pipeline.yml"),
    ],
)
def test_a_success_whose_guard_fails_becomes_a_guard_failure(
    make_ctx: ContextFactory,
    phase: str,
    pipeline: str,
    fields: dict[str, Any],
    step: Step,
    guard: str,
    evidence: str | None,
) -> None:
    ctx = make_ctx(pipeline, **fields)
    d = driver(ctx, registry(**{phase: Scripted(phase, step)}), initial=phase)
    d.step()
    assert d.state == m.FAILED
    error = ctx.last_error
    assert error is not None and (error.kind, error.phase) == ("guard", phase)
    assert f"guard {guard}" in error.message
    assert error.evidence == (str(ctx.repo_root / evidence) if evidence else None)
    assert phase not in ctx.completed and phase not in ctx.outputs and ctx.failed_phase == phase
    record = records(ctx)[0]
    assert (record.trigger, record.guards[guard]) == (m.PHASE_DONE, False)
    assert record.error == error


@pytest.mark.parametrize(
    "phase, fields, files",
    [
        ("health", {"health_passed_at": 2.0, "deployed_at": 1.0}, {}),
        ("evaluate", {}, {"metrics.json": '{"ok": true}'}),
        ("rollout", {"require_samples": False}, {}),
        ("verify", {}, {}),
    ],
)
def test_a_success_whose_guard_holds_moves_on(
    make_ctx: ContextFactory, phase: str, fields: dict[str, Any], files: dict[str, str]
) -> None:
    ctx = make_ctx(EVAL_PIPELINE, files=files, **fields)
    d = driver(ctx, registry(**{phase: Scripted(phase, OK)}), initial=phase)
    d.step()
    assert d.state == m.PHASES[m.PHASES.index(phase) + 1]
    assert ctx.completed == {phase: 1}
    assert records(ctx)[0].guards[m.SUCCESS_GUARDS[phase]] is True


def test_the_benchmark_guard_reads_the_benchmark_section(make_ctx: ContextFactory) -> None:
    pipeline = (
        EVAL_PIPELINE
        + "benchmark:\n  run_cmds: 'true'\n  metrics_path: bench.json\n  required_keys: [score]\n"
    )
    ctx = make_ctx(pipeline, files={"metrics.json": '{"ok": true}', "bench.json": '{"ok": true}'})
    d = driver(ctx, registry(benchmark=Scripted("benchmark", OK)), initial="benchmark")
    d.step()
    assert d.state == m.FAILED
    assert ctx.last_error is not None and "missing required keys: score" in ctx.last_error.message
    assert ctx.last_error.evidence == str(ctx.repo_root / "bench.json")


# -- repair ----------------------------------------------------------------------------------------------


def test_can_repair_routes_to_repair_and_retry_goes_back(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(repairer=ScriptedRepairer(), repair_iters=2)
    tests = Scripted("tests", FAILED, OK)
    repair = Scripted(m.REPAIR, OK)
    d = driver(ctx, registry(tests=tests, repair=repair), initial="tests")
    d.run_until(lambda state: state == "deploy_setup")
    assert path_of(ctx) == [
        ("tests", m.PHASE_FAILED, m.REPAIR),
        (m.REPAIR, m.RETRY, "tests"),
        ("tests", m.PHASE_DONE, "deploy_setup"),
    ]
    first, retry, _ = records(ctx)
    assert first.guards == {"can_repair": True}
    assert retry.guards["failed_in_tests"] is True and retry.guards["contract_intact"] is True
    assert [r.repairs_used for r in records(ctx)] == [0, 1, 1]
    assert (tests.calls, repair.calls, ctx.failed_phase, ctx.completed) == (2, 1, None, {"tests": 1})


def test_an_exhausted_budget_fails_and_says_so(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(repairer=ScriptedRepairer(), repair_iters=1)
    d = driver(ctx, registry(tests=Scripted("tests", FAILED), repair=Scripted(m.REPAIR, OK)), initial="tests")
    run_all(d)
    assert [dest for _, _, dest in path_of(ctx)] == [m.REPAIR, "tests", m.FAILED]
    assert ctx.last_error is not None
    assert "repair budget exhausted: 1/1 repairs used" in ctx.last_error.message


def test_a_failed_repair_fails_the_run_and_keeps_the_failed_phase(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(repairer=ScriptedRepairer(), repair_iters=3)
    d = driver(
        ctx, registry(tests=Scripted("tests", FAILED), repair=Scripted(m.REPAIR, FAILED)), initial="tests"
    )
    run_all(d)
    assert path_of(ctx)[-1] == (m.REPAIR, m.PHASE_FAILED, m.FAILED)
    assert ctx.failed_phase == "tests"
    assert ctx.last_error is not None and ctx.last_error.phase == m.REPAIR


def test_a_repair_that_edits_the_contract_cannot_retry(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(repairer=ScriptedRepairer(), repair_iters=3)

    def edit(c: RunContext) -> Outcome:
        c.pipeline_path.write_text("version: 1\ntests:\n  cmds: 'true'\n")
        return Outcome(phase=m.REPAIR, status=OK)

    d = driver(
        ctx, registry(tests=Scripted("tests", FAILED), repair=Scripted(m.REPAIR, edit)), initial="tests"
    )
    run_all(d)
    assert path_of(ctx)[-1] == (m.REPAIR, m.RETRY, m.FAILED)
    assert ctx.last_error is not None and ctx.last_error.kind == "guard"
    assert "contract_intact" in ctx.last_error.message
    assert records(ctx)[-1].guards["contract_intact"] is False


# -- deployment ------------------------------------------------------------------------------------------


def _dead_group() -> int:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    "deployed, pgids, redeploys",
    [(False, "none", True), (True, "dead", True), (True, "none", False), (True, "live", False)],
)
def test_a_phase_needing_a_gone_deployment_redeploys(
    make_ctx: ContextFactory, deployed: bool, pgids: str, redeploys: bool
) -> None:
    ctx = make_ctx(DEPLOY_PIPELINE, deployed=deployed)
    live = None
    if pgids == "dead":
        ctx.deploy_pgids = [_dead_group()]
    elif pgids == "live":
        live = subprocess.Popen(["sleep", "30"], start_new_session=True)
        ctx.deploy_pgids = [live.pid]
    rollout = Scripted("rollout", OK)
    try:
        driver(ctx, registry(rollout=rollout), initial="rollout").step()
    finally:
        if live is not None:
            live.kill()
            live.wait()
    record = records(ctx)[0]
    if redeploys:
        assert (record.trigger, record.dest, rollout.calls) == (m.REDEPLOY, "deploy_setup", 0)
        assert outcome_of(record).status == SKIPPED and "deployment is gone" in record.reason
    else:
        assert (record.trigger, rollout.calls) == (m.PHASE_DONE, 1)


def _deploys_a_service_that_dies(ctx: RunContext) -> Outcome:
    ctx.deployed = True
    ctx.deploy_pgids = [_dead_group()]  # gone before health starts
    return Outcome(phase="deploy_setup", status=OK)


def test_health_right_after_deploy_judges_a_deployment_that_already_died(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(DEPLOY_PIPELINE, repairer=ScriptedRepairer(), repair_iters=1)
    deploy = Scripted("deploy_setup", _deploys_a_service_that_dies)
    health = Scripted("health", FAILED)
    phases = registry(deploy_setup=deploy, health=health, repair=Scripted(m.REPAIR, OK))
    d = driver(ctx, phases, initial="deploy_setup")
    d.step()
    d.step()
    assert (deploy.calls, health.calls, ctx.redeploys) == (1, 1, 0)  # health ran and failed; no second deploy
    assert path_of(ctx) == [("deploy_setup", m.PHASE_DONE, "health"), ("health", m.PHASE_FAILED, m.REPAIR)]
    d.step()  # the repair retries health, whose deployment went away: that one is deployed again
    d.step()
    assert path_of(ctx)[-2:] == [(m.REPAIR, m.RETRY, "health"), ("health", m.REDEPLOY, "deploy_setup")]
    assert (health.calls, ctx.redeploys) == (1, 1)


def test_no_deploy_section_means_nothing_to_redeploy(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(deployed=False)
    rollout = Scripted("rollout", OK)
    driver(ctx, registry(rollout=rollout), initial="rollout").step()
    assert rollout.calls == 1


def test_deploy_is_skipped_while_the_deployment_is_alive(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(DEPLOY_PIPELINE, deployed=True)
    deploy = Scripted("deploy_setup", OK)
    driver(ctx, registry(deploy_setup=deploy), initial="deploy_setup").step()
    assert deploy.calls == 0
    assert records(ctx)[0].reason == "already deployed"


# -- skips across rounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "phase, completed_round, current_round, runs",
    [
        ("tests", 1, 1, False),
        ("tests", 1, 2, False),  # once per session
        ("evaluate", 2, 2, False),
        ("evaluate", 1, 2, True),  # once per round
        ("verify", 1, 2, True),
    ],
)
def test_phases_already_done_are_not_run_again(
    make_ctx: ContextFactory, phase: str, completed_round: int, current_round: int, runs: bool
) -> None:
    ctx = make_ctx(round=current_round, require_metrics=False)
    ctx.completed[phase] = completed_round
    scripted = Scripted(phase, OK)
    driver(ctx, registry(**{phase: scripted}), initial=phase).step()
    assert scripted.calls == int(runs)
    assert records(ctx)[0].trigger == (m.PHASE_DONE if runs else m.PHASE_SKIPPED)


# -- evidence --------------------------------------------------------------------------------------------


def test_run_json_is_written_before_each_transition_is_announced(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    seen: list[tuple[str, str, int]] = []

    def hook(record: dict[str, Any]) -> None:
        run = json.loads((ctx.run_dir / RUN_JSON).read_text())
        on_disk = read_journal(ctx.run_dir / JOURNAL).records
        assert record == on_disk[-1].to_json()  # the hook gets the record as written, seq and ts included
        seen.append((run["phase"], record["dest"], record["seq"]))

    d = driver(ctx, registry(tests=Scripted("tests", OK)), initial="auth", on_transition=hook)
    d.run_until(lambda state: state == "health")
    assert seen == [("tests", "tests", 1), ("deploy_setup", "deploy_setup", 2), ("health", "health", 3)]


def test_journal_seq_continues_an_existing_journal(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    old = Journal.open(ctx.run_dir)
    old.append(trigger="earlier", source="clone", dest="bootstrap")
    old.append(trigger="earlier", source="bootstrap", dest="auth")
    driver(ctx, registry(), initial="tests").step()
    assert [r.seq for r in records(ctx)] == [1, 2, 3]
    assert records(ctx)[-1].source == "tests"


def test_fire_without_an_outcome_records_the_reason(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    d = driver(ctx, registry(), initial=m.DONE)
    record = d.fire(m.RESTART, reason="called again")
    assert isinstance(record, TransitionRecord)
    assert (record.seq, record.dest, record.outcome, record.reason) == (1, "bootstrap", None, "called again")
    assert records(ctx) == [record]


def test_secrets_never_reach_the_journal_or_run_json(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(secrets={"BENCH_API_KEY": SECRET})
    leak = Scripted(
        "tests", lambda c: Outcome("tests", FAILED, error=ErrorInfo("command", f"bad {SECRET}", "tests"))
    )
    driver(ctx, registry(tests=leak), initial="tests").step()
    journal = (ctx.run_dir / JOURNAL).read_text()
    assert SECRET not in journal and "bad ***" in journal
    assert SECRET not in (ctx.run_dir / RUN_JSON).read_text()


def test_every_transition_is_an_event_bound_to_its_phase(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    driver(ctx, registry(tests=Scripted("tests", OK)), initial="tests").step()
    events = [json.loads(line) for line in (ctx.run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["phase.start", "phase.end", "transition"]
    transition = events[-1]
    assert (transition["phase"], transition["trigger"], transition["dest"]) == (
        "tests",
        m.PHASE_DONE,
        "deploy_setup",
    )
    assert transition["run_id"] == ctx.run_id and transition["attempt"] == 0


def test_run_until_stops_where_asked(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    d = driver(ctx, registry())
    d.run_until(lambda state: state == "health")
    assert d.state == "health" and len(records(ctx)) == m.PHASES.index("health")
