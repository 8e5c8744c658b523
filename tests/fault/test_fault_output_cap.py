"""A command that writes far more than ``artifacts.max_output_bytes`` leaves a run dir of bounded size: each
output file keeps its head and tail, says in one line what was cut, and the attempt file records the cut."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fsm_runner.contract.fields import DEFAULT_MAX_OUTPUT_BYTES

GIB = 1 << 30
MIB = 1 << 20
FIRST = b"FIRST-BYTES-OF-THE-OUTPUT\n"
LAST = b"\nLAST-BYTES-OF-THE-OUTPUT\n"


def _dir_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize(
    ("size", "cap", "stream"),
    [(GIB, None, "stdout"), (64 * MIB, MIB, "stderr")],
    ids=["1GiB-default-cap", "64MiB-stderr-1MiB-cap"],
)
def test_huge_output_is_capped_to_head_and_tail(tmp_path: Path, size: int, cap: int | None, stream: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    redirect = " 1>&2" if stream == "stderr" else ""
    artifacts = f"artifacts:\n  max_output_bytes: {cap}\n" if cap else ""
    (repo / "pipeline.yml").write_text(
        "version: 1\n"
        f"{artifacts}"
        "tests:\n  cmds:\n"
        f"    - \"{{ printf '{FIRST.decode().strip()}\\\\n'; head -c {size} /dev/zero; "
        f"printf '\\\\n{LAST.decode().strip()}\\\\n'; }}{redirect}\"\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--until", "tests"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    runs = list((repo / ".aider_fsm" / "artifacts").iterdir())
    assert len(runs) == 1
    run_dir = runs[0]
    limit = cap or DEFAULT_MAX_OUTPUT_BYTES
    assert _dir_size(run_dir) < limit + MIB
    output = next(run_dir.glob(f"tests*/cmd01_try01.{stream}"))
    data = output.read_bytes()
    assert data.startswith(FIRST) and data.endswith(LAST)
    written = len(FIRST) + size + len(LAST)
    record = json.loads(output.with_suffix(".json").read_text())
    cut = record[f"{stream}_cut_bytes"]
    assert cut == written - limit
    assert f"[fsm-runner: {cut} bytes cut here; artifacts.max_output_bytes is {limit}]".encode() in data
    assert len(data) < limit + 200
