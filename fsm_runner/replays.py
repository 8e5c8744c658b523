"""Replay (redrive) a failed or crashed run from the transition where it stopped.

The journal and run.json are the only inputs, read through their typed records. :func:`replay` restores
the context, ends whatever the old process left running, and continues with the same run_id;
:func:`check_replay` (the dry run) re-walks the recorded transitions through a fresh machine without
running anything; :func:`can_replay` answers yes or no, with the reason, and never raises.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, overload

import attrs
from attrs import define

from fsm_runner.contract.bootstrap import load_bootstrap
from fsm_runner.contract.envexpand import expand_env
from fsm_runner.contract.fields import PORT_ENV
from fsm_runner.contract.pipeline import PipelineSpec, load_pipeline
from fsm_runner.engine import topology
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.deployment import end_deployment
from fsm_runner.engine.driver import Driver
from fsm_runner.engine.leftovers import Leftovers, end_dead_runs
from fsm_runner.engine.lifecycle import live_sessions
from fsm_runner.engine.progress import ProgressHook, as_hook, heartbeat_seconds
from fsm_runner.errors import (
    ContractError,
    EvidenceError,
    FsmRunnerError,
    ReplayError,
    TargetError,
    UsageError,
)
from fsm_runner.evidence.contract_copies import keep_contract_copies, read_contract_copy
from fsm_runner.evidence.events import run_logger
from fsm_runner.evidence.journal import Journal
from fsm_runner.evidence.layout import (
    BOOTSTRAP_REL,
    EVENTS,
    JOURNAL,
    LOCK,
)
from fsm_runner.evidence.lock import lock_holder
from fsm_runner.evidence.records import SANDBOXES, RunState, TransitionRecord
from fsm_runner.evidence.redaction import MASK, Redactor
from fsm_runner.evidence.store import read_records, read_run
from fsm_runner.execution.ports import free_port, pinned_port, port_is_free
from fsm_runner.execution.sandbox import require_sandbox, resolve_sandbox, sandbox_problem
from fsm_runner.execution.stage_env import check_overrides, env_map
from fsm_runner.repair import AgentLike, RepairStep, as_agent
from fsm_runner.repair.interrupted import interrupted_repair_note, undo_interrupted_repair
from fsm_runner.results import EvaluationResult
from fsm_runner.session import Session
from fsm_runner.states import phases
from fsm_runner.targets import restore_checkout, with_url_credentials
from fsm_runner.trees import TreeClaim, claim_tree
from fsm_runner.typing import StrPath, TransitionHook


def _load_run(run_dir: Path) -> tuple[RunState, tuple[TransitionRecord, ...]]:
    """run.json and the journal records, or :class:`ReplayError` saying why they cannot be used."""
    journal_path = run_dir / JOURNAL
    try:
        if not run_dir.is_dir():
            raise ReplayError(f"{run_dir}: no such run directory")
        if not journal_path.is_file():
            raise ReplayError(f"{run_dir}: no {JOURNAL}, so there is nothing to replay from")
        read = read_records(run_dir)
        run = read_run(run_dir)
    except OSError as exc:
        raise ReplayError(f"{run_dir}: cannot read: {exc.strerror or exc}") from None
    except EvidenceError as exc:
        raise ReplayError(f"{exc}; start a new run instead") from None
    if read.problem:
        hint = " (the runner crashed while writing it)" if read.torn else ""
        raise ReplayError(f"{read.problem}{hint}; the journal cannot be trusted for replay")
    if not read.records:
        raise ReplayError(f"{journal_path} has no records; start a new run instead")
    return run, read.records


def can_replay(run_dir: StrPath) -> tuple[bool, str]:
    """Whether :func:`replay` would run, and why not; nothing is executed and nothing raises."""
    try:
        path = Path(run_dir)
        run, records = _load_run(path)
        return _verdict(path, run, records)
    except (FsmRunnerError, OSError) as exc:
        return False, str(exc)
    except (TypeError, ValueError) as exc:  # not a path at all (None, a NUL byte)
        return False, f"{run_dir!r} is not a run directory: {exc}"


def _verdict(path: Path, run: RunState, records: tuple[TransitionRecord, ...]) -> tuple[bool, str]:
    for line, record in enumerate(records, start=1):
        unknown = topology.unknown_names(record.source, record.trigger, record.dest)
        if unknown:
            return False, (
                f"{path / JOURNAL}:{line}: {', '.join(unknown)} not in this machine; the journal was written "
                "by another version of fsm-runner"
            )
    owner = lock_holder(path, wait=True)
    note = ""
    if owner:
        own = _own_session(path)
        if own is None:
            return False, f"{path}: the run is still in progress (its lock is held by {owner})"
        if own.busy or own.state != topology.FAILED:
            where = "in a call" if own.busy else f"open at {own.state}"
            return False, (
                f"{path}: the run is still in progress in this process (its session is {where}); continue it "
                "with the session's calls, or close the session (sess.close()) and start a new run"
            )
        note = "; closes the failed session of this process that holds it first"
    if run.status == "closed":
        return False, f"{path}: the session was closed before the pipeline finished; start a new run"
    if records[-1].dest == topology.DONE or run.status == "ok":
        return False, f"{path}: the run finished successfully; there is nothing to replay"
    if records[-1].dest in (topology.FAILED, topology.REPAIR) and not _failed_phase(run, records):
        return False, f"{path}: the run failed outside a replayable phase"
    return True, f"continues at {_resume_state(run, records)} (redrive {run.redrive_count + 1}){note}"


def _own_session(run_dir: Path) -> Session | None:
    """The open session of this process that holds ``run_dir``, if any."""
    wanted = run_dir.resolve()
    for session in live_sessions():
        if isinstance(session, Session) and session.run_dir.resolve() == wanted:
            return session
    return None


def replay_repo(run_dir: Path, run: RunState) -> tuple[Path, str]:
    """The repository replay works in, and a note when it is not the one run.json recorded.

    A local run is replayed in the repository that holds its run dir (the nearest ancestor holding the
    run's pipeline file): a tree copied with ``cp -r`` or moved is replayed where it is now, an isolated
    run in the tree it was copied from. Runs kept elsewhere (``--artifacts-dir``, git targets) use the
    recorded path.
    """
    recorded = run.target.repo_root
    if run.target.kind != "local":
        return recorded, ""
    found = next((p for p in run_dir.parents if (p / run.pipeline_rel).is_file()), None)
    if found is None or found == recorded.resolve():
        return recorded, ""
    was = f"recorded {recorded}"
    if run.target.isolated_from:
        was = f"worked in {recorded}, a private copy of {run.target.isolated_from}"
    return found, f"the run {was}; replay works in {found}, the repository that holds the run dir"


def _failed_phase(run: RunState, records: tuple[TransitionRecord, ...]) -> str | None:
    phase = run.failed_phase
    if not phase:
        interrupted = [r for r in records if r.trigger == topology.INTERRUPT]
        phase = interrupted[-1].source if interrupted else None
    if phase in topology.PHASES and phase not in topology.NOT_REPAIRABLE:
        return phase
    return None


def _resume_state(run: RunState, records: tuple[TransitionRecord, ...]) -> str:
    """The phase replay continues at: the failed one, or where a crash stopped the machine."""
    last = records[-1].dest
    if last in (topology.FAILED, topology.REPAIR):
        return _failed_phase(run, records) or last
    return last


# -- the dry run -------------------------------------------------------------------------------------------


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
    #: Secret overrides the run used, which are not stored: replay needs them again.
    secrets_needed: tuple[str, ...] = ()
    #: The repository replay works in, and why it is not the recorded one (empty when it is).
    repo_root: Path | None = None
    repo_note: str = ""
    #: How pipeline.yml changed since the run: a unified diff against the run's copy (empty when unchanged
    #: or when the run kept no copy).
    contract_diff: tuple[str, ...] = ()
    #: What replay does about a repair the runner was killed in (empty when there is none), and whether
    #: replay refuses because of it.
    repair_note: str = ""
    repair_refused: bool = False

    @property
    def ok(self) -> bool:
        """The machine accepts every record, the contract validates, and replay would run."""
        return (
            self.replayable
            and not self.repair_refused
            and self.contract_problem is None
            and all(s.accepted for s in self.steps)
        )

    def lines(self) -> list[str]:
        out = []
        for s in self.steps:
            verdict = "accepted" if s.accepted else f"REJECTED: {s.note}"
            out.append(f"{s.seq:>4}  {s.source} --{s.trigger}--> {s.dest}  {verdict}")
        if self.repo_note:
            out.append(f"repo: {self.repo_note}")
        if self.contract_problem:
            out.append(f"contract: {self.contract_problem}")
        elif self.contract_changed:
            out.append("contract: changed since the run (accepted; it validates)")
        out.extend(f"  {line}" for line in self.contract_diff)
        if self.repair_note:
            out.append(f"repair: {self.repair_note}")
        if not self.replayable:
            out.append(f"replay: {self.reason}")
        if self.secrets_needed:
            names = ", ".join(self.secrets_needed)
            out.append(f"replay: set {names} in the environment or pass it again with --env (not stored)")
        if self.ok:
            out.append("replayable")
        elif self.replayable:  # the run could continue, but not with this machine, contract or environment
            out.append("not replayable with the current machine and contract")
        else:
            out.append("not replayable")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "run_dir": str(self.run_dir),
            "contract_problem": self.contract_problem,
            "contract_changed": self.contract_changed,
            "replayable": self.replayable,
            "reason": self.reason,
            "secrets_needed": list(self.secrets_needed),
            "repo_root": str(self.repo_root) if self.repo_root else None,
            "repo_note": self.repo_note,
            "contract_diff": list(self.contract_diff),
            "repair_note": self.repair_note,
            "repair_refused": self.repair_refused,
            "steps": [attrs.asdict(s) for s in self.steps],
        }


class _RecordedGuards:
    """A machine model whose guards answer what the journal recorded."""

    state: str

    def __init__(self) -> None:
        self.values: dict[str, bool] = {}
        for name in topology.GUARD_NAMES:
            setattr(self, name, lambda name=name: self.values.get(name, False))


def _walk(records: tuple[TransitionRecord, ...]) -> list[DryRunStep]:
    model = _RecordedGuards()
    start = records[0].source if records[0].source in topology.STATES else topology.PHASES[0]
    machine = topology.build_machine(model, start)
    steps = []
    previous: str | None = None
    for record in records:
        source, trigger, dest = record.source, record.trigger, record.dest
        note = ""
        if previous is not None and source != previous:
            note = f"starts in {source} but the previous record ended in {previous}"
        elif source not in topology.STATES or trigger not in topology.TRIGGERS:
            note = f"unknown state or trigger ({source}, {trigger})"
        else:
            machine.set_state(source)
            model.values = dict(record.guards)
            model.values.setdefault(topology.retry_guard(dest), True)
            try:
                model.trigger(trigger)  # type: ignore[attr-defined]
                if model.state != dest:
                    note = f"the machine now goes to {model.state}"
            except Exception as exc:  # transitions raises MachineError for an invalid trigger
                note = str(exc)
        steps.append(DryRunStep(record.seq, trigger, source, dest, not note, note))
        previous = dest
    return steps


def check_replay(run_dir: StrPath, *, sandbox: str | None = None) -> DryRunReport:
    """The dry run: every recorded transition fired through a fresh machine with the recorded guards, the
    contract re-validated, the :func:`can_replay` verdict, and whether the sandbox the replay needs works
    here (``sandbox`` as for :func:`replay`); nothing runs."""
    path = Path(run_dir).resolve()
    run, records = _load_run(path)
    repo, moved = replay_repo(path, run)
    problem = None
    changed = False
    contract_sandbox, contract_network = "none", "host"  # when it cannot be read: the run's own
    diff: tuple[str, ...] = ()
    try:
        # A git run's removed checkout is re-created at the recorded commit: its contract is the recorded one.
        if run.target.clone is None or repo.exists():
            spec = load_pipeline(repo, run.pipeline_rel)
            changed = spec.sha256 != run.contract_sha256
            contract_sandbox, contract_network = spec.security.sandbox, spec.security.network
            if changed:
                diff = _contract_diff(path, run, repo, _contract_redactor(repo, spec))
    except ContractError as exc:
        problem = str(exc)
    replayable, reason = _verdict(path, run, records)
    mode, network = replay_sandbox(run, contract_sandbox, contract_network, sandbox)
    unavailable = sandbox_problem(network) if mode == "bwrap" else None
    if replayable and unavailable:
        replayable, reason = False, unavailable
    needed = tuple(_secrets_missing(run, {}))
    steps = tuple(_walk(records))
    repair_note, refused = interrupted_repair_note(path, repo, records) if repo.is_dir() else ("", False)
    return DryRunReport(
        path, steps, problem, changed, replayable, reason, needed, repo, moved, diff, repair_note, refused
    )


#: A contract diff longer than this is cut (the rest is counted).
_MAX_DIFF_LINES = 200


def _contract_redactor(repo: Path, spec: PipelineSpec) -> Redactor:
    """Secrets the dry run knows of: the environment's, and secret-looking env values of the contract."""
    env = dict(os.environ)
    for name in ("tests", "auth", "deploy", "rollout", "evaluation", "benchmark"):
        section = getattr(spec, name)
        if section is not None:
            env.update({f"{name}.{k}": v for k, v in section.env.items()})
    try:
        bootstrap = load_bootstrap(repo)
    except ContractError:
        bootstrap = None
    if bootstrap is not None:
        env.update({f"bootstrap.{k}": v for k, v in bootstrap.env.items()})
    return Redactor.from_env(env)


def _contract_diff(run_dir: Path, run: RunState, repo: Path, redactor: Redactor) -> tuple[str, ...]:
    """The run's pipeline (its copy in the run dir) against the current one, as unified diff lines."""
    old = read_contract_copy(run_dir, run.contract_sha256, run.pipeline_rel)
    try:
        new = (repo / run.pipeline_rel).read_bytes()
    except OSError:
        return ()
    if old is None:
        return ()
    lines = list(
        difflib.unified_diff(
            old.decode("utf-8", "replace").splitlines(),
            redactor.mask(new.decode("utf-8", "replace")).splitlines(),
            f"{run.pipeline_rel} (the run's, sha256 {run.contract_sha256[:12]})",
            f"{run.pipeline_rel} (now, sha256 {hashlib.sha256(new).hexdigest()[:12]})",
            lineterm="",
        )
    )
    if len(lines) > _MAX_DIFF_LINES:
        lines = [*lines[:_MAX_DIFF_LINES], f"... {len(lines) - _MAX_DIFF_LINES} more lines"]
    return tuple(lines)


def _secrets_missing(run: RunState, given: Mapping[str, str]) -> list[str]:
    """Secret overrides of the run (stored masked) that neither ``given`` nor the environment supplies."""
    return sorted(
        k for k, v in run.env_overrides.items() if v == MASK and k not in given and k not in os.environ
    )


# -- replay ------------------------------------------------------------------------------------------------


@overload
def replay(
    run_dir: StrPath,
    *,
    repair_iters: int = ...,
    repair_agent: AgentLike | None = ...,
    dry_run: Literal[False] = ...,
    env_overrides: Mapping[str, str] | None = ...,
    console: bool | None = ...,
    on_transition: TransitionHook | None = ...,
    wait: bool = ...,
    on_wait: Callable[[str], None] | None = ...,
    sandbox: str | None = ...,
    progress: ProgressHook | bool | None = ...,
    heartbeat_s: float | None = ...,
) -> EvaluationResult: ...


@overload
def replay(
    run_dir: StrPath,
    *,
    repair_iters: int = ...,
    repair_agent: AgentLike | None = ...,
    dry_run: Literal[True],
    env_overrides: Mapping[str, str] | None = ...,
    console: bool | None = ...,
    on_transition: TransitionHook | None = ...,
    wait: bool = ...,
    on_wait: Callable[[str], None] | None = ...,
    sandbox: str | None = ...,
    progress: ProgressHook | bool | None = ...,
    heartbeat_s: float | None = ...,
) -> DryRunReport: ...


def replay(
    run_dir: StrPath,
    *,
    repair_iters: int = 0,
    repair_agent: AgentLike | None = None,
    dry_run: bool = False,
    env_overrides: Mapping[str, str] | None = None,
    console: bool | None = None,
    on_transition: TransitionHook | None = None,
    wait: bool = False,
    on_wait: Callable[[str], None] | None = None,
    sandbox: str | None = None,
    progress: ProgressHook | bool | None = None,
    heartbeat_s: float | None = None,
) -> EvaluationResult | DryRunReport:
    """Continue a failed run after a fix: same run_id, ``redrive_count`` + 1, records appended.

    Phases that succeeded are not re-run; a phase that needs the deployment deploys again when the old
    one is gone. A contract fixed by hand is re-validated and both hashes are recorded. Secret
    ``env_overrides`` of the original run are not stored; pass them again in ``env_overrides`` (or the
    environment), or replay refuses and names them. ``dry_run=True`` is :func:`check_replay`.

    A local run is replayed in the repository that holds its run dir (see :func:`replay_repo`), holding
    that tree like a session does (``wait=True`` waits for another live run of it; ``on_wait`` hears one
    line when the wait starts). When the failed run's
    session is still open in this process, replay closes it first. ``progress`` and ``heartbeat_s`` are
    :func:`fsm_runner.setup`'s.

    The replay runs in the sandbox the run recorded (run.json ``sandbox``, ``network``), tightened by what the
    contract now says and by ``sandbox`` (see :func:`fsm_runner.setup`); it is never loosened.
    """
    path = Path(run_dir).resolve()
    if sandbox is not None and sandbox not in SANDBOXES:
        raise UsageError(f"sandbox must be one of {', '.join(SANDBOXES)}, got {sandbox!r}")
    hook, interval = as_hook(progress), heartbeat_seconds(heartbeat_s)
    if dry_run:
        return check_replay(path, sandbox=sandbox)
    ok, reason = can_replay(path)
    if not ok:
        raise ReplayError(reason)
    own = _own_session(path)
    if own is not None:
        own.close()  # can_replay let it through: a failed session between calls
    run, records = _load_run(path)
    run = attrs.evolve(run, target=with_url_credentials(run.target))
    repo, moved, claim = _take_repo(path, run, wait=wait, on_wait=on_wait)
    try:
        ctx, ended_first = _restore(
            path,
            run,
            records,
            repo,
            env_map(env_overrides),
            repair_iters,
            repair_agent,
            console,
            sandbox=sandbox,
        )
        state = _resume_state(run, records)
        last = records[-1].dest
        redrive = last in (topology.FAILED, topology.REPAIR)
        initial = topology.FAILED if redrive else last
        driver = Driver(
            ctx,
            Journal.open(path),
            phases(),
            initial=initial,
            on_transition=on_transition,
            progress=hook,
            heartbeat_s=interval,
        )
        session = Session._resume(ctx, driver, claim)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    try:
        if own is not None:
            ctx.log.info("replay.closed_session", reason="its session was open in this process")
        if moved:
            ctx.log.info("replay.repo", repo=str(repo), recorded=str(run.target.repo_root), note=moved)
        if claim is not None:
            claim.report(ctx.log)

        def drive() -> None:
            ended = [*ended_first, *_end_leftovers(ctx, claim, moved=bool(moved))]
            _keep_port(ctx)
            if redrive:
                ctx.failed_phase = state
                reason = f"replay #{ctx.redrive_count}"
                if ended:
                    reason += f"; ended what dead runs left: {'; '.join(e.describe() for e in ended)}"
                driver.fire(topology.REDRIVE, reason=reason)
                ctx.status = "running"
            driver.run_until(lambda s: False)

        session._call(drive)
        return session._evaluation_result()
    finally:
        session.close()


def _take_repo(
    run_dir: Path, run: RunState, *, wait: bool, on_wait: Callable[[str], None] | None
) -> tuple[Path, str, TreeClaim | None]:
    """The repository replay works in (a git run's removed checkout made again), held like a session's."""
    try:
        restore_checkout(run.target, run_dir)
    except TargetError as exc:
        raise ReplayError(f"cannot re-create the run's checkout: {exc}") from None
    repo, moved = replay_repo(run_dir, run)
    claim = None
    if run.target.kind == "local" and repo.is_dir():  # a tree that is gone fails below, with what to do
        claim = claim_tree(
            repo, run_id=run.run_id, run_dir=run_dir, wait=wait, replaying=True, on_wait=on_wait
        )
    return repo, moved, claim


def _restore(
    run_dir: Path,
    run: RunState,
    records: tuple[TransitionRecord, ...],
    root: Path,
    given: dict[str, str],
    repair_iters: int,
    repair_agent: AgentLike | None,
    console: bool | None,
    *,
    sandbox: str | None = None,
) -> tuple[RunContext, list[Leftovers]]:
    """The run's context, restored; and what was ended to undo a repair the runner was killed in."""
    saved = run.env_overrides
    missing = _secrets_missing(run, given)
    if missing:
        raise ReplayError(
            f"the run used secret overrides that are not stored: {', '.join(missing)}; "
            "set them in the environment or pass them again (replay(env_overrides=...) / --env K=V)"
        )
    overrides = {**{k: v for k, v in saved.items() if v != MASK}, **given}
    check_overrides({**os.environ, **overrides})
    log, sink = run_logger(run_dir, run.run_id, console=console)
    try:
        # Before the contract is even read: the agent is ended and what it may not change is put back.
        redactor = Redactor.from_env({**os.environ, **overrides})
        ended = undo_interrupted_repair(run_dir, run, root, records, log, redactor)
        pipeline = load_pipeline(root, run.pipeline_rel)
        mode, network = replay_sandbox(run, pipeline.security.sandbox, pipeline.security.network, sandbox)
        if mode == "bwrap":
            require_sandbox(network)
        bootstrap = load_bootstrap(root)
        hashes = run.contract_hashes or [run.contract_sha256]
        target = run.target
        if root != target.repo_root:  # the run dir's repository: record where the run lives now
            target = attrs.evolve(target, repo_root=root, isolated_from=None)
        state = attrs.evolve(
            run,
            target=target,
            status="running",
            contract_sha256=pipeline.sha256,
            contract_hashes=hashes if pipeline.sha256 in hashes else [*hashes, pipeline.sha256],
            env_overrides=overrides,
            port=pinned_port(overrides) or run.port,
            repair_iters=repair_iters,
            redrive_count=run.redrive_count + 1,
            sandbox=mode,
            network=network,
        )
        ctx = RunContext.from_state(
            state,
            run_dir=run_dir,
            pipeline=pipeline,
            bootstrap=bootstrap,
            base_env=dict(os.environ),
            redactor=redactor,
            log=log.bind(redrive=state.redrive_count),
            sink=sink,
            repairer=RepairStep(as_agent(repair_agent)) if repair_agent is not None else None,
        )
        if bootstrap is not None:
            ctx.bootstrap_env = expand_env(bootstrap.env, {**ctx.base_env, **overrides}, root)
        ctx.refresh_redactor()
        keep_contract_copies(run_dir, root, (run.pipeline_rel, BOOTSTRAP_REL), ctx.redactor)
    except BaseException:
        sink.close()
        raise
    return ctx, ended


def replay_sandbox(
    run: RunState, contract_sandbox: str, contract_network: str, requested: str | None = None
) -> tuple[str, str]:
    """The sandbox and network of a replay: the run's, tightened by today's contract and the caller."""
    mode = resolve_sandbox(contract_sandbox, requested, recorded=run.sandbox)
    network = "none" if "none" in (run.network, contract_network) else "host"
    return mode, network


def _keep_port(ctx: RunContext) -> None:
    """The run continues on its port; when another program took it meanwhile, the run moves to a free one.

    Runs from before ports were recorded get one now. A port the caller pinned is kept whatever holds it.
    """
    old = ctx.port
    if old is not None and (PORT_ENV in ctx.env_overrides or port_is_free(old)):
        return
    ctx.port = free_port()
    if old is None:
        ctx.log.info("replay.port_assigned", port=ctx.port)
    else:
        ctx.log.warning("replay.port_changed", old_port=old, port=ctx.port, reason=f"port {old} is in use")
    ctx.save()


def _end_leftovers(ctx: RunContext, claim: TreeClaim | None, *, moved: bool) -> list[Leftovers]:
    """A killed runner may have left its deployment, its running command and its repair agent behind, and
    so may other dead runs of the tree: end them all before anything runs again.

    A run dir that came with a copy of its tree (``moved``) names the original tree's processes: those
    are never this replay's to end.
    """
    previous = claim.previous if claim is not None else None
    also = [Path(previous.run_dir)] if previous and previous.run_dir else []
    own = None if moved else ctx.run_dir
    ended = end_dead_runs(
        ctx.run_dir.parent, log=ctx.log, target=ctx.target, also=also, own=own, redactor=ctx.redactor
    )
    end_deployment(ctx, kill=not moved)  # gone now (or never ours): the deployment must be set up again
    # A killed runner never masked the command it waited for, nor what its services wrote: now nothing of
    # the run is left running, mask all of it (not the events and journal this process appends to).
    ctx.redactor.mask_tree(ctx.run_dir, skip=(EVENTS, JOURNAL, LOCK))
    return ended
