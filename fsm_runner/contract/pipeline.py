"""Models and loader for ``pipeline.yml`` version 1, the human-owned contract of a target repository."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

from attrs import define, evolve, field, validators

from fsm_runner.contract.fields import (
    DEFAULT_MAX_OUTPUT_BYTES,
    MAX_RETRIES,
    MAX_SECONDS,
    MIN_OUTPUT_BYTES,
    RequiredKey,
    meta,
    to_env,
    to_required_keys,
    to_str_tuple,
)
from fsm_runner.contract.reader import parse_model
from fsm_runner.contract.yamlload import RawFile, compose, line_of, present, read_file
from fsm_runner.errors import ContractError
from fsm_runner.evidence.layout import DEFAULT_OUT_DIR, PIPELINE_REL, contract_rel_problem
from fsm_runner.evidence.records import NETWORKS, SANDBOXES

SECURITY_MODES = ("safe", "system")
TEARDOWN_POLICIES = ("always", "on_success", "on_failure", "never")
_seconds = validators.optional(
    validators.and_(validators.instance_of((int, float)), validators.gt(0), validators.le(MAX_SECONDS))
)


def _cmds(doc: str) -> Any:
    return field(factory=tuple, converter=to_str_tuple, metadata=meta("cmds", doc))


@define(frozen=True)
class SecuritySpec:
    """Command policy for every stage; regexes are guardrails checked before a command runs."""

    #: `network: none` is a namespace of the sandbox, so it needs `sandbox: bwrap` (see __attrs_post_init__).
    SCHEMA_RULES: ClassVar[tuple[dict[str, Any], ...]] = (
        {
            "if": {"required": ["network"], "properties": {"network": {"const": "none"}}},
            "then": {"required": ["sandbox"], "properties": {"sandbox": {"const": "bwrap"}}},
        },
    )

    mode: str = field(
        default="safe",
        validator=validators.in_(SECURITY_MODES),
        metadata=meta("enum", "`safe` adds the default denylist; `system` drops it.", choices=SECURITY_MODES),
    )
    allowlist: tuple[str, ...] = field(
        factory=tuple,
        converter=to_str_tuple,
        metadata=meta("regexes", "Regexes; when non-empty every command must match one."),
    )
    denylist: tuple[str, ...] = field(
        factory=tuple, converter=to_str_tuple, metadata=meta("regexes", "Regexes of commands always blocked.")
    )
    max_cmd_seconds: float | None = field(
        default=None, validator=_seconds, metadata=meta("seconds", "Time limit of any single command.")
    )
    max_total_seconds: float | None = field(
        default=None, validator=_seconds, metadata=meta("seconds", "Time budget of one stage.")
    )
    sandbox: str = field(
        default="none",
        validator=validators.in_(SANDBOXES),
        metadata=meta(
            "enum",
            "`bwrap` runs every command and the repair agent under bubblewrap: read-only file system except "
            "the repo, the run dir and a private /tmp; the contract files read-only; nothing outlives a "
            "command.",
            choices=SANDBOXES,
        ),
    )
    network: str = field(
        default="host",
        validator=validators.in_(NETWORKS),
        metadata=meta(
            "enum",
            "`none` gives the run's commands one network namespace of their own (loopback only, shared by "
            "the deployed service and the stages); needs `sandbox: bwrap`.",
            choices=NETWORKS,
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.network != "host" and self.sandbox == "none":
            raise ValueError(
                f"`network: {self.network}` needs the sandbox (the network namespace is part of it); "
                "add `sandbox: bwrap` to security, or remove `network`"
            )


@define(frozen=True, kw_only=True)
class StageCommon:
    """Fields every stage accepts."""

    timeout_seconds: float | None = field(
        default=None, validator=_seconds, metadata=meta("seconds", "Timeout of each command of the stage.")
    )
    retries: int = field(
        default=0,
        validator=[validators.instance_of(int), validators.ge(0), validators.le(MAX_RETRIES)],
        metadata=meta("count", f"Extra attempts per failing command (at most {MAX_RETRIES})."),
    )
    env: dict[str, str] = field(
        factory=dict, converter=to_env, metadata=meta("env", "Variables added to the stage's environment.")
    )
    workdir: str | None = field(
        default=None, metadata=meta("relpath", "Directory the commands run in, relative to the repo root.")
    )


@define(frozen=True, kw_only=True)
class TestsSpec(StageCommon):
    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    cmds: tuple[str, ...] = _cmds("Test commands, run in order.")


@define(frozen=True, kw_only=True)
class AuthSpec(StageCommon):
    cmds: tuple[str, ...] = field(
        factory=tuple,
        converter=to_str_tuple,
        metadata=meta("cmds", "Commands that log in to the services the run needs.", aliases=("steps",)),
    )
    interactive: bool = field(
        default=False, metadata=meta("bool", "The commands need a terminal; only for guided runs.")
    )


@define(frozen=True)
class KubectlDumpSpec:
    enabled: bool = field(default=False, metadata=meta("bool", "Dump cluster state when deploy fails."))
    namespace: str | None = field(default=None, metadata=meta("str", "Namespace to dump."))
    label_selector: str | None = field(
        default=None, metadata=meta("str", "Only resources with these labels.")
    )
    include_logs: bool = field(default=False, metadata=meta("bool", "Also save pod logs."))


@define(frozen=True, kw_only=True)
class DeploySpec(StageCommon):
    setup_cmds: tuple[str, ...] = _cmds("Commands that start the services.")
    health_cmds: tuple[str, ...] = _cmds("Commands polled with backoff until all of them pass in one poll.")
    teardown_cmds: tuple[str, ...] = _cmds("Commands that stop the services.")
    teardown_policy: str = field(
        default="always",
        validator=validators.in_(TEARDOWN_POLICIES),
        metadata=meta("enum", "When teardown runs.", choices=TEARDOWN_POLICIES),
    )
    kubectl_dump: KubectlDumpSpec = field(
        factory=KubectlDumpSpec,
        metadata=meta("section", "Kubernetes state captured on failure.", model=KubectlDumpSpec),
    )


@define(frozen=True, kw_only=True)
class RolloutSpec(StageCommon):
    run_cmds: tuple[str, ...] = _cmds("Commands that write .aider_fsm/rollout.json and the samples.")


@define(frozen=True, kw_only=True)
class EvaluationSpec(StageCommon):
    """Shape of both `evaluation` and `benchmark`."""

    run_cmds: tuple[str, ...] = _cmds("Commands that write the metrics file.")
    metrics_path: str | None = field(
        default=None, metadata=meta("relpath", "JSON object the commands write, relative to the repo root.")
    )
    required_keys: tuple[RequiredKey, ...] = field(
        factory=tuple,
        converter=to_required_keys,
        metadata=meta(
            "keys",
            "Keys the metrics object must have, each a name or a one-key mapping {name: type} (number, "
            "integer, string, boolean, object, array); dotted keys look inside objects.",
        ),
    )


@define(frozen=True)
class ArtifactsSpec:
    out_dir: str = field(
        default=DEFAULT_OUT_DIR,
        metadata=meta("relpath", "Where run evidence is written, relative to the repo root."),
    )
    max_output_bytes: int = field(
        default=DEFAULT_MAX_OUTPUT_BYTES,
        validator=[
            validators.instance_of(int),
            validators.or_(validators.in_((0,)), validators.ge(MIN_OUTPUT_BYTES)),
        ],
        metadata=meta(
            "bytes",
            "Cap of each command output file (stdout and stderr of every attempt, in bytes): a longer output "
            "keeps its first and last halves and a line saying how much was cut; 0 keeps everything.",
        ),
    )


def _section(model: type, doc: str) -> Any:
    return field(default=None, metadata=meta("section", doc, model=model))


@define(frozen=True)
class PipelineSpec:
    """A loaded pipeline.yml; ``path`` and ``sha256`` identify the exact bytes it came from."""

    version: int = field(
        validator=validators.in_((1,)),
        metadata=meta(
            "version", "Format version; must be 1.", missing="missing; add `version: 1` at the top"
        ),
    )
    security: SecuritySpec = field(
        factory=SecuritySpec, metadata=meta("section", "Command policy.", model=SecuritySpec)
    )
    tests: TestsSpec | None = _section(TestsSpec, "Test stage.")
    auth: AuthSpec | None = _section(AuthSpec, "Authentication stage.")
    deploy: DeploySpec | None = _section(DeploySpec, "Deploy, health and teardown.")
    rollout: RolloutSpec | None = _section(RolloutSpec, "Rollout stage (writes samples).")
    evaluation: EvaluationSpec | None = _section(EvaluationSpec, "Evaluation stage (writes metrics).")
    benchmark: EvaluationSpec | None = _section(EvaluationSpec, "Benchmark stage, same shape as evaluation.")
    artifacts: ArtifactsSpec = field(
        factory=ArtifactsSpec, metadata=meta("section", "Evidence location.", model=ArtifactsSpec)
    )
    path: str = ""
    sha256: str = ""


def parse_pipeline(raw: RawFile, repo_root: Path) -> tuple[PipelineSpec | None, list[ContractError]]:
    """Every problem of ``raw`` (an empty list means the spec is valid)."""
    spec, errors = parse_model(PipelineSpec, raw, repo_root)
    if spec is None:
        return None, errors
    return _with_origin(spec, raw), []


def metrics_gaps(spec: PipelineSpec, raw: RawFile) -> list[ContractError]:
    """What a valid pipeline lacks for a run that requires metrics (the default): an evaluation whose
    commands write no declared metrics file fails at the evaluate phase, so ``validate`` says so first."""
    section = spec.evaluation
    if section is None or not section.run_cmds or section.metrics_path:
        return []
    line = None
    for knode, vnode in compose(raw).value:
        if getattr(knode, "value", None) == "evaluation":
            line = line_of(vnode)
    return [
        ContractError(
            "missing; evaluation.run_cmds is set, so name the JSON file they write "
            "(e.g. `metrics_path: .aider_fsm/metrics.json`), else every run that requires metrics fails "
            "at evaluate",
            path=raw.path,
            line=line,
            key="evaluation.metrics_path",
        )
    ]


def _with_origin(spec: PipelineSpec, raw: RawFile) -> PipelineSpec:
    return evolve(spec, path=raw.path, sha256=raw.sha256)


def read_pipeline(repo_root: Path, rel: str = PIPELINE_REL) -> RawFile:
    problem = contract_rel_problem(rel)
    if problem:  # the pipeline is the repository's own file: never one elsewhere
        raise ContractError(f"the pipeline file {problem}", key="pipeline_rel")
    root = Path(repo_root).resolve()
    path = root / rel
    if not present(path):
        raise ContractError("file not found; run `fsm-runner init` to start one", path=str(path))
    return read_file(path)


def artifacts_root(repo_root: Path, rel: str = PIPELINE_REL) -> Path:
    """Where a repository keeps its runs: ``artifacts.out_dir`` of its pipeline, else the default.

    A broken or missing contract must not hide the repository's past runs, so it falls back quietly.
    """
    out_dir = DEFAULT_OUT_DIR
    with contextlib.suppress(ContractError, OSError):
        out_dir = load_pipeline(repo_root, rel).artifacts.out_dir
    return (Path(repo_root) / out_dir).resolve()


def load_pipeline(repo_root: Path, rel: str = PIPELINE_REL) -> PipelineSpec:
    """Load and validate ``repo_root/rel``; the first problem is raised as a ContractError."""
    raw = read_pipeline(repo_root, rel)
    spec, errors = parse_pipeline(raw, Path(repo_root).resolve())
    if spec is None:
        raise errors[0]
    return spec
