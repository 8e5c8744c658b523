"""Kubernetes evidence for deploy-based targets: a dump of the namespace taken before teardown."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

from fsm_runner.contract.pipeline import KubectlDumpSpec
from fsm_runner.engine.context import RunContext
from fsm_runner.evidence.layout import KUBECTL_DIR


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
    """Best effort: a missing kubectl or a failing command is recorded, never fatal."""
    env_path = ctx.stage_env(stage, stage_dir).get("PATH")
    if shutil.which("kubectl", path=env_path) is None:
        return {"kubectl_dump": "skipped: kubectl is not on PATH"}
    out_dir = stage_dir / KUBECTL_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    run = ctx.run_stage(stage, dump_commands(spec), out_dir, timeout_seconds=60)
    return {
        "kubectl_dump": "ok" if run.ok else f"incomplete: {run.error}",
        "kubectl_dir": ctx.relpath(out_dir),
    }
