"""Scaffolding a missing contract with a repair agent, and holding what it wrote to the usual validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.contract.pipeline import load_pipeline
from fsm_runner.errors import ContractError
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.repair.agents import RepairRequest
from fsm_runner.repair.scaffold import scaffold_contract

VALID = "version: 1\ntests:\n  cmds: 'true'\n"
SECRET = "sk-live-0123456789"

Agent = Callable[[RepairRequest], object]


def writes(rel: str, text: str, seen: list[RepairRequest] | None = None) -> Agent:
    def agent(request: RepairRequest) -> str:
        if seen is not None:
            seen.append(request)
        path = request.repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return "wrote it"

    return agent


def repo_dir(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("a benchmark\n")
    return repo


@pytest.mark.parametrize("rel", ["pipeline.yml", "ci/pipeline.yml"])
def test_an_agent_that_writes_a_valid_contract_succeeds(tmp_path: Path, rel: str) -> None:
    repo = repo_dir(tmp_path)
    seen: list[RepairRequest] = []
    work = scaffold_contract(repo, rel, writes(rel, VALID, seen), Redactor())
    assert load_pipeline(repo, rel).tests is not None
    assert work.parent == repo / ".aider_fsm" / "artifacts" and work.name.startswith("scaffold-")
    (request,) = seen
    assert (request.phase, request.error_kind, request.attempt, request.max_attempts) == (
        "scaffold",
        "contract_missing",
        1,
        1,
    )
    assert rel in request.allowed_globs and ".aider_fsm/**" in request.allowed_globs
    assert f"{rel} does not exist" in request.prompt and "fsm-runner init" in request.prompt
    assert json.loads((work / "request.json").read_text())["phase"] == "scaffold"
    assert json.loads((work / "reply.json").read_text())["summary"] == "wrote it"
    changed = [c["path"] for c in json.loads((work / "provenance.json").read_text())["changed"]]
    assert rel in changed


@pytest.mark.parametrize(
    "agent",
    [
        lambda request: None,
        writes("other.yml", VALID),
        writes("src/pipeline.yml", VALID),
        lambda request: (_ for _ in ()).throw(RuntimeError("agent crashed")),
    ],
    ids=["nothing", "wrong-name", "wrong-dir", "raises"],
)
def test_an_agent_that_writes_no_contract_is_a_contract_error(tmp_path: Path, agent: Agent) -> None:
    repo = repo_dir(tmp_path)
    with pytest.raises(ContractError) as info:
        scaffold_contract(repo, "pipeline.yml", agent, Redactor())
    assert info.value.path == str(repo / "pipeline.yml")
    message = str(info.value)
    assert "did not" in message and "evidence:" in message
    evidence = Path(message.split("evidence: ", 1)[1].rstrip(")"))
    assert (evidence / "provenance.json").is_file()


def test_edits_outside_the_allowed_area_are_reverted(tmp_path: Path) -> None:
    repo = repo_dir(tmp_path)

    def agent(request: RepairRequest) -> None:
        (request.repo / "pipeline.yml").write_text(VALID)
        (request.repo / "README.md").write_text("vandalised\n")
        (request.repo / "new.py").write_text("x = 1\n")

    work = scaffold_contract(repo, "pipeline.yml", agent, Redactor())
    assert (repo / "README.md").read_text() == "a benchmark\n"
    assert not (repo / "new.py").exists()
    reverted = {c["path"] for c in json.loads((work / "provenance.json").read_text())["reverted"]}
    assert reverted == {"README.md", "new.py"}


def test_evidence_is_redacted(tmp_path: Path) -> None:
    repo = repo_dir(tmp_path)

    def agent(request: RepairRequest) -> str:
        (request.repo / "pipeline.yml").write_text(VALID)
        return f"used key {SECRET}"

    work = scaffold_contract(repo, "pipeline.yml", agent, Redactor.from_env({"API_KEY": SECRET}))
    reply = (work / "reply.json").read_text()
    assert SECRET not in reply and "***" in reply


def test_setup_loads_a_scaffolded_contract(tmp_path: Path) -> None:
    repo = repo_dir(tmp_path)
    with fsm_runner.setup(repo, repair_agent=writes("pipeline.yml", VALID)) as sess:
        assert sess.ctx.pipeline.tests is not None
        assert sess.ctx.contract_sha256 == load_pipeline(repo).sha256
    assert list((repo / ".aider_fsm" / "artifacts").glob("scaffold-*"))


@pytest.mark.parametrize(
    "text, expected",
    [("version: 2\n", "version"), ("version: 1\ntests:\n  cmdz: ls\n", "cmdz")],
)
def test_setup_validates_what_the_agent_wrote(tmp_path: Path, text: str, expected: str) -> None:
    repo = repo_dir(tmp_path)
    with pytest.raises(ContractError) as info:
        fsm_runner.setup(repo, repair_agent=writes("pipeline.yml", text))
    assert str(repo / "pipeline.yml") in str(info.value) and expected in str(info.value)


def test_setup_without_an_agent_does_not_scaffold(tmp_path: Path) -> None:
    repo = repo_dir(tmp_path)
    with pytest.raises(ContractError) as info:
        fsm_runner.setup(repo)
    assert "fsm-runner init" in str(info.value)
    assert not (repo / ".aider_fsm").exists()
