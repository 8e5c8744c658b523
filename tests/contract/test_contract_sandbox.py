"""security.sandbox and security.network: their values, defaults, the rule that ties them, and the schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm_runner.contract import load_pipeline, pipeline_json_schema
from fsm_runner.errors import ContractError

jsonschema = pytest.importorskip("jsonschema")


def load(tmp_path: Path, security: str) -> object:
    (tmp_path / "pipeline.yml").write_text(f"version: 1\nsecurity:\n{security}")
    return load_pipeline(tmp_path).security


def test_defaults_are_no_sandbox_and_the_hosts_network(tmp_path: Path) -> None:
    security = load(tmp_path, "  mode: safe\n")
    assert (security.sandbox, security.network) == ("none", "host")  # type: ignore[attr-defined]
    security = load(tmp_path, "  sandbox: bwrap\n  network: none\n")
    assert (security.sandbox, security.network) == ("bwrap", "none")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ("  sandbox: bwarp\n", "pipeline.yml:3: security.sandbox: must be one of none, bwrap, got 'bwarp'; did you mean bwrap?"),
        ("  network: nil\n", "pipeline.yml:3: security.network: must be one of host, none, got 'nil'"),
        ("  network: off\n", "pipeline.yml:3: security.network: expected a string, got bool (quote it to make it a string)"),
        (
            "  network: none\n",
            "pipeline.yml:3: security: `network: none` needs the sandbox (the network namespace is part of it); "
            "add `sandbox: bwrap` to security, or remove `network`",
        ),
    ],
)
def test_invalid_values_say_what_to_write(tmp_path: Path, security: str, message: str) -> None:
    with pytest.raises(ContractError) as caught:
        load(tmp_path, security)
    assert str(caught.value).endswith(message)


@pytest.mark.parametrize(
    ("security", "valid"),
    [
        ({"sandbox": "bwrap", "network": "none"}, True),
        ({"sandbox": "bwrap"}, True),
        ({"network": "host"}, True),
        ({"network": "none"}, False),
        ({"network": "none", "sandbox": "none"}, False),
        ({"sandbox": "docker"}, False),
    ],
)
def test_the_schema_says_the_same(security: dict[str, str], valid: bool) -> None:
    validator = jsonschema.Draft202012Validator(pipeline_json_schema())
    assert validator.is_valid({"version": 1, "security": security}) is valid
