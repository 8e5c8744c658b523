"""Collect every problem of a repository's contract files at once (for ``fsm-runner validate``)."""

from __future__ import annotations

from pathlib import Path

from fsm_runner.contract.actions import ACTIONS_REL, parse_actions
from fsm_runner.contract.bootstrap import BOOTSTRAP_REL, parse_bootstrap
from fsm_runner.contract.pipeline import parse_pipeline, read_pipeline
from fsm_runner.contract.yamlload import read_file
from fsm_runner.errors import ContractError


def validate_repo(repo_root: Path, pipeline_rel: str = "pipeline.yml") -> list[ContractError]:
    """Every problem in pipeline.yml, bootstrap.yml and actions.yml; an empty list means all are valid.

    A missing pipeline.yml is a problem; a missing bootstrap.yml or actions.yml is not.
    """
    root = Path(repo_root).resolve()
    problems: list[ContractError] = []
    try:
        problems += parse_pipeline(read_pipeline(root, pipeline_rel), root)[1]
    except ContractError as exc:
        problems.append(exc)
    for rel, parse in ((BOOTSTRAP_REL, parse_bootstrap), (ACTIONS_REL, parse_actions)):
        path = root / rel
        if not path.exists():
            continue
        try:
            problems += parse(read_file(path), root)[1]
        except ContractError as exc:
            problems.append(exc)
    return problems
