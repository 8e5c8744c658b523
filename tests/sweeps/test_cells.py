"""``python -m fsm_runner.sweeps.cells``, the body of a cell's process: what it says about a bad spec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("null", "a cell spec is a JSON object, got NoneType"),
        ("[]", "a cell spec is a JSON object, got list"),
        ('{"target": 5, "llm": "m"}', "key 'target' must be a string, got 5"),
        ('{"target": "t"}', "key 'llm' must be a string, got None"),
        ("{not json", "Expecting property name"),
    ],
)
@pytest.mark.parametrize("watch", [False, True], ids=["whole-stdin", "first-line"])
def test_a_bad_spec_is_named_and_nothing_is_written(tmp_path: Path, spec: str, message: str, watch: bool) -> None:
    result = tmp_path / "cell.result.json"
    argv = [sys.executable, "-m", "fsm_runner.sweeps.cells", *(["--watch-stdin"] if watch else []), str(result)]
    done = subprocess.run(argv, input=spec + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: the cell spec on stdin is not valid: ") and message in done.stderr
    assert "Traceback" not in done.stderr and not result.exists()
