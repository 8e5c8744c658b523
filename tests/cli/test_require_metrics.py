"""A pipeline that scores nothing: the run says how to allow that, from Python and on the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINES = {
    "no-metrics-path": "version: 1\nevaluation:\n  run_cmds: [echo evaluated]\n",
    "no-evaluation": "version: 1\ntests:\n  cmds: [echo tested]\n",
}


def fsm_run(repo: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("pipeline", PIPELINES.values(), ids=PIPELINES.keys())
def test_a_run_without_metrics_names_the_option_that_allows_it(tmp_path: Path, pipeline: str) -> None:
    (tmp_path / "pipeline.yml").write_text(pipeline)
    refused = fsm_run(tmp_path)
    assert refused.returncode == 1, refused.stderr
    error = json.loads(refused.stdout)["error"]["message"]
    assert "--no-require-metrics" in error and "require_metrics=False" in error
    allowed = fsm_run(tmp_path, "--no-require-metrics")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    result = json.loads(allowed.stdout)
    assert result["ok"] is True and result["score"] is None
