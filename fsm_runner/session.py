"""A session: ``Session.rollout`` -> ``Session.evaluate`` on one run (``fsm_runner.api.setup`` opens it).

A session call is a *target* for the driver loop: it says how far the machine should run. Whatever
happens inside a call (a failure, an exception, SIGINT/SIGTERM), deployed services are torn down per
policy and the journal records why.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

from fsm_runner.contract.bootstrap import BootstrapSpec
from fsm_runner.contract.pipeline import PipelineSpec
from fsm_runner.engine import topology
from fsm_runner.engine.context import RunContext
from fsm_runner.engine.deployment import kill_deployment_groups
from fsm_runner.engine.driver import Driver
from fsm_runner.engine.lifecycle import (
    Interrupted,
    closing_reason,
    register_live,
    session_use,
    sigterm_raises,
    unregister_live,
)
from fsm_runner.engine.outcome import FAILED, ErrorInfo, Outcome
from fsm_runner.engine.phase import Repairer, recorded_commands
from fsm_runner.errors import FsmRunnerError, UsageError
from fsm_runner.evidence.atomic import create_run_dir
from fsm_runner.evidence.events import run_logger
from fsm_runner.evidence.journal import Journal
from fsm_runner.evidence.layout import ROLLOUT_REL, stage_dir_name
from fsm_runner.evidence.lock import hold_lock, release_lock
from fsm_runner.evidence.records import MODES
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.interrupts import take_stop
from fsm_runner.execution.ports import pinned_port, run_port
from fsm_runner.execution.stage_env import check_overrides, env_map
from fsm_runner.results import EvaluationResult, RolloutResult, evaluation_result, rollout_result
from fsm_runner.states import phase_named, phases, section_aliases
from fsm_runner.targets import ResolvedTarget, remove_checkout
from fsm_runner.trees import TreeClaim
from fsm_runner.typing import TransitionHook


class Session:
    """One run of one target. Use it as a context manager, or call :meth:`close` (teardown) when done."""

    ctx: RunContext
    driver: Driver
    _lock: IO[str]
    _closed: bool
    _mark: int
    #: The tree this run holds or its private copy (local targets), released at close.
    _claim: TreeClaim | None = None
    _busy: bool = False

    def __init__(self) -> None:
        raise UsageError("create sessions with fsm_runner.setup(target)")

    @classmethod
    def _open(
        cls,
        resolved: ResolvedTarget,
        pipeline: PipelineSpec,
        *,
        run_id: str,
        pipeline_rel: str,
        bootstrap: BootstrapSpec | None,
        artifacts_dir: Path | None,
        unattended: str,
        require_metrics: bool,
        repairer: Repairer | None,
        env_overrides: dict[str, str],
        redactor: Redactor,
        console: bool | None,
        on_transition: TransitionHook | None,
        claim: TreeClaim | None = None,
        sandbox: str = "none",
    ) -> Session:
        self = object.__new__(cls)
        root = artifacts_dir or resolved.repo_root / pipeline.artifacts.out_dir
        # The repository's own artifacts dir must stay in it; one the caller names may be anywhere.
        run_dir = create_run_dir(root, run_id, inside=None if artifacts_dir else resolved.repo_root)
        self._lock = hold_lock(run_dir)
        self._claim = claim
        if claim is not None and claim.holder.run_dir != str(run_dir):
            claim.name_run_dir(run_dir)
        log, sink = run_logger(run_dir, run_id, console=console)
        self.ctx = RunContext(
            run_id=run_id,
            run_dir=run_dir,
            target=resolved,
            pipeline=pipeline,
            pipeline_rel=pipeline_rel,
            bootstrap=bootstrap,
            base_env=dict(os.environ),
            redactor=redactor,
            log=log,
            sink=sink,
            unattended=unattended,
            sandbox=sandbox,
            network=pipeline.security.network,
            require_metrics=require_metrics,
            contract_sha256=pipeline.sha256,
            contract_hashes=[pipeline.sha256],
            env_overrides=env_overrides,
            port=run_port(env_overrides),
            repairer=repairer,
        )
        self.ctx.refresh_redactor()
        self.driver = Driver(self.ctx, Journal.open(run_dir), phases(), on_transition=on_transition)
        return self._live()

    @classmethod
    def _resume(cls, ctx: RunContext, driver: Driver, claim: TreeClaim | None = None) -> Session:
        """A session around a restored context (replay); takes the run's lock before anything is touched."""
        self = object.__new__(cls)
        self.ctx = ctx
        self.driver = driver
        self._lock = hold_lock(ctx.run_dir)
        self._claim = claim
        return self._live()

    def _live(self) -> Session:
        self._closed = False
        self._mark = self.driver.journal.seq
        register_live(self)
        return self

    # -- properties --------------------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def run_dir(self) -> Path:
        return self.ctx.run_dir

    @property
    def repo_root(self) -> Path:
        return self.ctx.repo_root

    @property
    def state(self) -> str:
        """The machine's state: the next phase to run, or ``done`` / ``failed``."""
        return self.driver.state

    @property
    def busy(self) -> bool:
        """True while a call runs (a hook or a repair agent calling back into the library sees it)."""
        return self._busy

    # -- calls -------------------------------------------------------------------------------------------

    def rollout(
        self,
        llm: str | os.PathLike[str],
        *,
        mode: str = "smoke",
        require_samples: bool = False,
        repair_iters: int = 3,
        env_overrides: Mapping[str, str] | None = None,
        artifacts_dir: str | os.PathLike[str] | None = None,
    ) -> RolloutResult:
        """Run bootstrap, auth, tests, deploy, health and rollout (phases already done are skipped).

        ``llm`` is a local model directory or a remote model name; ``mode`` is ``smoke`` or ``full``.
        With ``require_samples`` the samples JSONL must exist and validate. ``artifacts_dir``, when given,
        receives a copy of rollout.json and the samples file.
        """
        self._configure(llm=_model(llm), mode=mode, repair_iters=repair_iters, env_overrides=env_overrides)
        self.ctx.require_samples = require_samples
        if self.state in ("evaluate", "benchmark", "verify", "teardown", topology.DONE, topology.FAILED):
            self._restart("rollout() called again")
        self._call(lambda: self.driver.run_until(lambda s: topology.is_past("rollout", s)))
        result = self._rollout_result()
        if artifacts_dir and result.ok:
            _copy_rollout(result, self.ctx.repo_root, Path(artifacts_dir))
        return result

    def evaluate(
        self,
        *,
        llm: str | os.PathLike[str] | None = None,
        mode: str | None = None,
        repair_iters: int = 3,
        env_overrides: Mapping[str, str] | None = None,
    ) -> EvaluationResult:
        """Run evaluate, benchmark, verify and teardown (deploying first if nothing is deployed).

        The evaluation scores this round's rollout and nothing else. Right after ``rollout()`` it continues
        that round. Otherwise, when the pipeline has a rollout, the round rolls out first, with ``llm``
        (default: the last round's model; with none known this is a :class:`UsageError`). A pipeline without
        a rollout just evaluates. ``mode`` defaults to the last call's. ``repair_iters`` only matters when a
        repair agent is configured.
        """
        ctx = self.ctx
        given = _model(llm) if llm is not None else None
        self._check_args(mode or ctx.mode, repair_iters, env_overrides)
        rolled_out = ctx.completed.get("rollout") == ctx.round and self.state not in topology.FINAL_STATES
        new_round = self.state in topology.FINAL_STATES or (rolled_out and given not in (None, ctx.llm))
        model = given if given is not None else ctx.llm
        if self._has_rollout() and (new_round or not rolled_out) and not model:
            raise UsageError(
                "evaluate() has no model to roll out: pass evaluate(llm=...) or call rollout(llm=...) first "
                "(the evaluation only scores samples of this session's own rollouts)"
            )
        self._configure(
            llm=model, mode=mode or ctx.mode, repair_iters=repair_iters, env_overrides=env_overrides
        )
        if new_round:
            self._restart("evaluate() called again" if given is None else f"evaluate(llm={given!r})")
        self._call(lambda: self.driver.run_until(lambda s: False))
        return self._evaluation_result()

    def run(
        self,
        llm: str | None = None,
        *,
        mode: str = "smoke",
        require_samples: bool = False,
        repair_iters: int = 3,
    ) -> EvaluationResult:
        """The whole pipeline in one call (what ``fsm-runner run`` does); the result lists every phase."""
        mark = self.driver.journal.seq
        if llm is not None or self.ctx.pipeline.rollout is not None:
            rolled = self.rollout(
                llm or "", mode=mode, require_samples=require_samples, repair_iters=repair_iters
            )
            if not rolled.ok:
                self._mark = mark
                return self._evaluation_result()
        self.evaluate(mode=mode, repair_iters=repair_iters)
        self._mark = mark
        return self._evaluation_result()

    def close(self) -> None:
        """Tear down what is deployed (per policy) and release the run. Safe to call twice, from any thread
        (a close waits for a call running in another thread to end)."""
        with session_use(self, new_work=False):
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        try:
            if self.ctx.deployed or self.ctx.deploy_pgids:
                if self.state in topology.FINAL_STATES:
                    self._call(self._cleanup, new_work=False)
                else:
                    self._call(self._wind_down, new_work=False)
        finally:
            self._closed = True
            unregister_live(self)
            if self.ctx.bwrap is not None:
                self.ctx.bwrap.close()
            if self.ctx.status == "running":
                self.ctx.status = "closed"
                self.driver.save()
            self._drop_checkout()
            if self.ctx.sink is not None:
                self.ctx.sink.close()
            release_lock(self._lock)
            if self._claim is not None:
                self._claim.release()

    def _drop_checkout(self) -> None:
        """A git target's own checkout goes once nothing can continue the run; a failed run keeps it."""
        if self.ctx.target.clone is None or self.ctx.status not in ("ok", "closed"):
            return
        try:
            remove_checkout(self.ctx.target, run_id=self.ctx.run_id)
        except (FsmRunnerError, OSError) as exc:  # the next setup() of the URL prunes it
            self.ctx.log.warning("checkout.kept", checkout=str(self.ctx.repo_root), error=str(exc))

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------------

    def _check_args(self, mode: str, repair_iters: int, env_overrides: Mapping[str, str] | None) -> None:
        """Refuse a call's arguments before anything changes."""
        if self._closed:
            raise UsageError("this session is closed; call fsm_runner.setup() again")
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(repair_iters, bool) or not isinstance(repair_iters, int) or repair_iters < 0:
            raise UsageError(f"repair_iters must be a whole number >= 0, got {repair_iters!r}")
        env_map(env_overrides)

    def _has_rollout(self) -> bool:
        rollout = self.ctx.pipeline.rollout
        return rollout is not None and bool(rollout.run_cmds)

    def _configure(
        self, *, llm: str | None, mode: str, repair_iters: int, env_overrides: Mapping[str, str] | None
    ) -> None:
        self._check_args(mode, repair_iters, env_overrides)
        env_overrides = env_map(env_overrides)
        self._mark = self.driver.journal.seq
        ctx = self.ctx
        ctx.llm = llm or None
        ctx.mode = mode
        ctx.repair_iters = repair_iters
        ctx.repairs_used = 0
        if env_overrides:
            check_overrides({**os.environ, **ctx.env_overrides, **env_overrides})
            ctx.port = pinned_port(env_overrides) or ctx.port
            ctx.env_overrides.update(env_overrides)
            ctx.refresh_redactor()
        ctx.status = "running"

    def _restart(self, reason: str) -> None:
        """A new round: its rollout, evaluation and outputs are its own (``round_N/``, ``rounds``)."""
        self.ctx.round += 1
        self.ctx.redeploys = 0
        self.ctx.failed_phase = None
        self.ctx.last_error = None
        self.driver.fire(topology.RESTART, reason=reason)

    def advance(
        self,
        through: str,
        *,
        llm: str | None = None,
        mode: str = "smoke",
        require_samples: bool = False,
        repair_iters: int = 3,
    ) -> EvaluationResult:
        """Run the phases up to and including ``through`` (``fsm-runner run --until``), then stop there.

        ``through`` is a phase or the pipeline.yml section it runs (``evaluation`` for ``evaluate``). ``ok``
        says whether every phase up to ``through`` passed; ``close()`` tears down what is deployed.
        """
        phase = phase_named(through) if isinstance(through, str) else None
        if phase is None:
            aliases = ", ".join(f"{k} ({v})" for k, v in section_aliases().items())
            raise UsageError(
                f"unknown phase {through!r}; phases are {', '.join(topology.PHASES)}; section names stand "
                f"for their phase: {aliases}"
            )
        through = phase
        self._configure(
            llm=_model(llm) if llm is not None else None,
            mode=mode,
            repair_iters=repair_iters,
            env_overrides=None,
        )
        self.ctx.require_samples = require_samples
        self._call(lambda: self.driver.run_until(lambda s: topology.is_past(through, s)))
        return evaluation_result(
            self.ctx, self.state, self.driver.journal.path, since=self._mark, stopped_after=through
        )

    def _wind_down(self) -> None:
        self.ctx.stopping = True
        if self.state != "teardown":
            self.driver.fire(topology.WIND_DOWN, reason=closing_reason())
        self.driver.run_until(lambda s: False)

    def _call(self, body: Callable[[], None], *, new_work: bool = True) -> None:
        """Run ``body`` with teardown guaranteed on failure, exception and signals, in whichever thread."""
        with session_use(self, new_work=new_work):
            self._busy = True
            try:
                with sigterm_raises():
                    body()
                    if self.state == topology.FAILED:
                        self._cleanup()
            except BaseException as exc:
                self._interrupted(exc)
                raise
            finally:
                self._busy = False

    def _interrupted(self, exc: BaseException) -> None:
        ctx = self.ctx
        stop = take_stop()  # a shutdown asked this thread to stop: that is why the call ended
        if stop is not None and not isinstance(exc, KeyboardInterrupt):
            exc = stop
        kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else "internal"
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted):
            reason = "received SIGINT"
        try:
            if self.state not in topology.FINAL_STATES:
                ctx.status = "interrupted" if kind == "interrupted" else "failed"
                if self.state in topology.PHASES:
                    ctx.failed_phase = self.state
                ctx.last_error = ErrorInfo(kind, reason, self.state)
                self.driver.fire(topology.INTERRUPT, reason=reason)
        except BaseException:  # journaling failed (disk, a second signal): teardown must still happen
            ctx.log.exception("interrupt.record_failed")
        try:
            with sigterm_raises():
                self._cleanup()
        except BaseException:  # a second signal during cleanup must not hide the first
            ctx.log.exception("cleanup.failed")

    def _end_processes(self) -> None:
        """A shutdown's last resort while this session is still busy in another thread: end what deploy
        started, and leave the session's state to the thread that owns it."""
        kill_deployment_groups(self.ctx)

    def _cleanup(self) -> None:
        """Teardown for a failed run, recorded as the ``cleanup`` self-loop of ``failed``."""
        ctx = self.ctx
        if not (ctx.deployed or ctx.deploy_pgids):
            return
        status = ctx.status
        started = time.monotonic()
        try:
            with self.driver.watched("teardown"):
                outcome = self.driver.phases["teardown"].run(ctx)
        except KeyboardInterrupt as exc:  # a second Ctrl-C or SIGTERM: say what was left undone, then go on
            ctx.status = status
            self._teardown_cut_short(exc, time.monotonic() - started)
            raise
        ctx.status = status
        if self.state == topology.FAILED:
            self.driver.fire(topology.CLEANUP, outcome, reason=f"teardown after the run {status}")
        else:
            ctx.save()

    def _teardown_cut_short(self, exc: KeyboardInterrupt, duration: float) -> None:
        """Journal a cleanup teardown a signal ended before its commands finished (the ``cleanup`` record
        carries an ``interrupted`` error); what those commands were to stop may still run."""
        ctx = self.ctx
        received = "SIGINT" if not isinstance(exc, Interrupted) else signal.Signals(exc.signum).name
        count = ctx.runs_of_phase.get("teardown", 0)
        evidence = ctx.run_dir / stage_dir_name("teardown", count) if count else ctx.run_dir
        left = (
            f" (process groups {', '.join(map(str, ctx.deploy_pgids))} were not ended)"
            if ctx.deploy_pgids
            else ""
        )
        message = (
            f"teardown cut short by {received}: deploy.teardown_cmds did not finish, so what they stop "
            f"outside the run's own processes (containers, remote resources, files) may still run{left}"
        )
        error = ErrorInfo("interrupted", message, "teardown", ctx.relpath(evidence))
        commands = recorded_commands(ctx, evidence) if count else ()
        outcome = Outcome(
            phase="teardown", status=FAILED, duration_s=round(duration, 6), commands=commands, error=error
        )
        try:
            if self.state == topology.FAILED:
                self.driver.fire(topology.CLEANUP, outcome, reason=message)
            else:
                ctx.log.bind(phase="teardown").warning("teardown.cut_short", error=message)
        except BaseException:  # yet another signal, or the disk: the teardown's own evidence stays
            ctx.log.exception("teardown.cut_short_unrecorded")

    def _rollout_result(self) -> RolloutResult:
        return rollout_result(self.ctx, self.state, self.driver.journal.path, since=self._mark)

    def _evaluation_result(self) -> EvaluationResult:
        return evaluation_result(self.ctx, self.state, self.driver.journal.path, since=self._mark)


def _model(llm: object) -> str:
    """The model under test as the stages see it: a remote model name or a local checkpoint directory."""
    name = os.fspath(llm) if isinstance(llm, os.PathLike) else llm
    if isinstance(name, str):
        return name
    raise UsageError(f"llm must be a model name or a directory path, got {llm!r}")


def _copy_rollout(result: RolloutResult, repo: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    rollout_json = repo / ROLLOUT_REL
    if rollout_json.is_file():
        shutil.copy2(rollout_json, dest / rollout_json.name)
    if result.samples_path and result.samples_path.is_file():
        shutil.copy2(result.samples_path, dest / result.samples_path.name)
