"""examples/train_loop.py --submit: checkpoints scored in the background while the loop goes on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sweeps.conftest import assert_nothing_running, make_workspace

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_loop.py"


def run_loop(tmp_path: Path, *targets: Path) -> subprocess.CompletedProcess[str]:
    ws_tmp = tmp_path / "ws" / "tmp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIDER_", "OPENAI_", "ARITH_BENCH_"))}
    env.update(TMPDIR=str(ws_tmp), FSM_RUNNER_CACHE_DIR=str(tmp_path / "clones"))
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--submit", *map(str, targets)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_submit_per_checkpoint_and_a_table_at_the_end(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    proc = run_loop(tmp_path, ws.arith, ws.broken)
    assert_nothing_running(tmp_path)
    assert proc.returncode == 1, proc.stderr  # the broken benchmark fails
    saved = re.findall(r"^checkpoint (\w+) saved; scoring it on 2 benchmark\(s\) in the background$", proc.stdout, re.M)
    assert saved == ["exact", "sloppy"], proc.stdout
    table = proc.stdout.splitlines()[2:]
    assert table[0] == "metric: score"
    assert table[1].split() == ["target", "exact", "(baseline)", "sloppy"]
    assert table[2].split() == [str(ws.arith), "1.000", "0.750", "(-0.250)"]
    assert table[3].split() == [str(ws.broken), "FAILED", "FAILED"]
    assert "exact on " in proc.stderr and "failed: evaluate:" in proc.stderr


def test_every_benchmark_passing_exits_0(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    proc = run_loop(tmp_path, ws.arith)
    assert_nothing_running(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].split() == [str(ws.arith), "1.000", "0.750", "(-0.250)"]
