"""The run context: everything a phase may read or record, and the helpers phases use to run commands.

Phases (``states/``) see only this object; the session and the machine stay out of their reach.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field

from fsm_runner.contract.bootstrap import BootstrapSpec
from fsm_runner.contract.pipeline import PipelineSpec
from fsm_runner.evidence import write_json_atomic
from fsm_runner.execution import CommandResult, StageRun, run_commands
from fsm_runner.outcome import ErrorInfo
from fsm_runner.secrets import Redactor
from fsm_runner.security import SecurityPolicy
from fsm_runner.stage_env import MAX_CMD_OVERRIDE, MAX_TOTAL_OVERRIDE, build_stage_env
from fsm_runner.targets import ResolvedTarget

DEFAULT_CMD_SECONDS = 3600.0
RUN_JSON = "run.json"
RUNTIME_ENV_REL = ".aider_fsm/runtime_env.json"


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@define
class RunContext:
    """Mutable state of one run; ``to_json`` is what run.json holds and replay restores."""

    run_id: str
    run_dir: Path
    target: ResolvedTarget
    pipeline: PipelineSpec
    pipeline_rel: str
    bootstrap: BootstrapSpec | None
    base_env: dict[str, str]
    redactor: Redactor
    log: Any
    sink: Any = None
    unattended: str = "strict"
    require_metrics: bool = True
    contract_sha256: str = ""
    llm: str | None = None
    mode: str = "smoke"
    require_samples: bool = False
    env_overrides: dict[str, str] = field(factory=dict)
    repair_iters: int = 0
    repairs_used: int = 0
    agent: Any = None
    round: int = 1
    phase: str = "clone"
    completed: dict[str, int] = field(factory=dict)
    outputs: dict[str, dict[str, Any]] = field(factory=dict)
    runs_of_phase: dict[str, int] = field(factory=dict)
    bootstrap_env: dict[str, str] = field(factory=dict)
    deploy_pgids: list[int] = field(factory=list)
    deploy_leaders: dict[str, int | None] = field(factory=dict)
    deployed_llm: str | None = None
    redeploys: int = 0
    rollout_requested: bool = False
    skip_rollout_round: int = 0
    deployed: bool = False
    deployed_at: float | None = None
    health_passed_at: float | None = None
    failed_phase: str | None = None
    last_error: ErrorInfo | None = None
    redrive_count: int = 0
    contract_hashes: list[str] = field(factory=list)
    status: str = "running"
    stopping: bool = False

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
        return self._fresh_dir(phase, lambda n: phase if n == 1 else f"{phase}.{n}")

    def new_repair_dir(self) -> Path:
        return self._fresh_dir("repair", lambda n: f"repair_{n:02d}")

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
        """Secrets may come from the caller's env, the overrides, bootstrap.yml or any stage's env."""
        env = {**self.base_env, **self.env_overrides, **self.bootstrap_env}
        if self.bootstrap is not None:
            env.update({f"bootstrap.{k}": v for k, v in self.bootstrap.env.items()})
        for name in ("tests", "auth", "deploy", "rollout", "evaluation", "benchmark"):
            section = getattr(self.pipeline, name)
            if section is not None:
                env.update({f"{name}.{k}": v for k, v in section.env.items()})
        self.redactor = Redactor.from_env(env)
        if self.sink is not None:
            self.sink.redactor = self.redactor

    def save(self) -> None:
        self.write_json(self.run_dir / RUN_JSON, self.to_json())

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
        )

    def workdir(self, rel: str | None) -> Path:
        return (self.repo_root / rel).resolve() if rel else self.repo_root

    def command_started(self, stage: str, cmd: str, index: int, attempt: int) -> None:
        self.log.bind(phase=stage).info(
            "command.start", cmd=self.redactor.mask(cmd), index=index, attempt=attempt
        )

    def command_ended(self, stage: str, result: CommandResult) -> None:
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
    ) -> StageRun:
        """Run a stage's commands with the run's policy, env, budgets and events."""
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
            on_start=lambda cmd, index, attempt: self.command_started(stage, cmd, index, attempt),
            on_end=lambda result: self.command_ended(stage, result),
        )

    # -- bookkeeping -------------------------------------------------------------------------------------

    def contract_now(self) -> str | None:
        return file_sha256(self.pipeline_path)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "phase": self.phase,
            "target": self.target.to_json(),
            "pipeline_rel": self.pipeline_rel,
            "contract_sha256": self.contract_sha256,
            "contract_hashes": list(self.contract_hashes),
            "unattended": self.unattended,
            "require_metrics": self.require_metrics,
            "llm": self.llm,
            "mode": self.mode,
            "require_samples": self.require_samples,
            "env_overrides": self.redactor.redact_env(self.env_overrides),
            "repair_iters": self.repair_iters,
            "repairs_used": self.repairs_used,
            "round": self.round,
            "completed": dict(self.completed),
            "outputs": self.outputs,
            "runs_of_phase": dict(self.runs_of_phase),
            "deploy_pgids": list(self.deploy_pgids),
            "deploy_leaders": dict(self.deploy_leaders),
            "deployed_llm": self.deployed_llm,
            "rollout_requested": self.rollout_requested,
            "skip_rollout_round": self.skip_rollout_round,
            "deployed": self.deployed,
            "failed_phase": self.failed_phase,
            "last_error": self.last_error.to_json() if self.last_error else None,
            "redrive_count": self.redrive_count,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
