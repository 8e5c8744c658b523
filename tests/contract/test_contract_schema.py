"""The JSON Schema comes from the same field metadata as the loader, and agrees with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fsm_runner.contract import actions_json_schema, bootstrap_json_schema, pipeline_json_schema
from fsm_runner.contract.fields import contract_fields
from fsm_runner.contract.pipeline import DeploySpec, PipelineSpec, parse_pipeline
from fsm_runner.contract.yamlload import RawFile

jsonschema = pytest.importorskip("jsonschema")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def validator(schema: dict[str, Any]) -> Any:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    ("schema", "example"),
    [
        (pipeline_json_schema, "pipeline.example.yml"),
        (pipeline_json_schema, "pipeline.benchmark_skeleton.yml"),
        (bootstrap_json_schema, "bootstrap.example.yml"),
        (actions_json_schema, "actions.example.yml"),
    ],
)
def test_examples_match_their_schema(schema: Any, example: str) -> None:
    document = yaml.safe_load((EXAMPLES / example).read_text())
    assert list(validator(schema()).iter_errors(document)) == []


def test_schema_header_and_fields_follow_the_models() -> None:
    schema = pipeline_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["version"] and schema["additionalProperties"] is False
    assert list(schema["properties"]) == [attr.name for attr, _ in contract_fields(PipelineSpec)]
    deploy = schema["$defs"]["DeploySpec"]["properties"]
    assert set(deploy) == {attr.name for attr, _ in contract_fields(DeploySpec)}
    assert deploy["teardown_policy"]["default"] == "always"
    assert "steps" in schema["$defs"]["AuthSpec"]["properties"]
    assert schema["properties"]["benchmark"]["anyOf"][0] == {"$ref": "#/$defs/EvaluationSpec"}


@pytest.mark.parametrize(
    "text",
    [
        "version: 2\n",
        "tests: {}\n",
        "version: 1\nevaluation: {required_key: [ok]}\n",
        "version: 1\nauth: {cmds: a, steps: b}\n",
        "version: 1\ntests: {retries: -1}\n",
        "version: 1\ntests: {retries: true}\n",
        "version: 1\ntests: {timeout_seconds: 0}\n",
        "version: 1\ntests: {cmds: [3]}\n",
        "version: 1\ntests: {workdir: ../x}\n",
        "version: 1\ntests: {env: {1A: x}}\n",
        "version: 1\nrollout: {env: {AIDER_FSM_PORT: '1'}}\n",
        "version: 1\ndeploy: {teardown_policy: sometimes}\n",
        "version: 1\nsecurity: {mode: root}\n",
        "version: 1\nevaluation: {required_keys: [{score: float}]}\n",
        "version: 1\nevaluation: {required_keys: [{score: number, ok: boolean}]}\n",
        "version: 1\nevaluation: {required_keys: [{score: 1}]}\n",
        "version: 1\nevaluation: {required_keys: [{}]}\n",
    ],
)
def test_schema_and_loader_both_reject(tmp_path: Path, text: str) -> None:
    assert list(validator(pipeline_json_schema()).iter_errors(yaml.safe_load(text)))
    spec, errors = parse_pipeline(RawFile("p.yml", text.encode()), tmp_path)
    assert spec is None and errors


@pytest.mark.parametrize(
    "action",
    [
        {"id": "a", "kind": "write_file", "path": "x"},
        {"id": "a", "kind": "run_cmd"},
        {"id": "a", "kind": "run_cmd", "cmd": "ls", "path": "x"},
        {"kind": "run_cmd", "cmd": "ls"},
    ],
)
def test_action_kind_rules_are_in_the_schema(action: dict[str, Any]) -> None:
    assert list(validator(actions_json_schema()).iter_errors({"version": 1, "actions": [action]}))


@pytest.mark.parametrize(
    "keys",
    [
        "[ok, {score: number}, {eval.n: integer}, {name: string}, {flag: boolean}, {per_task: object}]",
        "[{items: array}]",
        "{score: number}",
        "score",
    ],
)
def test_schema_and_loader_both_accept_typed_required_keys(tmp_path: Path, keys: str) -> None:
    text = f"version: 1\nevaluation: {{required_keys: {keys}}}\n"
    assert list(validator(pipeline_json_schema()).iter_errors(yaml.safe_load(text))) == []
    spec, errors = parse_pipeline(RawFile("p.yml", text.encode()), tmp_path)
    assert spec is not None and errors == []
