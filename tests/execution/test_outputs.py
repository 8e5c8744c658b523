"""A command's output files: capped in place with head and tail kept, once, whatever the size."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm_runner.execution.outputs import cap_output


@pytest.mark.parametrize("size", [4096 + 100, 4096 + 256, 4096 + 257, 10**6])
def test_capping_twice_cuts_once(tmp_path: Path, size: int) -> None:
    output = tmp_path / "out"
    data = bytes(i % 251 for i in range(size))
    output.write_bytes(data)
    cut = cap_output(output, 4096)
    once = output.read_bytes()
    assert cut == (size - 4096 if size > 4096 + 256 else 0)
    assert once[:2048] == data[:2048] and once[-2048:] == data[-2048:]
    assert cap_output(output, 4096) == 0 and output.read_bytes() == once
