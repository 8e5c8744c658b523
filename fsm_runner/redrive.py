"""Replay (redrive) a failed or crashed run from the transition where it stopped.

The journal and run.json are the only inputs. A real replay restores the context, ends whatever the
old process left deployed, and continues with the same run_id; a dry run re-walks the recorded
transitions through a fresh machine without running anything.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner import machine as topology
from fsm_runner.context import RUN_JSON, RunContext
from fsm_runner.contract.bootstrap import load_bootstrap
from fsm_runner.contract.envexpand import expand_env
from fsm_runner.contract.pipeline import load_pipeline
from fsm_runner.driver import Driver, TransitionHook
from fsm_runner.errors import ContractError, ReplayError
from fsm_runner.execution import interrupted_command_groups
from fsm_runner.journal import JOURNAL_NAME, Journal, read_journal
from fsm_runner.lifecycle import LOCK_NAME
from fsm_runner.logs import run_logger
from fsm_runner.outcome import ErrorInfo
from fsm_runner.procgroup import kill_group
from fsm_runner.results import EvaluationResult
from fsm_runner.secrets import MASK, Redactor
from fsm_runner.session import Session
from fsm_runner.stage_env import check_overrides
from fsm_runner.targets import ResolvedTarget
from states.teardown import end_deploy_groups


def _load_run(run_dir: Path) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    """run.json and the journal records, or :class:`ReplayError` saying why they cannot be used."""
    if not run_dir.is_dir():
        raise ReplayError(f"{run_dir}: no such run directory")
    journal_path = run_dir / JOURNAL_NAME
    if not journal_path.is_file():
        raise ReplayError(f"{run_dir}: no journal.jsonl, so there is nothing to replay from")
    read = read_journal(journal_path)
    if read.problem:
        hint = " (the runner crashed while writing it)" if read.torn else ""
        raise ReplayError(f"{read.problem}{hint}; the journal cannot be trusted for replay")
    if not read.records:
        raise ReplayError(f"{journal_path} has no records; start a new run instead")
    try:
        run = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, ValueError) as exc:
        raise ReplayError(f"{run_dir / RUN_JSON} is unreadable ({exc}); start a new run instead") from None
    return run, read.records


def _is_live(run_dir: Path) -> str | None:
    lock = run_dir / LOCK_NAME
    if not lock.exists():
        return None
    with lock.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            return f"pid {owner}"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


def can_replay(run_dir: str | os.PathLike[str]) -> tuple[bool, str]:
    """Whether :func:`replay` would run, and why not; nothing is executed."""
    path = Path(run_dir)
    try:
        run, records = _load_run(path)
    except ReplayError as exc:
        return False, str(exc)
    owner = _is_live(path)
    if owner:
        return False, f"{path}: the run is still in progress ({owner} holds its lock)"
    last = records[-1]
    if run.get("status") == "closed":
        return False, f"{path}: the session was closed before the pipeline finished; start a new run"
    if last["dest"] == topology.DONE or run.get("status") == "ok":
        return False, f"{path}: the run finished successfully; there is nothing to replay"
    if last["dest"] in (topology.FAILED, topology.REPAIR) and not _failed_phase(run, records):
        return False, f"{path}: the run failed outside a replayable phase"
    return (
        True,
        f"continues at {_resume_state(run, records)} (redrive {int(run.get('redrive_count', 0)) + 1})",
    )


def _failed_phase(run: dict[str, Any], records: tuple[dict[str, Any], ...]) -> str | None:
    phase = run.get("failed_phase")
    if not phase:
        interrupted = [r for r in records if r["trigger"] == topology.INTERRUPT]
        phase = interrupted[-1]["source"] if interrupted else None
    if phase in topology.PHASES and phase not in topology.NOT_REPAIRABLE:
        return str(phase)
    return None


def _resume_state(run: dict[str, Any], records: tuple[dict[str, Any], ...]) -> str:
    """The phase replay continues at: the failed one, or where a crash stopped the machine."""
    last = str(records[-1]["dest"])
    if last in (topology.FAILED, topology.REPAIR):
        return _failed_phase(run, records) or last
    return last


@define(frozen=True)
class DryRunStep:
    seq: int
    trigger: str
    source: str
    dest: str
    accepted: bool
    note: str = ""


@define(frozen=True)
class DryRunReport:
    """Whether today's machine and contract still accept a recorded run."""

    run_dir: Path
    steps: tuple[DryRunStep, ...]
    contract_problem: str | None
    contract_changed: bool
    replayable: bool = True
    reason: str = ""

    @property
    def ok(self) -> bool:
        """The machine accepts every record, the contract validates, and replay would run."""
        return self.replayable and self.contract_problem is None and all(s.accepted for s in self.steps)

    def lines(self) -> list[str]:
        out = []
        for s in self.steps:
            verdict = "accepted" if s.accepted else f"REJECTED: {s.note}"
            out.append(f"{s.seq:>4}  {s.source} --{s.trigger}--> {s.dest}  {verdict}")
        if self.contract_problem:
            out.append(f"contract: {self.contract_problem}")
        elif self.contract_changed:
            out.append("contract: changed since the run (accepted; it validates)")
        if not self.replayable:
            out.append(f"replay: {self.reason}")
        out.append("replayable" if self.ok else "not replayable with the current machine and contract")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "run_dir": str(self.run_dir),
            "contract_problem": self.contract_problem,
            "contract_changed": self.contract_changed,
            "replayable": self.replayable,
            "reason": self.reason,
            "steps": [
                {
                    "seq": s.seq,
                    "trigger": s.trigger,
                    "source": s.source,
                    "dest": s.dest,
                    "accepted": s.accepted,
                    "note": s.note,
                }
                for s in self.steps
            ],
        }


class _RecordedGuards:
    """A machine model whose guards answer what the journal recorded."""

    state: str

    def __init__(self) -> None:
        self.values: dict[str, bool] = {}
        for name in topology.GUARD_NAMES:
            setattr(self, name, lambda name=name: self.values.get(name, False))


def walk_journal(run_dir: Path) -> DryRunReport:
    """The dry run: every recorded transition fired through a fresh machine with the recorded guards."""
    run, records = _load_run(run_dir)
    model = _RecordedGuards()
    machine = topology.build_machine(model, str(records[0]["source"]))
    steps = []
    previous: str | None = None
    for record in records:
        source, trigger, dest = str(record["source"]), str(record["trigger"]), str(record["dest"])
        note = ""
        if previous is not None and source != previous:
            note = f"starts in {source} but the previous record ended in {previous}"
        elif source not in topology.STATES or trigger not in topology.TRIGGERS:
            note = f"unknown state or trigger ({source}, {trigger})"
        else:
            machine.set_state(source)
            model.values = dict(record.get("guards") or {})
            model.values.setdefault(topology.retry_guard(dest), True)
            try:
                model.trigger(trigger)  # type: ignore[attr-defined]
                if model.state != dest:
                    note = f"the machine now goes to {model.state}"
            except Exception as exc:  # transitions raises MachineError for an invalid trigger
                note = str(exc)
        steps.append(DryRunStep(int(record["seq"]), trigger, source, dest, not note, note))
        previous = dest
    repo = Path(run["target"]["repo_root"])
    problem = None
    changed = False
    try:
        spec = load_pipeline(repo, run.get("pipeline_rel", "pipeline.yml"))
        changed = spec.sha256 != run.get("contract_sha256")
    except ContractError as exc:
        problem = str(exc)
    replayable, reason = can_replay(run_dir)
    return DryRunReport(run_dir, tuple(steps), problem, changed, replayable, reason)


def replay(
    run_dir: str | os.PathLike[str],
    *,
    repair_iters: int = 0,
    repair_agent: Any = None,
    dry_run: bool = False,
    env_overrides: Mapping[str, str] | None = None,
    console: bool | None = None,
    on_transition: TransitionHook | None = None,
) -> EvaluationResult | DryRunReport:
    """Continue a failed run after a fix: same run_id, ``redrive_count`` + 1, records appended.

    Phases that succeeded are not re-run; a phase that needs the deployment deploys again when the old
    one is gone. A contract fixed by hand is re-validated and both hashes are recorded. With
    ``dry_run`` nothing executes: the report says whether the current machine accepts the journal.
    Secret ``env_overrides`` of the original run are not stored; pass them again in ``env_overrides``
    (or the environment), or replay refuses and names them.
    """
    path = Path(run_dir).resolve()
    if dry_run:
        return walk_journal(path)
    ok, reason = can_replay(path)
    if not ok:
        raise ReplayError(reason)
    run, records = _load_run(path)
    ctx = _restore(
        path,
        run,
        dict(env_overrides or {}),
        repair_iters=repair_iters,
        repair_agent=repair_agent,
        console=console,
    )
    state = _resume_state(run, records)
    last = str(records[-1]["dest"])
    redrive = last in (topology.FAILED, topology.REPAIR)
    driver = Driver(
        ctx, Journal.open(path), initial=topology.FAILED if redrive else last, on_transition=on_transition
    )
    session = Session._resume(ctx, driver)  # takes the run's lock before anything is touched
    try:

        def drive() -> None:
            _end_leftovers(ctx)
            if redrive:
                ctx.failed_phase = state
                driver.fire(topology.REDRIVE, reason=f"replay #{ctx.redrive_count}")
                ctx.status = "running"
            driver.run_until(lambda s: False)

        session._call(drive)
        return session._evaluation_result()
    finally:
        session.close()


def _restore(
    run_dir: Path,
    run: dict[str, Any],
    given: dict[str, str],
    *,
    repair_iters: int,
    repair_agent: Any,
    console: bool | None,
) -> RunContext:
    target_data = run["target"]
    target = ResolvedTarget(
        spec=target_data["spec"],
        repo_root=Path(target_data["repo_root"]),
        kind=target_data["kind"],
        url=target_data.get("url"),
        ref=target_data.get("ref"),
        commit=target_data.get("commit"),
        cache_hit=bool(target_data.get("cache_hit")),
    )
    pipeline_rel = run.get("pipeline_rel", "pipeline.yml")
    pipeline = load_pipeline(target.repo_root, pipeline_rel)
    bootstrap = load_bootstrap(target.repo_root)
    saved = run.get("env_overrides") or {}
    missing = sorted(k for k, v in saved.items() if v == MASK and k not in given and k not in os.environ)
    if missing:
        raise ReplayError(
            f"the run used secret overrides that are not stored: {', '.join(missing)}; "
            "set them in the environment or pass them again (replay(env_overrides=...) / --env K=V)"
        )
    overrides = {**{k: v for k, v in saved.items() if v != MASK}, **given}
    check_overrides({**os.environ, **overrides})
    redactor = Redactor.from_env({**os.environ, **overrides})
    log, sink = run_logger(run_dir, run["run_id"], console=console)
    hashes = list(run.get("contract_hashes") or [run.get("contract_sha256", "")])
    if pipeline.sha256 not in hashes:
        hashes.append(pipeline.sha256)
    last_error = run.get("last_error")
    ctx = RunContext(
        run_id=run["run_id"],
        run_dir=run_dir,
        target=target,
        pipeline=pipeline,
        pipeline_rel=pipeline_rel,
        bootstrap=bootstrap,
        base_env=dict(os.environ),
        redactor=redactor,
        log=log.bind(redrive=int(run.get("redrive_count", 0)) + 1),
        unattended=run.get("unattended", "strict"),
        require_metrics=bool(run.get("require_metrics", True)),
        contract_sha256=pipeline.sha256,
        contract_hashes=hashes,
        llm=run.get("llm"),
        mode=run.get("mode", "smoke"),
        require_samples=bool(run.get("require_samples", False)),
        env_overrides=overrides,
        repair_iters=repair_iters,
        agent=repair_agent,
        round=int(run.get("round", 1)),
        completed={k: int(v) for k, v in (run.get("completed") or {}).items()},
        outputs=dict(run.get("outputs") or {}),
        runs_of_phase={k: int(v) for k, v in (run.get("runs_of_phase") or {}).items()},
        deploy_pgids=[int(p) for p in run.get("deploy_pgids") or []],
        deploy_leaders=dict(run.get("deploy_leaders") or {}),
        deployed=bool(run.get("deployed")),
        failed_phase=run.get("failed_phase"),
        last_error=ErrorInfo.from_json(last_error) if last_error else None,
        redrive_count=int(run.get("redrive_count", 0)) + 1,
        deployed_llm=run.get("deployed_llm"),
        rollout_requested=bool(run.get("rollout_requested", False)),
        skip_rollout_round=int(run.get("skip_rollout_round", 0)),
        status="running",
        sink=sink,
    )
    if bootstrap is not None:
        ctx.bootstrap_env = expand_env(bootstrap.env, {**ctx.base_env, **overrides}, target.repo_root)
    ctx.refresh_redactor()
    return ctx


def _end_leftovers(ctx: RunContext) -> None:
    """A killed runner may have left its deployment and its running command behind: end them first."""
    stray = interrupted_command_groups(ctx.run_dir)
    for pgid in stray:
        kill_group(pgid)
    killed = end_deploy_groups(ctx)
    if stray or killed:
        ctx.log.info("replay.ended_leftovers", pgids=[*stray, *killed])
