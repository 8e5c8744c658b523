"""Shared fixtures: a small but complete target repository built in a tmp dir."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import target_files as files

TargetFactory = Callable[..., Path]

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # pytest started in the background by a non-interactive shell: every child would inherit "ignore
    # SIGINT" and the interrupt tests could not interrupt anything. A handler (unlike SIG_IGN) is reset
    # to the default in children at exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def write_target(root: Path, *, pipeline: str = files.PIPELINE, bootstrap: str | None = files.BOOTSTRAP,
                 scoring: str = files.SCORING_GOOD) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / ".aider_fsm").mkdir(exist_ok=True)
    (root / "pipeline.yml").write_text(pipeline)
    if bootstrap is not None:
        (root / ".aider_fsm" / "bootstrap.yml").write_text(bootstrap)
    for name, text in (("svc.py", files.SVC), ("probe.py", files.PROBE), ("stage.py", files.STAGE),
                       ("rollout.py", files.ROLLOUT), ("evaluate.py", files.EVALUATE), ("stop.py", files.STOP)):
        (root / name).write_text(text)
    (root / ".aider_fsm" / "scoring.py").write_text(scoring)
    return root


@pytest.fixture
def make_target(tmp_path: Path) -> TargetFactory:
    def factory(name: str = "target", **kwargs: str | None) -> Path:
        return write_target(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return factory


def service_pid(repo: Path) -> int | None:
    """The service's pid, or None when it has not written its pid file (yet, or not whole)."""
    try:
        return int((repo / ".aider_fsm" / "svc.pid").read_text())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def procs_in(repo: Path) -> list[int]:
    """Live processes whose working directory is inside ``repo``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if (cwd == repo or repo in cwd.parents) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def procs_under(root: Path) -> list[int]:
    """Live processes whose working directory or command line is inside ``root`` (a cell's runner process
    names its result file under ``root``; the commands of its run work in a copy under ``root``)."""
    found = set(procs_in(root)) - {os.getpid()}  # a test may work in ``root`` itself
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        if str(root) in cmdline and pid_alive(int(entry.name)):
            found.add(int(entry.name))
    return sorted(found)


def wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Wait until a child runner reaches a point it marks with ``path`` (it must not exit first)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the runner exited with {proc.returncode} before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout}s"
        time.sleep(0.02)


#: Cross-cutting suites, marked so that ``pytest -m "not fault and not e2e"`` is a quick run.
_SLOW_SUITES = {"fault": "fault", "examples": "e2e", "test_docs.py": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        first = item.path.relative_to(tests_dir).parts[0]
        if first in _SLOW_SUITES:
            item.add_marker(getattr(pytest.mark, _SLOW_SUITES[first]))


#: Variables a CI machine or a user's shell may set that the runner or its stage environment reads.
#: Tests start from none of them, so the suite means the same on a laptop and in CI (where ``CI=true``).
_AMBIENT = ("CI", "GIT_TERMINAL_PROMPT", "DEBIAN_FRONTEND", "PIP_NO_INPUT")
_AMBIENT_PREFIXES = ("AIDER_", "FSM_RUNNER_")


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name in _AMBIENT or name.startswith(_AMBIENT_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _no_leftover_services(tmp_path: Path) -> Iterator[None]:
    """A test that leaves the fixture service running fails, and the process is still cleaned up."""
    yield
    leftovers = []
    for pid_file in tmp_path.glob("*/.aider_fsm/svc.pid"):
        pid = int(pid_file.read_text() or 0)
        if pid and pid_alive(pid):
            leftovers.append(pid)
            os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"services left running: {leftovers}"


ARITH_BENCH = Path(__file__).resolve().parents[1] / "examples" / "arith_bench"


@pytest.fixture(scope="session")
def arith_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real runs of a copy of examples/arith_bench, one per model (``exact`` scores 1.0, ``sloppy``
    0.75), by llm; made once for every test that only reads them."""
    import shutil

    import fsm_runner

    target = tmp_path_factory.mktemp("arith_runs") / "arith_bench"
    shutil.copytree(ARITH_BENCH, target, ignore=shutil.ignore_patterns(".venv", "artifacts", "__pycache__"))
    runs = {}
    for llm in ("exact", "sloppy"):
        with fsm_runner.setup(target) as sess:
            result = sess.evaluate(llm=llm, mode="smoke")
            assert result.ok, result.error
        runs[llm] = sess.run_dir
    return runs
