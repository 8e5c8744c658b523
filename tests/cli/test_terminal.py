"""What the CLI prints is safe for a terminal: control characters a target wrote are shown, never acted on,
and the secrets of the run never appear, not even on the status line of a command still running."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from fsm_runner.cli.output import terminal_text
from tests.conftest import TargetFactory

#: Bytes a terminal acts on: C0 controls but newline and tab, DEL, and C1 controls (UTF-8 encoded).
RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
#: Erases the screen, retitles the terminal, moves up and rewrites a line, and a C1 CSI.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07\x1b[1A\rfake ok\x9b31m"


def cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "fsm_runner", *map(str, args)]
    return subprocess.run(argv, capture_output=True, env=env, timeout=120)


def assert_inert(*outputs: bytes) -> None:
    for output in outputs:
        assert not RAW_CONTROL.search(output), RAW_CONTROL.findall(output)


@pytest.mark.parametrize(
    "text, shown",
    [
        ("plain\tline\nnext", "plain\tline\nnext"),
        ("\x1b[2J", "\\x1b[2J"),
        ("bell\x07 cr\r del\x7f nul\x00", "bell\\x07 cr\\x0d del\\x7f nul\\x00"),
        ("c1 \x9b31m \x85", "c1 \\x9b31m \\x85"),
        ("ünïcödé ✓", "ünïcödé ✓"),
    ],
)
def test_terminal_text(text: str, shown: str) -> None:
    assert terminal_text(text) == shown


def _escaping_target(root: Path) -> Path:
    """A target whose failing test command prints escape sequences (quoted in the error), and whose
    evaluation writes them into metrics strings (the score among them)."""
    root.mkdir()
    (root / "noisy.py").write_text(f"import sys\nsys.stderr.write({HOSTILE!r} + '\\n')\nsys.exit(3)\n")
    metrics = {"ok": True, "score": f"9{HOSTILE}", "note": HOSTILE}
    (root / "ev.py").write_text(f"import json\njson.dump({metrics!r}, open('m.json', 'w'))\n")
    (root / "pipeline.yml").write_text(
        "version: 1\ntests:\n  cmds: python3 noisy.py\nevaluation:\n  run_cmds: python3 ev.py\n"
        "  metrics_path: m.json\n  required_keys: [ok]\n"  # a required score would have to be a number
    )
    return root


def test_escape_sequences_from_a_target_are_never_printed_raw(tmp_path: Path) -> None:
    repo = _escaping_target(tmp_path / "repo")
    failed = cli("run", repo)
    assert failed.returncode == 1
    assert b"\\x1b[2J\\x1b]0;pwned\\x07" in failed.stdout  # shown, as text
    (repo / "pipeline.yml").write_text((repo / "pipeline.yml").read_text().replace("noisy.py", "-V"))
    passed = cli("run", repo)
    assert passed.returncode == 0, passed.stderr
    assert b"score    9\\x1b[2J" in passed.stdout
    # The failed run, then the passed one (run ids of one second sort at random; run.json is written last).
    runs = sorted(
        (repo / ".aider_fsm" / "artifacts").iterdir(), key=lambda p: (p / "run.json").stat().st_mtime_ns
    )
    planted = repo / ".aider_fsm" / "artifacts" / f"20200101T000000Z-{HOSTILE[:4]}"  # named by anyone
    planted.mkdir()
    (planted / "journal.jsonl").write_text("not a journal\n")
    outputs = [failed.stdout, failed.stderr, passed.stdout, passed.stderr]
    for args in (["show", runs[0]], ["show", runs[1]], ["runs", repo]):
        shown = cli(*args)
        assert shown.returncode == 0, shown.stderr
        outputs += [shown.stdout, shown.stderr]
    assert b"note=" in outputs[-4] and b"\\x9b31m" in outputs[-4]  # the metrics line of the passed run
    assert b"20200101T000000Z-\\x1b[2J" in outputs[-2]
    assert_inert(*outputs)


def test_validate_and_errors_print_inert_text(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pipeline.yml").write_text('version: 1\n"bad\\e[2Jkey": 1\n')
    checked = cli("validate", repo)
    assert checked.returncode == 2 and b"bad\\x1b[2Jkey" in checked.stdout
    missing = cli("validate", tmp_path / "no\x1b]0;title\x07where")
    assert missing.returncode == 2 and b"no\\x1b]0;title\\x07where" in missing.stderr
    assert_inert(checked.stdout, checked.stderr, missing.stdout, missing.stderr)


def test_an_error_line_masks_the_callers_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "MY_API_KEY": "sekrit-in-a-path-123"}
    done = cli("validate", tmp_path / "sekrit-in-a-path-123", env=env)
    assert done.returncode == 2
    assert b"sekrit" not in done.stderr and b"/***: not a directory" in done.stderr


def test_the_status_line_masks_a_running_commands_output(make_target: TargetFactory) -> None:
    """On a terminal, the status line shows the last line a running command printed: not yet masked in its
    file, it is masked on the way to the screen."""
    pipeline = "version: 1\ntests:\n  cmds: 'echo \"token $MY_API_KEY\"; sleep 1.2'\n"
    repo = make_target(pipeline=pipeline)
    master, slave = pty.openpty()
    env = {**os.environ, "MY_API_KEY": "sekrit-on-the-status-line"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fsm_runner", "run", str(repo), "--until", "tests"],
            stdout=subprocess.PIPE,
            stderr=slave,
            env=env,
            timeout=60,
        )
        os.close(slave)
        status = b""
        while select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            status += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"| token ***" in status and b"sekrit" not in status + proc.stdout
