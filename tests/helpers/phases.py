"""Run one phase of the pipeline against a real run context in a tmp repository.

The context is the one :class:`tests.helpers.context.ContextFactory` builds (real contract loader, target
resolution, redactor, event log); the phase is the registry's own object from
:func:`fsm_runner.states.phases`, and its commands run as real ``bash -c`` processes in the tmp repository.

Typical use, with the ``make_ctx`` fixture of ``tests/states/conftest.py``::

    outcome, ctx = run_phase(make_ctx, "tests", "version: 1\\ntests:\\n  cmds: 'true'\\n")
    run = run_phase(make_ctx, "rollout", PIPELINE, files=SERVICE_FILES, require_samples=True)
    run_phase(run.ctx, "teardown")  # a later phase on the same context

Phases that need a running service start the fixture service of :mod:`tests.helpers.target_files` through
their own ``deploy.setup_cmds`` (see :func:`deploy_yaml`); :class:`PhaseContexts` ends whatever a test left
deployed and reports it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from fsm_runner.engine.context import RunContext
from fsm_runner.engine.deployment import end_deployment
from fsm_runner.engine.outcome import Outcome
from fsm_runner.evidence.layout import RUNTIME_ENV_REL, SUMMARY, repair_dir_name, stage_dir_name
from fsm_runner.states import phases
from tests.helpers import target_files as scripts
from tests.helpers.context import MINIMAL_PIPELINE, ContextFactory

#: The fixture service and the scripts that talk to it, as ``files=`` for a tmp repository.
SERVICE_FILES: dict[str, str] = {
    "svc.py": scripts.SVC,
    "probe.py": scripts.PROBE,
    "stop.py": scripts.STOP,
    "rollout.py": scripts.ROLLOUT,
    "evaluate.py": scripts.EVALUATE,
    ".aider_fsm/scoring.py": scripts.SCORING_GOOD,
}

#: Where the fixture service writes its pid (the file the autouse leftover check reads).
SERVICE_PID = ".aider_fsm/svc.pid"
#: Starts the fixture service in the background; it writes its URL to the runtime env file.
START_SERVICE = "python3 svc.py > .aider_fsm/svc.log 2>&1 &"


def deploy_yaml(
    *,
    setup: str | list[str] | None = START_SERVICE,
    health: str | list[str] | None = "python3 probe.py",
    teardown: str | list[str] | None = "python3 stop.py",
    policy: str = "always",
    timeout: float = 5,
    extra: str = "",
) -> str:
    """A ``deploy:`` section for the fixture service; ``None`` leaves a command list out."""
    lines = ["deploy:"]
    for key, value in (("setup_cmds", setup), ("health_cmds", health), ("teardown_cmds", teardown)):
        if value is not None:
            lines.append(f"  {key}: {json.dumps(value)}")
    lines += [f"  teardown_policy: {policy}", f"  timeout_seconds: {timeout:g}"]
    return "\n".join(lines) + "\n" + extra


@attrs.frozen
class PhaseRun:
    """What :func:`run_phase` returns; unpacks as ``outcome, ctx``.

    ``stage_dir`` is the evidence dir this execution wrote (``<phase>``, ``<phase>.N`` or ``repair_NN``), or
    None when the phase returned without one (a skip).
    """

    outcome: Outcome
    ctx: RunContext
    stage_dir: Path | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.outcome, self.ctx))

    @property
    def repo(self) -> Path:
        return self.ctx.repo_root

    @property
    def evidence(self) -> Path:
        """``stage_dir``, which must exist."""
        assert self.stage_dir is not None, f"{self.outcome.phase} wrote no evidence dir"
        return self.stage_dir

    def summary(self) -> dict[str, Any]:
        """The phase's ``summary.json``."""
        data: dict[str, Any] = json.loads((self.evidence / SUMMARY).read_text())
        return data


def service_url(repo: Path, wait: float = 5.0) -> str:
    """The base URL the fixture service writes to the runtime env file once it listens (waits for it)."""
    path = repo / RUNTIME_ENV_REL
    deadline = time.monotonic() + wait
    pid_file = repo / SERVICE_PID
    while not (path.is_file() and pid_file.is_file() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, f"the fixture service did not start within {wait}s"
        time.sleep(0.01)
    url: str = json.loads(path.read_text())["service"]["base_url"]
    return url


class PhaseContexts:
    """Builds run contexts in one tmp dir; :meth:`close` ends what they left deployed and closes their logs."""

    def __init__(self, tmp_path: Path) -> None:
        self.factory = ContextFactory(tmp_path)
        self.made: list[RunContext] = []

    def __call__(
        self,
        pipeline: str = MINIMAL_PIPELINE,
        *,
        files: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> RunContext:
        ctx = self.factory(pipeline, files=files, secrets=secrets)
        set_fields(ctx, fields)
        self.made.append(ctx)
        return ctx

    def close(self) -> list[int]:
        """End every deploy group still recorded; returns those that were still alive."""
        left: list[int] = []
        try:
            for ctx in self.made:
                left += end_deployment(ctx)
        finally:
            self.factory.close()
        return left


@contextmanager
def phase_contexts(tmp_path: Path) -> Iterator[PhaseContexts]:
    """A :class:`PhaseContexts` that fails the test if a deployment outlived it (after ending it)."""
    made = PhaseContexts(tmp_path)
    try:
        yield made
    finally:
        left = made.close()
    assert not left, f"deploy process groups left running: {left}"


def set_fields(ctx: RunContext, fields: Mapping[str, Any]) -> None:
    """Set context fields by name (``llm``, ``mode``, ``deployed``, ``repairer``, ...); unknown names fail."""
    known = attrs.fields_dict(RunContext)
    for name, value in fields.items():
        if name not in known:
            raise TypeError(f"RunContext has no field {name!r}")
        setattr(ctx, name, value)


def run_phase(
    where: PhaseContexts | RunContext,
    name: str,
    pipeline: str | None = None,
    *,
    files: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    **fields: Any,
) -> PhaseRun:
    """Run phase ``name`` once, the way the driver does, and return its outcome with the context.

    ``where`` is either a :class:`PhaseContexts` (a new repository is written with ``pipeline``, by default
    just ``version: 1``, and ``files``; ``secrets`` join the base environment) or an existing context (to run a later phase of the
    same run; then only ``fields`` may be given). ``fields`` are set on the context before the phase runs.
    """
    if isinstance(where, RunContext):
        if pipeline is not None or files is not None or secrets is not None:
            raise TypeError("pipeline, files and secrets only apply when a new context is built")
        ctx = where
        set_fields(ctx, fields)
    else:
        ctx = where(MINIMAL_PIPELINE if pipeline is None else pipeline, files=files, secrets=secrets, **fields)
    before = ctx.runs_of_phase.get(name, 0)  # the per-phase counter behind its evidence dir names
    ctx.phase = name  # as the driver does before it runs the phase (the guards read it)
    outcome = phases()[name].run(ctx)
    assert outcome.phase == name, f"phase {name} reported itself as {outcome.phase}"
    count = ctx.runs_of_phase.get(name, 0)
    stage_dir = None
    if count != before:
        stage_dir = ctx.run_dir / (repair_dir_name(count) if name == "repair" else stage_dir_name(name, count))
    return PhaseRun(outcome, ctx, stage_dir)
