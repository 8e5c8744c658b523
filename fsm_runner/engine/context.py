"""The run context: everything a phase may read or record, and the helpers phases use to run commands."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from attrs import define, field

from fsm_runner.contract.bootstrap import BootstrapSpec
from fsm_runner.contract.pipeline import PipelineSpec
from fsm_runner.engine.progress import RunningCommand
from fsm_runner.evidence.atomic import copy_file_atomic, write_json_atomic
from fsm_runner.evidence.events import RunSink
from fsm_runner.evidence.layout import (
    BOOTSTRAP_REL,
    RUN_JSON,
    RUNTIME_ENV_REL,
    STDERR_SUFFIX,
    STDOUT_SUFFIX,
    attempt_name,
    repair_dir_name,
    round_file,
    stage_dir_name,
)
from fsm_runner.evidence.records import RoundRecord, RunState, target_secrets
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.commands import CommandResult, StageRun, run_commands
from fsm_runner.execution.policy import SecurityPolicy
from fsm_runner.execution.sandbox import CommandSandbox, Sandbox
from fsm_runner.execution.stage_env import MAX_CMD_OVERRIDE, MAX_TOTAL_OVERRIDE, build_stage_env
from fsm_runner.typing import EventLogger

if TYPE_CHECKING:
    from fsm_runner.engine.phase import Repairer

DEFAULT_CMD_SECONDS = 3600.0
#: The phases whose outputs a round keeps.
_ROUND_OUTPUTS = ("rollout", "evaluate", "benchmark")


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@define(kw_only=True)
class RunContext(RunState):
    """A live run: the persisted :class:`RunState` (run.json) plus what only the running process has.

    Phases see only this object; the session and the machine stay out of their reach.
    """

    run_dir: Path
    pipeline: PipelineSpec
    bootstrap: BootstrapSpec | None = None
    base_env: dict[str, str] = field(factory=dict)
    redactor: Redactor = field(factory=Redactor)
    log: EventLogger
    sink: RunSink | None = None
    repairer: Repairer | None = None
    bootstrap_env: dict[str, str] = field(factory=dict)
    redeploys: int = 0
    deployed_at: float | None = None
    health_passed_at: float | None = None
    stopping: bool = False
    #: What dead runs of the tree left running and setup ended (``Leftovers.to_json()``); clone records it.
    ended_leftovers: list[dict[str, Any]] = field(factory=list)
    #: The bwrap sandbox of a run with ``sandbox == "bwrap"``, made at its first command (see bwrap_sandbox).
    bwrap: Sandbox | None = None
    #: The contract command running now (None between commands): what a heartbeat reports.
    running: RunningCommand | None = None

    @classmethod
    def from_state(cls, state: RunState, **live: Any) -> RunContext:
        """A live context around a state read back from run.json (replay)."""
        saved = {a.name: getattr(state, a.name) for a in attrs.fields(RunState)}
        return cls(**saved, **live)

    # -- paths -------------------------------------------------------------------------------------------

    @property
    def repo_root(self) -> Path:
        return self.target.repo_root

    @property
    def pipeline_path(self) -> Path:
        return self.repo_root / self.pipeline_rel

    @property
    def runtime_env_path(self) -> Path:
        return self.repo_root / RUNTIME_ENV_REL

    def new_stage_dir(self, phase: str) -> Path:
        """A fresh evidence dir per execution of a phase: ``<phase>``, then ``<phase>.2``, ``<phase>.3``."""
        return self._fresh_dir(phase, lambda n: stage_dir_name(phase, n))

    def new_repair_dir(self) -> Path:
        return self._fresh_dir("repair", repair_dir_name)

    def _fresh_dir(self, key: str, name: Callable[[int], str]) -> Path:
        # The counter lives in run.json, saved per transition; after a crash the dir may exist already.
        count = self.runs_of_phase.get(key, 0) + 1
        while (self.run_dir / name(count)).exists():
            count += 1
        self.runs_of_phase[key] = count
        path = self.run_dir / name(count)
        path.mkdir(parents=True)
        return path

    def refresh_redactor(self) -> None:
        """Secrets may come from the caller's env, the overrides, bootstrap.yml, any stage's env or the
        target's URL (a token in its user-info)."""
        env = {**self.base_env, **self.env_overrides, **self.bootstrap_env}
        if self.bootstrap is not None:
            env.update({f"bootstrap.{k}": v for k, v in self.bootstrap.env.items()})
        for name in ("tests", "auth", "deploy", "rollout", "evaluation", "benchmark"):
            section = getattr(self.pipeline, name)
            if section is not None:
                env.update({f"{name}.{k}": v for k, v in section.env.items()})
        self.redactor = Redactor.from_env(env, extra=target_secrets(self.target))
        if self.sink is not None:
            self.sink.redactor = self.redactor

    def save(self) -> None:
        self.sync_round()
        write_json_atomic(self.run_dir / RUN_JSON, self.to_json())

    def write_json(self, path: Path, data: Any) -> None:
        """Every JSON the runner writes passes through the redactor."""
        write_json_atomic(path, self.redactor.scrub(data))

    def relpath(self, path: Path | str) -> str:
        """Evidence paths relative to the run dir read better in messages and journals."""
        try:
            return str(Path(path).resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            return str(path)

    # -- commands ----------------------------------------------------------------------------------------

    def policy(self) -> SecurityPolicy:
        sec = self.pipeline.security
        return SecurityPolicy(
            mode=sec.mode, allowlist=sec.allowlist, denylist=sec.denylist, strict=self.unattended == "strict"
        )

    def _override_seconds(self, name: str) -> float | None:
        raw = self.env_overrides.get(name) or self.base_env.get(name)
        try:
            return float(raw) if raw else None
        except ValueError:
            return None

    def cmd_timeout(self, stage_timeout: float | None) -> float:
        override = self._override_seconds(MAX_CMD_OVERRIDE)
        limit = override or self.pipeline.security.max_cmd_seconds or DEFAULT_CMD_SECONDS
        return min(stage_timeout, limit) if stage_timeout else limit

    def total_budget(self) -> float | None:
        return self._override_seconds(MAX_TOTAL_OVERRIDE) or self.pipeline.security.max_total_seconds

    def stage_env(self, stage: str, stage_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        return build_stage_env(
            stage=stage,
            base_env=self.base_env,
            bootstrap_env=self.bootstrap_env,
            stage_env=extra or {},
            run_id=self.run_id,
            stage_dir=stage_dir,
            repo_root=self.repo_root,
            runtime_env_path=self.runtime_env_path,
            unattended=self.unattended,
            llm=self.llm,
            mode=self.mode,
            overrides=self.env_overrides,
            port=self.port,
        )

    def bwrap_sandbox(self) -> Sandbox | None:
        """The sandbox the run's commands and its command repair agent run in (None: no sandbox).

        Writable: the working tree and, of the run dir, only the evidence dir of the command at hand; the
        runs kept in the tree (this one's included) are read-only, and so are the pipeline file and
        bootstrap.yml, which only a person changes.
        """
        if self.sandbox != "bwrap":
            return None
        if self.bwrap is None:
            root, run_dir = self.repo_root.resolve(), self.run_dir.resolve()
            runs = run_dir.parent if run_dir.parent != root else run_dir
            self.bwrap = Sandbox(
                network=self.network,
                writable=(root,),
                read_only=(self.pipeline_path, root / BOOTSTRAP_REL),
                sealed=(runs,) if runs.is_relative_to(root) else (),
            )
        return self.bwrap

    def command_sandbox(self, *, service: bool = False) -> CommandSandbox | None:
        """The sandbox a stage's commands run in; ``service``: deploy and teardown, which share the deployed
        services' namespace (what they start lives until teardown, and they see its pids)."""
        sandbox = self.bwrap_sandbox()
        if sandbox is None:
            return None
        return sandbox.services() if service else sandbox

    def end_sandbox_services(self) -> bool:
        """End the sandbox's service namespace (what deploy left running in it); True when one was running."""
        ended = self.bwrap.end_services() if self.bwrap is not None else False
        if ended:
            self.log.info("sandbox.services_ended")
        return ended

    def workdir(self, rel: str | None) -> Path:
        return (self.repo_root / rel).resolve() if rel else self.repo_root

    def command_started(
        self, stage: str, cmd: str, index: int, attempt: int, *, total: int = 0, out_dir: Path | None = None
    ) -> None:
        """Log the start; with ``out_dir`` (the stage's evidence dir) also note it as the running command."""
        self.log.bind(phase=stage).info(
            "command.start", cmd=self.redactor.mask(cmd), index=index, attempt=attempt
        )
        if out_dir is not None:
            name = attempt_name(index, attempt)
            self.running = RunningCommand(
                index, total, out_dir / f"{name}{STDOUT_SUFFIX}", out_dir / f"{name}{STDERR_SUFFIX}"
            )

    def command_ended(self, stage: str, result: CommandResult) -> None:
        self.running = None
        self.log.bind(phase=stage).info(
            "command.end",
            index=result.index,
            attempt=result.attempt,
            exit_code=result.exit_code,
            duration_s=round(result.duration_s, 4),
            timed_out=result.timed_out,
            blocked=result.blocked,
        )
        if result.pgid is not None and result.pgid not in self.deploy_pgids:
            # Recorded at once: a runner killed later in this stage must not orphan the service.
            self.deploy_pgids.append(result.pgid)
            self.deploy_leaders[str(result.pgid)] = result.leader_start
            self.save()

    def run_stage(
        self,
        stage: str,
        cmds: Sequence[str],
        stage_dir: Path,
        *,
        timeout_seconds: float | None = None,
        retries: int = 0,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        interactive: bool = False,
        keep_background: bool = False,
        service: bool = False,
    ) -> StageRun:
        """Run a stage's commands with the run's policy, env, budgets, sandbox and events.

        ``service`` (implied by ``keep_background``): in a sandbox, the commands share the deployed services'
        namespace (deploy and teardown), so what they start lives until teardown and they see its pids.
        """
        return run_commands(
            list(cmds),
            stage=stage,
            cwd=self.workdir(workdir),
            env=self.stage_env(stage, stage_dir, env),
            out_dir=stage_dir,
            timeout=self.cmd_timeout(timeout_seconds),
            retries=retries,
            total_budget=self.total_budget(),
            policy=self.policy(),
            redactor=self.redactor,
            interactive=interactive,
            keep_background=keep_background,
            on_start=lambda cmd, index, attempt: self.command_started(
                stage, cmd, index, attempt, total=len(cmds), out_dir=stage_dir
            ),
            on_end=lambda result: self.command_ended(stage, result),
            sandbox=self.command_sandbox(service=service or keep_background),
            max_output_bytes=self.pipeline.artifacts.max_output_bytes,
        )

    # -- rounds ------------------------------------------------------------------------------------------

    def keep_in_round(self, name: str, *, source: Path | None = None, data: Any = None) -> str:
        """Keep an output of the current round as ``round_N/<name>``: a copy of ``source``, or ``data`` as
        JSON, secrets masked. Returns the path relative to the run dir, which outlives the checkout."""
        rel = round_file(self.round, name)
        path = self.run_dir / rel
        path.parent.mkdir(exist_ok=True)
        if source is not None:
            copy_file_atomic(source, path)
            self.redactor.mask_file(path)
        else:
            self.write_json(path, data)
        return rel

    def round_ran(self, phase: str) -> None:
        """Note that ``phase`` was executed (not skipped) in the current round."""
        record = self._current_round()
        if phase not in record.phases:
            self.rounds[-1] = attrs.evolve(record, phases=(*record.phases, phase))

    def _current_round(self) -> RoundRecord:
        if self.rounds and self.rounds[-1].round == self.round:
            return self.rounds[-1]
        now = _utc_now()
        if self.rounds and self.rounds[-1].status == "running":
            # Left before it finished: rollout() called again before evaluate(), say.
            self.rounds[-1] = attrs.evolve(self.rounds[-1], status="closed", finished=now)
        record = RoundRecord(round=self.round, started=now, llm=self.llm, mode=self.mode)
        self.rounds.append(record)
        return record

    def sync_round(self) -> None:
        """Bring the current round's record in line with the run; run.json is never written without it.

        Outputs count only when their phase passed in this round, so a round never shows another round's
        samples or metrics. A replay of a failed round reopens it.
        """
        record = self._current_round()
        passed = {p: self.outputs.get(p, {}) for p in _ROUND_OUTPUTS if self.completed.get(p) == self.round}
        metrics = passed.get("evaluate", {}).get("metrics")
        benchmark = passed.get("benchmark", {}).get("metrics")
        rollout = passed.get("rollout", {})
        changes: dict[str, Any] = {
            "metrics": metrics if isinstance(metrics, dict) else None,
            "score": metrics.get("score") if isinstance(metrics, dict) else None,
            "benchmark": benchmark if isinstance(benchmark, dict) else None,
            "samples": rollout.get("samples_copy"),
            "sample_count": rollout.get("sample_count") or 0,
        }
        if self.status == "running":
            changes.update(llm=self.llm, mode=self.mode, status="running", finished=None)
        elif record.status == "running":
            changes.update(status=self.status, finished=_utc_now())
        self.rounds[-1] = attrs.evolve(record, **changes)

    # -- bookkeeping -------------------------------------------------------------------------------------

    def contract_now(self) -> str | None:
        return file_sha256(self.pipeline_path)

    def to_json(self) -> dict[str, Any]:
        """run.json: the persisted state with secrets masked, stamped with the time of the write."""
        data = self.state_json(self.redactor)
        data["updated"] = _utc_now()
        return data
