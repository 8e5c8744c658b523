"""Collect every problem of a repository's contract files at once (for ``fsm-runner validate``)."""

from __future__ import annotations

from pathlib import Path

from fsm_runner.contract.actions import parse_actions
from fsm_runner.contract.bootstrap import parse_bootstrap
from fsm_runner.contract.pipeline import metrics_gaps, parse_pipeline, read_pipeline
from fsm_runner.contract.yamlload import present, read_file
from fsm_runner.errors import ContractError
from fsm_runner.evidence.layout import ACTIONS_REL, BOOTSTRAP_REL, PIPELINE_REL


def validate_repo(repo_root: Path, pipeline_rel: str = PIPELINE_REL) -> list[ContractError]:
    """Every problem in pipeline.yml, bootstrap.yml and actions.yml; an empty list means all are valid.

    A missing pipeline.yml is a problem; a missing bootstrap.yml or actions.yml is not. So is an
    evaluation without a metrics file, which every run that requires metrics (the default) refuses.
    """
    root = Path(repo_root).resolve()
    problems: list[ContractError] = []
    try:
        raw = read_pipeline(root, pipeline_rel)
        spec, errors = parse_pipeline(raw, root)
        problems += errors if spec is None else metrics_gaps(spec, raw)
    except ContractError as exc:
        problems.append(exc)
    for rel, parse in ((BOOTSTRAP_REL, parse_bootstrap), (ACTIONS_REL, parse_actions)):
        path = root / rel
        try:
            if present(path):
                problems += parse(read_file(path), root)[1]
        except ContractError as exc:
            problems.append(exc)
    return problems
