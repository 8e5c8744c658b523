"""The bundled example target, end to end through the real CLI (the README's first command)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "arith_bench"


@pytest.fixture
def arith_bench(tmp_path: Path) -> Path:
    target = tmp_path / "arith_bench"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".venv", "artifacts", "__pycache__"))
    return target


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsm_runner", *args], cwd=cwd, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize("llm, score", [("exact", 1.0), ("sloppy", 0.75)])
def test_run_prints_the_score_and_leaves_nothing_running(arith_bench: Path, llm: str, score: float) -> None:
    done = cli("run", str(arith_bench), "--llm", llm, cwd=arith_bench.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"score    {score}" in done.stdout
    assert "teardown -> done" in done.stdout
    result = cli("run", str(arith_bench), "--llm", llm, "--json", cwd=arith_bench.parent)
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["metrics"]["score"] == score
    assert data["benchmark"]["ok"] is True and data["benchmark"]["throughput_rps"] > 0
    assert [p["phase"] for p in data["phases"]][-1] == "teardown"
    pid_file = arith_bench / ".aider_fsm" / "server.pid"
    assert not pid_file.exists() or not Path(f"/proc/{pid_file.read_text().strip()}").exists()
    listing = cli("runs", str(arith_bench), cwd=arith_bench)
    assert listing.returncode == 0 and listing.stdout.count(llm) == 2
