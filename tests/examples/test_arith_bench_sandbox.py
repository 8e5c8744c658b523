"""The bundled example end to end under ``--sandbox bwrap``: the server deploy backgrounds lives in the run's
service namespace until teardown, health passes, the score is right, and nothing is left running."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fsm_runner.execution.sandbox import sandbox_problem
from tests.conftest import procs_in

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "arith_bench"
PROBLEM = sandbox_problem("host")

pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"the sandbox cannot work here: {PROBLEM}")


def test_the_example_passes_under_the_sandbox_with_its_server_deployed(tmp_path: Path) -> None:
    target = tmp_path / "arith_bench"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".venv", "artifacts", "__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(target), "--sandbox", "bwrap", "--llm", "exact", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["metrics"]["score"] == 1.0
    assert result["benchmark"]["ok"] is True and result["benchmark"]["throughput_rps"] > 0
    phases = {p["phase"]: p["status"] for p in result["phases"]}
    assert phases["deploy_setup"] == "ok" and phases["health"] == "ok" and phases["teardown"] == "ok"
    run_dir = Path(result["run_dir"])
    state = json.loads((run_dir / "run.json").read_text())
    assert state["sandbox"] == "bwrap" and state["network"] == "host"
    # Every command ran under bwrap; deploy's in the service namespace, the others each in their own.
    for attempt in sorted(run_dir.glob("*/cmd*_try*.json")):
        argv = json.loads(attempt.read_text())["argv"]
        assert argv[0].endswith("bwrap"), attempt
        assert ("--pidns" in argv) == (attempt.parent.name in ("deploy_setup", "teardown")), attempt
    # The server served this run's port inside the sandbox, and teardown stopped it by the pid it wrote.
    assert f"serving http://127.0.0.1:{state['port']} " in (target / ".aider_fsm" / "server.log").read_text()
    assert "stopped" in next(run_dir.glob("teardown/cmd*_try*.stdout")).read_text()
    assert procs_in(target) == []
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if _reads(p) and str(target).encode() in _reads(p)]


def _reads(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
