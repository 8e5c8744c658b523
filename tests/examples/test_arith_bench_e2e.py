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


def _service_window(run_dir: Path) -> tuple[float, float]:
    """From the end of deploy_setup to the start of teardown: when the run's server was up (epoch seconds)."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    up = next(float(e["ts"]) for e in events if e["event"] == "phase.end" and e["phase"] == "deploy_setup")
    down = next(float(e["ts"]) for e in events if e["event"] == "phase.start" and e["phase"] == "teardown")
    return up, down


def test_two_copies_run_side_by_side_each_on_its_own_port(tmp_path: Path) -> None:
    copies = []
    for name in ("a", "b"):
        copies.append(tmp_path / name)
        shutil.copytree(EXAMPLE, copies[-1], ignore=shutil.ignore_patterns(".venv", "artifacts", "__pycache__"))
    # A server that takes a second to get ready keeps both runs' services up at the same time.
    argv = ["run", "--llm", "exact", "--json", "--env", "ARITH_BENCH_READY_DELAY=1"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fsm_runner", *argv, str(copy)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for copy in copies
    ]
    outputs = [proc.communicate(timeout=180) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
    results = [json.loads(out) for out, _ in outputs]
    assert all(r["ok"] is True and r["metrics"]["score"] == 1.0 for r in results)
    run_dirs = [Path(r["run_dir"]) for r in results]
    ports = [json.loads((d / "run.json").read_text())["port"] for d in run_dirs]
    assert ports[0] != ports[1]
    for copy, port in zip(copies, ports, strict=True):
        assert f"serving http://127.0.0.1:{port} " in (copy / ".aider_fsm" / "server.log").read_text()
    (up_a, down_a), (up_b, down_b) = (_service_window(d) for d in run_dirs)
    assert max(up_a, up_b) < min(down_a, down_b), "the two services were never up at the same time"
