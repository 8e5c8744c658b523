"""Real run contexts for the engine's unit tests, built the way ``Session._open`` builds them.

Each piece is the engine's own: the contract loader, target resolution, the redactor, the run logger and
the journal. Only the pipeline text and the base environment are chosen by the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsm_runner.contract.pipeline import load_pipeline
from fsm_runner.engine.context import RunContext
from fsm_runner.evidence.atomic import create_run_dir
from fsm_runner.evidence.events import RunSink, run_logger
from fsm_runner.evidence.journal import Journal
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.targets import resolve_target

MINIMAL_PIPELINE = "version: 1\n"
RUN_ID = "20260101T000000Z-test01"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The host environment without variables that would change what a stage sees (LLM, limits)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIDER_", "OPENAI_", "FSM_RUNNER_"))}
    env.update(extra or {})
    return env


def write_repo(root: Path, pipeline: str = MINIMAL_PIPELINE, files: Mapping[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.yml").write_text(pipeline)
    for rel, text in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


class ContextFactory:
    """Builds contexts under one tmp dir and closes their event sinks when the test ends."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.sinks: list[RunSink] = []
        self.count = 0

    def __call__(
        self,
        pipeline: str = MINIMAL_PIPELINE,
        *,
        files: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        console: bool | None = None,
        **fields: Any,
    ) -> RunContext:
        self.count += 1
        repo = write_repo(self.tmp_path / f"repo{self.count}", pipeline, files)
        spec = load_pipeline(repo)
        resolved = resolve_target(repo)
        run_id = f"{RUN_ID}{self.count}"
        run_dir = create_run_dir(self.tmp_path / "runs", run_id)
        log, sink = run_logger(run_dir, run_id, console=console)
        self.sinks.append(sink)
        base_env = clean_env(secrets)
        values: dict[str, Any] = {
            "contract_sha256": spec.sha256,
            "contract_hashes": [spec.sha256],
            **fields,
        }
        return RunContext(
            run_id=run_id,
            run_dir=run_dir,
            target=resolved,
            pipeline=spec,
            pipeline_rel="pipeline.yml",
            bootstrap=None,
            base_env=base_env,
            redactor=Redactor.from_env(base_env),
            log=log,
            sink=sink,
            **values,
        )

    def journal(self, ctx: RunContext) -> Journal:
        return Journal.open(ctx.run_dir)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


@contextmanager
def contexts(tmp_path: Path) -> Iterator[ContextFactory]:
    factory = ContextFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()
