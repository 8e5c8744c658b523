"""The repo-owned contract: pipeline.yml, .aider_fsm/bootstrap.yml, .aider_fsm/actions.yml and stage outputs.

Loaders raise :class:`~fsm_runner.errors.ContractError` naming file, line and key; output checks return
results listing every problem.
"""

from __future__ import annotations

from fsm_runner.contract.actions import Action, ActionsSpec, load_actions
from fsm_runner.contract.bootstrap import BootstrapSpec, load_bootstrap
from fsm_runner.contract.envexpand import expand_env
from fsm_runner.contract.fields import METRIC_TYPES, RequiredKey
from fsm_runner.contract.outputs import MetricsCheck, RolloutCheck, check_metrics, check_rollout
from fsm_runner.contract.pipeline import (
    ArtifactsSpec,
    AuthSpec,
    DeploySpec,
    EvaluationSpec,
    KubectlDumpSpec,
    PipelineSpec,
    RolloutSpec,
    SecuritySpec,
    StageCommon,
    TestsSpec,
    load_pipeline,
)
from fsm_runner.contract.schema import actions_json_schema, bootstrap_json_schema, pipeline_json_schema
from fsm_runner.contract.validate import validate_repo
from fsm_runner.evidence.layout import ACTIONS_REL, BOOTSTRAP_REL

__all__ = [
    "ACTIONS_REL",
    "BOOTSTRAP_REL",
    "Action",
    "ActionsSpec",
    "ArtifactsSpec",
    "AuthSpec",
    "BootstrapSpec",
    "DeploySpec",
    "EvaluationSpec",
    "KubectlDumpSpec",
    "METRIC_TYPES",
    "MetricsCheck",
    "PipelineSpec",
    "RequiredKey",
    "RolloutCheck",
    "RolloutSpec",
    "SecuritySpec",
    "StageCommon",
    "TestsSpec",
    "actions_json_schema",
    "bootstrap_json_schema",
    "check_metrics",
    "check_rollout",
    "expand_env",
    "load_actions",
    "load_bootstrap",
    "load_pipeline",
    "pipeline_json_schema",
    "validate_repo",
]
