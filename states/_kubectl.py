"""Kubernetes evidence for deploy-based targets: a dump of the namespace taken before teardown."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

from fsm_runner.contract.pipeline import KubectlDumpSpec
from fsm_runner.engine.context import RunContext
from fsm_runner.evidence.layout import KUBECTL_DIR, attempt_name
from fsm_runner.execution.commands import run_command

#: Seconds each kubectl command may take (capped by the run's command limit).
DUMP_TIMEOUT = 60


def dump_commands(spec: KubectlDumpSpec) -> list[str]:
    scope = ""
    if spec.namespace:
        scope += f" -n {shlex.quote(spec.namespace)}"
    if spec.label_selector:
        scope += f" -l {shlex.quote(spec.label_selector)}"
    cmds = [f"kubectl get all{scope} -o wide", f"kubectl get events{scope}"]
    if spec.include_logs:
        cmds.append(f"kubectl logs{scope} --all-containers=true --tail=500 --prefix=true")
    return cmds


def kubectl_dump(ctx: RunContext, spec: KubectlDumpSpec, stage_dir: Path, stage: str) -> dict[str, Any]:
    """Best effort: a missing kubectl or a failing command is recorded, never fatal.

    Each command runs whatever the ones before it did (events and logs matter most when listing the
    resources failed), so this is not a stage that stops at its first failure.
    """
    env = ctx.stage_env(stage, stage_dir)
    if shutil.which("kubectl", path=env.get("PATH")) is None:
        return {"kubectl_dump": "skipped: kubectl is not on PATH"}
    out_dir = stage_dir / KUBECTL_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    env = ctx.stage_env(stage, out_dir)
    cmds = dump_commands(spec)
    failures: list[str] = []
    for index, cmd in enumerate(cmds, start=1):
        ctx.command_started(stage, cmd, index, 1, total=len(cmds), out_dir=out_dir)
        result = run_command(
            cmd,
            cwd=ctx.workdir(None),
            env=env,
            out_dir=out_dir,
            name=attempt_name(index, 1),
            timeout=ctx.cmd_timeout(DUMP_TIMEOUT),
            policy=ctx.policy(),
            redactor=ctx.redactor,
            index=index,
            sandbox=ctx.command_sandbox(),
            max_output_bytes=ctx.pipeline.artifacts.max_output_bytes,
        )
        ctx.command_ended(stage, result)
        if not result.ok:
            what = f"command {index}/{len(cmds)} `{ctx.redactor.mask(cmd)}` {result.outcome()}"
            failures.append(f"{what}; see {result.output_path}")
    return {
        "kubectl_dump": f"incomplete: {'; '.join(failures)}" if failures else "ok",
        "kubectl_dir": ctx.relpath(out_dir),
    }
