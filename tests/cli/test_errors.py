"""Whatever the files on disk hold, every command gives one ``error:`` line and its exit code, never a
traceback; ``can_replay`` answers without raising.

Runs are made once by a real failing run of a small target, then copied and damaged per case. Permission
cases run the CLI without the capabilities that let root read anything, so they hold for root too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fsm_runner import can_replay
from fsm_runner.evidence.layout import DEFAULT_OUT_DIR, EVENTS, JOURNAL, LOCK, RUN_JSON
from tests.conftest import write_target
from tests.helpers import target_files as files

#: Drop the capabilities that let root bypass file permissions (a no-op prefix for other users).
AS_USER = (
    ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if os.geteuid() == 0 and shutil.which("setpriv")
    else []
)
needs_unprivileged = pytest.mark.skipif(
    os.geteuid() == 0 and not AS_USER, reason="running as root without setpriv: permissions cannot bite"
)

RUN_JSON_DAMAGE = {"list": "[]", "empty": "{}", "wrong target": '{"target": "x"}', "bogus mode": None}
JOURNAL_DAMAGE = {"empty object": "{}", "seq only": '{"seq": 1}', "seq a string": '{"seq": "x"}'}
READERS = (["replay", "latest"], ["replay", "latest", "--dry-run"], ["show", "latest"], ["show", "latest", "--json"])


def cli(*args: object, cwd: Path, unprivileged: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [*(AS_USER if unprivileged else []), sys.executable, "-m", "fsm_runner", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def one_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The single ``error:`` line of a failed command (asserting there is one, and no traceback)."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return errors[0]


@pytest.fixture(scope="module")
def failed_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A target whose evaluation fails: its one run is replayable."""
    repo = write_target(tmp_path_factory.mktemp("failed") / "repo", scoring=files.SCORING_BROKEN)
    done = cli("run", ".", cwd=repo)
    assert done.returncode == 1, done.stderr
    return repo


@pytest.fixture
def repo(failed_repo: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(failed_repo, copy, symlinks=True)
    return copy


def the_run(repo: Path) -> Path:
    (run_dir,) = [p for p in (repo / DEFAULT_OUT_DIR).iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.parametrize("case", RUN_JSON_DAMAGE)
def test_a_damaged_run_json(repo: Path, case: str) -> None:
    run_dir = the_run(repo)
    text = RUN_JSON_DAMAGE[case]
    if text is None:  # the right shape with a value no run can have
        text = (run_dir / RUN_JSON).read_text().replace('"mode": "smoke"', '"mode": "huge"')
    (run_dir / RUN_JSON).write_text(text)
    for argv in READERS:
        assert RUN_JSON in one_error(cli(*argv, cwd=repo), 1), argv
    drawn = cli("diagram", "--run", "latest", cwd=repo)  # the diagram needs only the journal
    assert drawn.returncode == 0 and "stateDiagram-v2" in drawn.stdout
    listed = cli("runs", cwd=repo)
    assert listed.returncode == 0 and "unreadable" in listed.stdout
    ok, reason = can_replay(run_dir)
    assert not ok and RUN_JSON in reason


@pytest.mark.parametrize("case", JOURNAL_DAMAGE)
def test_a_damaged_journal_line(repo: Path, case: str) -> None:
    journal = the_run(repo) / JOURNAL
    lines = journal.read_text().splitlines()
    lines.insert(2, JOURNAL_DAMAGE[case])
    journal.write_text("\n".join(lines) + "\n")
    for argv in [*READERS, ["diagram", "--run", "latest"]]:
        assert f"{JOURNAL}:3:" in one_error(cli(*argv, cwd=repo), 1), argv
    listed = cli("runs", "--json", cwd=repo)
    assert listed.returncode == 0 and '"status": "unreadable"' in listed.stdout
    ok, reason = can_replay(the_run(repo))
    assert not ok and f"{JOURNAL}:3:" in reason


def test_a_journal_from_another_machine_is_not_replayed(repo: Path) -> None:
    journal = the_run(repo) / JOURNAL
    lines = journal.read_text().splitlines()
    lines[-1] = lines[-1].replace('"dest": "failed"', '"dest": "nowhere"', 1)
    journal.write_text("\n".join(lines) + "\n")
    ok, reason = can_replay(the_run(repo))
    assert not ok and "dest 'nowhere' not in this machine" in reason
    assert "dest 'nowhere' not in this machine" in one_error(cli("replay", "latest", cwd=repo), 1)
    assert "'nowhere' is not a state" in one_error(cli("diagram", "--run", "latest", cwd=repo), 1)


@pytest.mark.parametrize("value", [None, "", "\0", 3])
def test_can_replay_of_something_that_is_no_run_dir_answers(value: object) -> None:
    ok, reason = can_replay(value)  # type: ignore[arg-type]
    assert not ok and reason


@needs_unprivileged
@pytest.mark.parametrize("what", ["run dir", "journal", "run.json", "events", "lock"])
def test_unreadable_evidence(repo: Path, what: str) -> None:
    run_dir = the_run(repo)
    target = {"run dir": run_dir, "journal": run_dir / JOURNAL, "run.json": run_dir / RUN_JSON}.get(what)
    target = target or run_dir / (EVENTS if what == "events" else LOCK)
    target.chmod(0)
    try:
        replayed = cli("replay", "latest", cwd=repo, unprivileged=True)
        assert one_error(replayed, 1)
        listed = cli("runs", cwd=repo, unprivileged=True)
        if what in ("run dir", "journal", "run.json"):
            assert listed.returncode == 0 and "unreadable" in listed.stdout, listed.stderr
        else:  # the summary needs neither the events nor the lock
            assert listed.returncode == 0 and "failed" in listed.stdout, listed.stderr
        assert "Traceback" not in listed.stderr
    finally:
        target.chmod(0o755 if target.is_dir() else 0o644)


@needs_unprivileged
def test_init_into_a_read_only_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    message = one_error(cli("init", locked, cwd=tmp_path, unprivileged=True), 2)
    assert "Permission denied" in message and "run init in a directory you can write" in message
    assert not any(locked.iterdir())


@needs_unprivileged
def test_validate_an_unreadable_repo(repo: Path) -> None:
    repo.chmod(0)
    try:
        done = cli("validate", repo, cwd=repo.parent, unprivileged=True)
        assert one_error(done, 2).endswith(f"problem(s) in the contract of {repo}")
        assert "cannot read: Permission denied" in done.stdout
    finally:
        repo.chmod(0o755)


@needs_unprivileged
def test_runs_on_an_unreadable_artifacts_dir(repo: Path) -> None:
    artifacts = repo / DEFAULT_OUT_DIR
    artifacts.chmod(0)
    try:
        assert "cannot list runs" in one_error(cli("runs", cwd=repo, unprivileged=True), 1)
    finally:
        artifacts.chmod(0o755)


def test_an_error_while_the_reader_is_gone_is_still_one_quiet_exit(tmp_path: Path) -> None:
    """``fsm-runner show nope --json | true``: the JSON error object cannot be written, nothing else breaks."""
    reader_gone = subprocess.run(
        f"{sys.executable} -m fsm_runner show nope --json 2>err.txt | true", shell=True, cwd=tmp_path, check=False
    )
    assert reader_gone.returncode == 0
    assert "Traceback" not in (tmp_path / "err.txt").read_text()
