"""validate_repo reports every problem of every contract file at once."""

from __future__ import annotations

import shutil
from pathlib import Path

from fsm_runner.contract import validate_repo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_valid_repo_has_no_problems(tmp_path: Path) -> None:
    (tmp_path / ".aider_fsm").mkdir()
    shutil.copy(EXAMPLES / "pipeline.example.yml", tmp_path / "pipeline.yml")
    shutil.copy(EXAMPLES / "bootstrap.example.yml", tmp_path / ".aider_fsm" / "bootstrap.yml")
    shutil.copy(EXAMPLES / "actions.example.yml", tmp_path / ".aider_fsm" / "actions.yml")
    assert validate_repo(tmp_path) == []


def test_every_problem_in_every_file(tmp_path: Path) -> None:
    (tmp_path / ".aider_fsm").mkdir()
    (tmp_path / "pipeline.yml").write_text(
        "version: 2\nzz: 1\ntests:\n  cmds: [1, ok]\n  retries: x\nevaluation:\n  metrics_path: /m.json\n"
    )
    (tmp_path / ".aider_fsm" / "bootstrap.yml").write_text("cmds: [a\n")
    (tmp_path / ".aider_fsm" / "actions.yml").write_text(
        "version: 1\nactions:\n  - {id: a, kind: run_cmd}\n  - {id: b, kind: nope, cmd: x}\n"
    )
    root = tmp_path.resolve()
    found = [str(e).replace(str(root), "R") for e in validate_repo(tmp_path)]
    assert found == [
        "R/pipeline.yml:1: version: unsupported version 2; this fsm-runner reads version 1 only",
        "R/pipeline.yml:2: zz: unknown key; valid keys: version, security, tests, auth, deploy, rollout, "
        "evaluation, benchmark, artifacts",
        "R/pipeline.yml:4: tests.cmds[0]: expected a command (a string), got int "
        "(quote it to make it a string)",
        "R/pipeline.yml:5: tests.retries: expected a whole number, got str",
        "R/pipeline.yml:7: evaluation.metrics_path: must be relative to the repository root, "
        "got absolute path '/m.json'",
        "R/.aider_fsm/bootstrap.yml:2: invalid YAML: expected ',' or ']', but got '<stream end>'",
        "R/.aider_fsm/actions.yml:3: actions[0]: action 'a': kind run_cmd needs `cmd`",
        "R/.aider_fsm/actions.yml:4: actions[1].kind: must be one of write_file, run_cmd, got 'nope'",
    ]


def test_missing_pipeline_is_reported_and_other_files_still_checked(tmp_path: Path) -> None:
    (tmp_path / ".aider_fsm").mkdir()
    (tmp_path / ".aider_fsm" / "bootstrap.yml").write_text("version: 1\nstep: x\n")
    found = [e.problem for e in validate_repo(tmp_path)]
    assert found == ["file not found; run `fsm-runner init` to start one", "unknown key, did you mean steps?"]


def test_too_many_problems_are_summarised(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yml").write_text("version: 1\n" + "".join(f"k{i}: 1\n" for i in range(130)))
    found = validate_repo(tmp_path)
    assert len(found) == 101 and found[-1].problem == "30 more problems not shown"


def test_evaluation_commands_without_metrics_path_are_reported(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yml").write_text(
        "version: 1\ntests: {cmds: x}\nevaluation:\n  run_cmds: [make eval]\n"
    )
    found = [str(e).replace(str(tmp_path.resolve()), "R") for e in validate_repo(tmp_path)]
    assert found == [
        "R/pipeline.yml:4: evaluation.metrics_path: missing; evaluation.run_cmds is set, so name the JSON "
        "file they write (e.g. `metrics_path: .aider_fsm/metrics.json`), else every run that requires "
        "metrics fails at evaluate"
    ]
    (tmp_path / "pipeline.yml").write_text(
        "version: 1\nevaluation: {run_cmds: [make eval], metrics_path: m.json}\n"
    )
    assert validate_repo(tmp_path) == []
