"""A workspace for sweeps: copies of the bundled targets and a checkpoint directory, all under tmp_path, with
the temp dir (where isolated runs make their private copies) under tmp_path too, so that a scan of /proc for
tmp_path finds every process a sweep started."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from attrs import define

from tests.conftest import procs_under

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_GENERATED = {".venv", "__pycache__", "artifacts", ".mypy_cache", ".ruff_cache"}


@define(frozen=True)
class Workspace:
    root: Path
    arith: Path
    broken: Path
    checkpoint: Path
    tmp: Path

    @property
    def llms(self) -> list[str]:
        return ["exact", "sloppy", str(self.checkpoint)]

    @property
    def targets(self) -> list[str]:
        return [str(self.arith), str(self.broken)]


def _ignore(directory: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n in _GENERATED}
    if Path(directory).name == ".aider_fsm":
        ignored |= {n for n in names if n.endswith((".json", ".jsonl", ".log", ".pid"))}
    return ignored


def make_workspace(root: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    arith = Path(shutil.copytree(EXAMPLES / "arith_bench", root / "arith_bench", ignore=_ignore))
    broken = Path(shutil.copytree(EXAMPLES / "broken_target", root / "broken_target", ignore=_ignore))
    checkpoint = root / "ckpts" / "step-100"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text('{"step": 100}\n')
    tmp = root / "tmp"
    tmp.mkdir()
    return Workspace(root, arith, broken, checkpoint, tmp)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    ws = make_workspace(tmp_path / "ws")
    monkeypatch.setenv("TMPDIR", str(ws.tmp))  # cells are child processes: they read it at start
    monkeypatch.setenv("FSM_RUNNER_CACHE_DIR", str(tmp_path / "clones"))
    monkeypatch.chdir(tmp_path)
    return ws


def assert_nothing_running(root: Path) -> None:
    leftovers = procs_under(root)
    for pid in leftovers:
        os.kill(pid, 9)
    assert not leftovers, f"processes left running under {root}: {leftovers}"
