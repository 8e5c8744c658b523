"""A small repository with a failing check, and repair requests against it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.repair.agents import RepairRequest

PIPELINE = b"version: 1\ntests:\n  cmds: ['sh .aider_fsm/check.sh']\n"
MAIN = b"def answer():\n    return 41\n"
RUN_ID = "20240101T000000Z-abcd"

RequestFactory = Callable[..., RepairRequest]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / ".aider_fsm").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "pipeline.yml").write_bytes(PIPELINE)
    (root / "src/main.py").write_bytes(MAIN)
    (root / "README.md").write_bytes(b"readme\n")
    (root / ".aider_fsm/check.sh").write_bytes(b"exit 1\n")
    return root


@pytest.fixture
def make_request(repo: Path) -> RequestFactory:
    """A request for the ``tests`` phase of ``repo``; keyword arguments replace single fields."""

    def factory(**overrides: Any) -> RepairRequest:
        fields: dict[str, Any] = {
            "repo": repo,
            "phase": "tests",
            "error_kind": "command_failed",
            "error_message": "sh .aider_fsm/check.sh exited 1",
            "evidence_paths": (),
            "attempt": 1,
            "max_attempts": 2,
            "allowed_globs": (".aider_fsm/**",),
            "run_id": RUN_ID,
            "prompt": "fix it",
            "work_dir": repo / f".aider_fsm/artifacts/{RUN_ID}/repair_01",
        }
        fields.update(overrides)
        return RepairRequest(**fields)

    return factory
