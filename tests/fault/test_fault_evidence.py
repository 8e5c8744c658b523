"""An evidence directory that cannot hold data fails the run up front, with a clear EvidenceError.

Tests run as root, so permission bits cannot make a directory unwritable; instead the artifacts dir is put
under a regular file (ENOTDIR) or on a tiny tmpfs that is already full (ENOSPC). Mounting needs privileges:
the tmpfs cases skip cleanly where ``mount`` is not permitted.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.errors import EvidenceError
from tests.conftest import TargetFactory, pid_alive, procs_in, service_pid
from tests.helpers import target_files as files

PIPELINE = """\
version: 1
tests:
  cmds:
    - touch ran_tests
"""


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of the given size (``64k``) under tmp_path; skips when mounting is not permitted."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mount_point = tmp_path / f"tmpfs-{size}"
        mount_point.mkdir()
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError:
            pytest.skip("no mount command")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(mount_point)
        return mount_point

    yield mount
    for mount_point in mounted:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def tiny_tmpfs(mount_tmpfs: Callable[[str], Path]) -> Path:
    return mount_tmpfs("64k")


def _fill(directory: Path) -> None:
    """Write until the filesystem is full."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        (directory / "probe").write_bytes(b"x" * 4096)


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pipeline.yml").write_text(PIPELINE)
    return repo


def _unwritable(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """An artifacts dir that cannot be used, and the reason the error must name."""
    if kind == "under-a-file":
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("a regular file where a directory is expected\n")
        return blocker / "artifacts", "Not a directory"
    mount_point: Path = request.getfixturevalue("tiny_tmpfs")
    _fill(mount_point)
    return mount_point / "artifacts", "No space left on device"


@pytest.mark.parametrize("kind", ["under-a-file", "full-tmpfs"])
def test_setup_raises_evidence_error_before_anything_runs(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    repo = _repo(tmp_path)
    artifacts, reason = _unwritable(kind, tmp_path, request)
    with pytest.raises(EvidenceError) as caught:
        fsm_runner.setup(repo, artifacts_dir=artifacts)
    message = str(caught.value)
    assert str(artifacts) in message and reason in message
    assert "artifacts directory" in message  # says what to do about it
    assert not (repo / "ran_tests").exists()


@pytest.mark.parametrize("kind", ["under-a-file", "full-tmpfs"])
def test_cli_run_fails_with_one_error_line_and_runs_no_command(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    repo = _repo(tmp_path)
    artifacts, reason = _unwritable(kind, tmp_path, request)
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--artifacts-dir", str(artifacts)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # an EvidenceError, not a usage error
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.stderr.startswith("error: ") and len(errors) == 1 and reason in errors[0], done.stderr
    assert not (repo / "ran_tests").exists(), "a stage command ran although no evidence could be written"


def test_disk_filling_up_mid_run_gives_a_clear_error(tmp_path: Path, tiny_tmpfs: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pipeline.yml").write_text(
        "version: 1\ntests:\n  cmds:\n"
        '    - head -c 1M /dev/zero > "$AIDER_FSM_ARTIFACTS_DIR/fill" || true\n'
        "    - touch ran_after_fill\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--artifacts-dir", str(tiny_tmpfs)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "No space left on device" in errors[0], done.stderr
    assert not (repo / "ran_after_fill").exists(), "the run went on without evidence"


def test_disk_filling_up_while_deployed_still_tears_down(
    make_target: TargetFactory, mount_tmpfs: Callable[[str], Path]
) -> None:
    disk = mount_tmpfs("512k")  # room for the phases before rollout, which then fills it
    fill = '    - head -c 1M /dev/zero > "$AIDER_FSM_ARTIFACTS_DIR/fill" || true\n'
    repo = make_target(
        pipeline=files.PIPELINE.replace("    - python3 rollout.py\n", f"{fill}    - python3 rollout.py\n")
    )
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "fsm_runner",
                "run",
                str(repo),
                "--llm",
                "m",
                "--artifacts-dir",
                str(disk),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        service = service_pid(repo)
        assert service is not None, done.stderr
        assert not pid_alive(service), "the deployed service outlived a run that hit a full disk"
        assert procs_in(repo) == []
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "No space left on device" in done.stderr
    finally:
        for pid in procs_in(repo):
            os.kill(pid, signal.SIGKILL)
