"""Command execution with real bash processes: results, evidence files, retries, budgets, timeouts, the
process groups commands leave behind, secret masking and memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.errors import UsageError
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.commands import (
    CommandResult,
    StageRun,
    leftover_command_groups,
    run_command,
    run_commands,
)
from fsm_runner.execution.policy import SecurityPolicy
from fsm_runner.execution.process import group_alive, kill_group
from tests.execution.conftest import pgrp_members

SECRET = "planted-secret-7f3a9c"
POLICY = SecurityPolicy()
PATH_ONLY = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def stage(tmp_path: Path, cmds: list[str], **overrides: Any) -> StageRun:
    kwargs: dict[str, Any] = {
        "stage": "tests",
        "cwd": tmp_path,
        "env": PATH_ONLY,
        "out_dir": tmp_path / "evidence",
        "timeout": 10.0,
        "retries": 0,
        "total_budget": None,
        "policy": POLICY,
        "redactor": Redactor(),
    }
    kwargs.update(overrides)
    return run_commands(cmds, **kwargs)


# --------------------------------------------------------------------------------------------------------
# results and files
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "exit_code", "outcome"),
    [
        ("exit 0", 0, "exit code 0"),
        ("echo out; echo err >&2; exit 3", 3, "exit code 3"),
        ("false", 1, "exit code 1"),
        ("kill -KILL $$", -9, "killed by SIGKILL"),
        ("no-such-command-xyz", 127, "exit code 127"),
    ],
)
def test_exit_codes(tmp_path: Path, cmd: str, exit_code: int, outcome: str) -> None:
    result = run_command(
        cmd, cwd=tmp_path, env=PATH_ONLY, out_dir=tmp_path / "ev", name="cmd01_try01", timeout=10,
        policy=POLICY, redactor=Redactor(),
    )  # fmt: skip
    assert result.exit_code == exit_code
    assert result.ok is (exit_code == 0)
    assert result.outcome() == outcome
    assert result.argv == ("bash", "-c", cmd)
    assert not result.timed_out and result.blocked is None and result.pgid is None


def test_evidence_files_and_json(tmp_path: Path) -> None:
    run = stage(tmp_path, ["echo to-stdout; echo to-stderr >&2", "printf 'only stdout'"])
    assert run.ok and run.error is None and len(run.results) == 2
    ev = tmp_path / "evidence"
    assert sorted(p.name for p in ev.iterdir()) == [
        f"cmd0{i}_try01.{ext}" for i in (1, 2) for ext in ("json", "stderr", "stdout")
    ]
    assert (ev / "cmd01_try01.stdout").read_text() == "to-stdout\n"
    assert (ev / "cmd01_try01.stderr").read_text() == "to-stderr\n"
    first, second = run.results
    assert first.tail == "to-stderr\n"  # stderr preferred
    assert second.tail == "only stdout"  # stdout when stderr is empty
    doc = json.loads((ev / "cmd01_try01.json").read_text())
    assert doc["argv"] == ["bash", "-c", "echo to-stdout; echo to-stderr >&2"]
    assert doc["cwd"] == str(tmp_path) and doc["exit_code"] == 0 and doc["ok"] is True
    assert doc["index"] == 1 and doc["attempt"] == 1 and doc["timed_out"] is False
    assert doc["stdout_path"] == str(ev / "cmd01_try01.stdout")
    assert doc == first.to_json() | {"duration_s": doc["duration_s"]}
    assert run.to_json()["results"][1]["index"] == 2


def test_tail_is_bounded(tmp_path: Path) -> None:
    run = stage(tmp_path, ["head -c 100000 /dev/zero | tr '\\0' x >&2; echo END >&2; exit 1"])
    tail = run.results[0].tail
    assert tail.endswith("END\n") and len(tail) <= 2048 + 3


def test_env_is_exactly_what_was_given_and_cwd_is_used(tmp_path: Path) -> None:
    os.environ["FSM_TEST_LEAK"] = "leaked"
    try:
        (tmp_path / "work").mkdir()
        stage(
            tmp_path,
            ['echo "foo=$FOO leak=${FSM_TEST_LEAK:-unset} pwd=$PWD"'],
            env={**PATH_ONLY, "FOO": "bar baz"},
            cwd=tmp_path / "work",
        )
    finally:
        del os.environ["FSM_TEST_LEAK"]
    out = (tmp_path / "evidence" / "cmd01_try01.stdout").read_text()
    assert out == f"foo=bar baz leak=unset pwd={tmp_path / 'work'}\n"


def test_stdin_is_closed_unless_interactive(tmp_path: Path) -> None:
    start = time.monotonic()
    run = stage(tmp_path, ["cat; echo rc=$?"], timeout=5)
    assert run.ok and time.monotonic() - start < 3
    assert (tmp_path / "evidence" / "cmd01_try01.stdout").read_text() == "rc=0\n"


def test_interactive_reads_stdin_and_echoes_output(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from fsm_runner.execution.commands import run_command
        from fsm_runner.evidence.redaction import Redactor
        from fsm_runner.execution.policy import SecurityPolicy
        r = run_command("read -r x; echo got:$x", cwd=Path({str(tmp_path)!r}), env={PATH_ONLY!r},
                        out_dir=Path({str(tmp_path / "ev")!r}), name="cmd01_try01", timeout=10,
                        policy=SecurityPolicy(strict=False), redactor=Redactor(), interactive=True)
        print("EXIT", r.exit_code)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], input="hello\n", capture_output=True, text=True, timeout=30
    )
    assert "got:hello" in out.stdout and "EXIT 0" in out.stdout, out.stderr  # shown to the human ...
    assert (tmp_path / "ev" / "cmd01_try01.stdout").read_text() == "got:hello\n"  # ... and recorded


def test_missing_workdir_is_a_clear_failure(tmp_path: Path) -> None:
    run = stage(tmp_path, ["true"], cwd=tmp_path / "nope")
    result = run.results[0]
    assert not run.ok and result.exit_code is None and not result.ok
    assert result.error is not None and "could not start bash in" in result.error
    assert "No such file or directory" in result.error
    assert run.error is not None and "could not start" in run.error and "cmd01_try01.json" in run.error


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="retries must be"):
        stage(tmp_path, ["true"], retries=-1)
    with pytest.raises(UsageError, match="budget must be positive"):
        stage(tmp_path, ["true"], total_budget=0)
    with pytest.raises(UsageError, match="'N'=3 must map a string to a string"):
        stage(tmp_path, ["true"], env={"N": 3})
    with pytest.raises(UsageError, match="timeout"):
        stage(tmp_path, ["true"], timeout=0)


# --------------------------------------------------------------------------------------------------------
# stages: order, retries, budget, callbacks
# --------------------------------------------------------------------------------------------------------


def test_stops_at_first_failing_command(tmp_path: Path) -> None:
    run = stage(tmp_path, ["true", "echo broken >&2; exit 4", "touch never"])
    assert not run.ok and len(run.results) == 2
    assert not (tmp_path / "never").exists()
    evidence = tmp_path / "evidence" / "cmd02_try01.stderr"
    assert run.error == f"tests: command 2/3 `echo broken >&2; exit 4` exit code 4; see {evidence}"


@pytest.mark.parametrize(
    ("cmd", "stream"),
    [
        ("echo boom-on-stdout; exit 1", "stdout"),
        ("echo boom-on-stderr >&2; exit 1", "stderr"),
        ("echo progress; echo boom-on-stderr >&2; exit 1", "stderr"),
        ("exit 1", "stderr"),  # no output at all: stderr, where a failure would have said why
    ],
)
def test_the_error_points_at_the_stream_that_has_the_output(tmp_path: Path, cmd: str, stream: str) -> None:
    run = stage(tmp_path, [cmd])
    result = run.results[0]
    evidence = tmp_path / "evidence" / f"cmd01_try01.{stream}"
    assert run.error is not None and run.error.endswith(f"; see {evidence}")
    assert result.output_path == str(evidence)
    assert result.tail_path == (str(evidence) if cmd != "exit 1" else None)
    assert json.loads(Path(result.result_path or "").read_text())["tail_path"] == result.tail_path
    assert f"boom-on-{stream}" in result.tail or cmd == "exit 1"


def test_retries_until_success(tmp_path: Path) -> None:
    flaky = (
        'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo "try $n" >&2; [ $n -ge 3 ]'
    )
    run = stage(tmp_path, [flaky], retries=2)
    assert run.ok
    assert [(r.index, r.attempt, r.exit_code) for r in run.results] == [(1, 1, 1), (1, 2, 1), (1, 3, 0)]
    names = sorted(p.name for p in (tmp_path / "evidence").glob("*.stderr"))
    assert names == ["cmd01_try01.stderr", "cmd01_try02.stderr", "cmd01_try03.stderr"]
    assert (tmp_path / "evidence" / "cmd01_try02.stderr").read_text() == "try 2\n"


def test_retries_exhausted(tmp_path: Path) -> None:
    run = stage(tmp_path, ["exit 2"], retries=1)
    assert not run.ok and len(run.results) == 2
    assert run.error is not None and "exit code 2 after 2 attempts" in run.error


def test_blocked_command_is_never_started_nor_retried(tmp_path: Path) -> None:
    run = stage(tmp_path, ["sudo touch pwned"], retries=3)
    assert not run.ok and len(run.results) == 1
    result = run.results[0]
    assert result.blocked == "safe-mode denylist: sudo" and result.exit_code is None and not result.ok
    assert not (tmp_path / "pwned").exists()
    assert result.stdout_path is None and result.stderr_path is None
    doc = json.loads(Path(result.result_path or "").read_text())
    assert doc["blocked"] == "safe-mode denylist: sudo" and doc["exit_code"] is None
    assert run.error == (
        "tests: command 1/1 `sudo touch pwned` blocked by the security policy: safe-mode denylist: sudo; "
        f"see {tmp_path}/evidence/cmd01_try01.json"
    )


def test_total_budget_caps_a_command(tmp_path: Path) -> None:
    start = time.monotonic()
    run = stage(
        tmp_path, ["sleep 0.1", "sleep 30", "touch never"], timeout=20, total_budget=0.6, kill_grace=0.2
    )
    assert time.monotonic() - start < 3
    assert run.budget_exceeded and not run.ok
    assert [r.ok for r in run.results] == [True, False]
    assert run.results[1].timed_out
    assert not (tmp_path / "never").exists()
    assert run.error is not None
    assert "stage time budget of 0.6s (max_total_seconds) ran out at command 2/3 `sleep 30`" in run.error


def test_budget_spent_before_a_command_starts(tmp_path: Path) -> None:
    """Time spent outside commands (here a slow on_end hook) counts against the stage budget too."""
    run = stage(tmp_path, ["true", "touch never"], total_budget=0.2, on_end=lambda _: time.sleep(0.25))
    assert run.budget_exceeded and len(run.results) == 1 and run.results[0].ok
    assert not (tmp_path / "never").exists()
    assert (
        run.error
        == "tests: the stage time budget of 0.2s (max_total_seconds) ran out at command 2/2 `touch never`"
    )


def test_callbacks(tmp_path: Path) -> None:
    events: list[tuple[Any, ...]] = []
    run = stage(
        tmp_path,
        ["true", "exit 1"],
        retries=1,
        on_start=lambda cmd, index, attempt: events.append(("start", cmd, index, attempt)),
        on_end=lambda result: events.append(("end", result.index, result.attempt, result.exit_code)),
    )
    assert not run.ok
    assert events == [
        ("start", "true", 1, 1),
        ("end", 1, 1, 0),
        ("start", "exit 1", 2, 1),
        ("end", 2, 1, 1),
        ("start", "exit 1", 2, 2),
        ("end", 2, 2, 1),
    ]


def test_empty_stage_is_ok(tmp_path: Path) -> None:
    run = stage(tmp_path, [])
    assert run.ok and run.results == () and run.last is None


# --------------------------------------------------------------------------------------------------------
# timeouts and process groups
# --------------------------------------------------------------------------------------------------------


def test_timeout_kills_the_whole_group_promptly(tmp_path: Path) -> None:
    start = time.monotonic()
    run = stage(tmp_path, ["echo $$ > pgid; sleep 1000 & wait"], timeout=1)
    elapsed = time.monotonic() - start
    pgid = int((tmp_path / "pgid").read_text())
    assert elapsed < 3
    result = run.results[0]
    assert result.timed_out and not result.ok and result.pgid is None
    assert result.outcome() == "timed out after 1s"
    assert run.error is not None and "timed out after 1s" in run.error
    assert pgrp_members(pgid) == [] and not group_alive(pgid)


def test_term_ignoring_group_is_killed_after_grace(tmp_path: Path) -> None:
    start = time.monotonic()
    run = stage(tmp_path, ["trap '' TERM; echo $$ > pgid; sleep 1000 & wait"], timeout=0.5, kill_grace=0.3)
    assert time.monotonic() - start < 2.5
    assert run.results[0].timed_out
    assert pgrp_members(int((tmp_path / "pgid").read_text())) == []


def test_leftover_background_processes_are_killed_after_a_normal_exit(tmp_path: Path) -> None:
    start = time.monotonic()
    run = stage(tmp_path, ["echo $$ > pgid; (sleep 1000 &); echo done"], timeout=10)
    assert run.ok and run.results[0].pgid is None and run.background_pgids == ()
    assert time.monotonic() - start < 3
    assert pgrp_members(int((tmp_path / "pgid").read_text())) == []


def test_keep_background_reports_the_group_for_teardown(tmp_path: Path, pgids: list[int]) -> None:
    run = stage(tmp_path, ["sleep 1000 & echo started"], keep_background=True)
    assert run.ok
    pgid = run.results[0].pgid
    assert pgid is not None
    pgids.append(pgid)
    assert run.background_pgids == (pgid,)
    assert group_alive(pgid) and len(pgrp_members(pgid)) == 1
    kill_group(pgid, grace=1.0)
    assert not group_alive(pgid) and pgrp_members(pgid) == []


def test_keep_background_without_leftovers_reports_nothing(tmp_path: Path) -> None:
    run = stage(tmp_path, ["echo no server"], keep_background=True)
    assert run.ok and run.background_pgids == () and run.results[0].pgid is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_just_after_the_command_started_still_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    """Python raises a signal's exception between any two bytecodes. One that lands after the command has
    started, before the runner holds it, must still end it: the signal is sent from exactly there."""
    from fsm_runner.execution import commands

    real = commands.process_start_time
    sent: list[int] = []

    def signalled_in_the_window(pid: int) -> int | None:
        if not sent:  # once: the cleanup may read start times too
            sent.append(pid)
            os.kill(os.getpid(), signum)
        return real(pid)

    def raising(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    monkeypatch.setattr(commands, "process_start_time", signalled_in_the_window)
    previous = signal.signal(signal.SIGTERM, raising)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_command(
                "echo $$ > pid; exec sleep 30", cwd=tmp_path, env=PATH_ONLY, out_dir=tmp_path / "ev",
                name="cmd01_try01", timeout=60, policy=POLICY, redactor=Redactor(),
            )  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, previous)
    record = json.loads((tmp_path / "ev" / "cmd01_try01.json").read_text())
    assert record["running"] is True and isinstance(record["pgid"], int), "on record before the signal acted"
    deadline = time.monotonic() + 5
    while group_alive(record["pgid"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not group_alive(record["pgid"]), "the command outlived the interrupt"


def test_a_group_kept_for_teardown_is_findable_from_its_attempt_file(tmp_path: Path, pgids: list[int]) -> None:
    """A deploy command that ended left its services running for teardown; a runner killed before it
    recorded the deployment leaves them known only to the attempt file, which must be enough to end them."""
    run = stage(tmp_path, ["sleep 1000 & echo started", "echo no group left"], keep_background=True)
    kept = run.results[0].pgid
    assert run.ok and kept is not None and run.results[1].pgid is None
    pgids.append(kept)
    assert json.loads((tmp_path / "evidence" / "cmd01_try01.json").read_text())["running"] is False
    assert leftover_command_groups(tmp_path / "evidence") == [kept]
    kill_group(kept, grace=0.5)
    assert leftover_command_groups(tmp_path / "evidence") == []


def test_a_killed_runner_leaves_a_findable_running_group(tmp_path: Path, pgids: list[int]) -> None:
    """SIGKILL of the runner cannot stop its command; the in-flight JSON lets replay find and end it."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from fsm_runner.execution.commands import run_commands
        from fsm_runner.evidence.redaction import Redactor
        from fsm_runner.execution.policy import SecurityPolicy
        run_commands(["true", "echo $$ > pgid; sleep 1000"], stage="evaluate", cwd=Path({str(tmp_path)!r}),
                     env={PATH_ONLY!r}, out_dir=Path({str(tmp_path / "run" / "evaluate")!r}), timeout=None,
                     retries=0, total_budget=None, policy=SecurityPolicy(), redactor=Redactor())
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script])
    try:
        # The record is written just after the command starts: under load the command may get there first.
        record = tmp_path / "run" / "evaluate" / "cmd02_try01.json"
        deadline = time.monotonic() + 20
        while not record.exists() or not (tmp_path / "pgid").exists() or not (tmp_path / "pgid").read_text():
            assert time.monotonic() < deadline and runner.poll() is None
            time.sleep(0.02)
    finally:
        runner.kill()
        runner.wait()
    pgid = int((tmp_path / "pgid").read_text())
    pgids.append(pgid)
    assert group_alive(pgid)  # orphaned by the dead runner
    doc = json.loads((tmp_path / "run" / "evaluate" / "cmd02_try01.json").read_text())
    assert doc["running"] is True and doc["pgid"] == pgid and doc["exit_code"] is None
    assert json.loads((tmp_path / "run" / "evaluate" / "cmd01_try01.json").read_text())["running"] is False
    assert leftover_command_groups(tmp_path / "run") == [pgid]
    kill_group(pgid, grace=0.5)
    assert leftover_command_groups(tmp_path / "run") == []


# --------------------------------------------------------------------------------------------------------
# secrets
# --------------------------------------------------------------------------------------------------------


def test_planted_secret_never_reaches_evidence(tmp_path: Path) -> None:
    env = {**PATH_ONLY, "SERVICE_API_KEY": SECRET}
    cmds = [
        'echo "key=$SERVICE_API_KEY"; echo "err $SERVICE_API_KEY" >&2; exit 1',
        f"echo {SECRET}",
        'yes "$SERVICE_API_KEY" | head -c 3000000',  # many chunk boundaries
    ]
    redactor = Redactor.from_env(env)
    for i, cmd in enumerate(cmds, 1):
        run = stage(tmp_path, [cmd], env=env, redactor=redactor, out_dir=tmp_path / "evidence" / str(i))
        assert SECRET not in (run.error or "")
        assert all(SECRET not in r.tail for r in run.results)
    files = [p for p in (tmp_path / "evidence").rglob("*") if p.is_file()]
    assert len(files) == 9
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert (tmp_path / "evidence" / "1" / "cmd01_try01.stdout").read_text() == "key=***\n"
    assert json.loads((tmp_path / "evidence" / "2" / "cmd01_try01.json").read_text())["cmd"] == "echo ***"


def test_output_of_a_kept_service_is_not_replaced_while_it_writes(tmp_path: Path, pgids: list[int]) -> None:
    """Masking replaces a file: the output of a service left running is masked later, by whoever ends it."""
    env = {**PATH_ONLY, "SERVICE_API_KEY": SECRET}
    service = '(for i in $(seq 1 400); do echo "line $i $SERVICE_API_KEY"; sleep 0.01; done) & echo "up $SERVICE_API_KEY"'
    redactor = Redactor.from_env(env)
    run = stage(tmp_path, [service], env=env, redactor=redactor, keep_background=True)
    result = run.results[0]
    assert run.ok and result.pgid is not None and SECRET not in result.tail
    pgids.append(result.pgid)
    stdout = Path(str(result.stdout_path))
    inode = stdout.stat().st_ino
    time.sleep(0.3)
    kill_group(result.pgid, grace=0.5)
    assert stdout.stat().st_ino == inode  # the service wrote to the evidence file all along
    redactor.mask_file(stdout)
    lines = stdout.read_text().splitlines()
    assert lines[0] == "up ***" and len(lines) > 10
    assert lines[1:] == [f"line {i} ***" for i in range(1, len(lines))]  # none lost


def test_the_tail_of_unmasked_output_never_shows_part_of_a_secret(tmp_path: Path, pgids: list[int]) -> None:
    env = {**PATH_ONLY, "SERVICE_API_KEY": SECRET}
    # The last 2048 bytes start ten characters before the end of the secret.
    printing = "python3 -c 'import os; print(\"a\" * 100 + os.environ[\"SERVICE_API_KEY\"] + \"b\" * 2037)'"
    run = stage(tmp_path, [f"sleep 1000 & {printing}"], env=env, redactor=Redactor.from_env(env), keep_background=True)
    result = run.results[0]
    assert result.pgid is not None
    pgids.append(result.pgid)
    assert result.tail.startswith("...") and result.tail.rstrip().endswith("b" * 2000)
    assert SECRET[-6:] not in result.tail and SECRET[:6] not in result.tail


def test_an_interrupted_command_is_masked_before_the_interrupt_goes_on(tmp_path: Path) -> None:
    env = {**PATH_ONLY, "SERVICE_API_KEY": SECRET}
    marker = tmp_path / "printed"
    cmd = f'echo "key=$SERVICE_API_KEY"; echo "err $SERVICE_API_KEY" >&2; touch {marker}; sleep 30'
    interrupter = threading.Thread(target=_interrupt_when, args=(marker,), daemon=True)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        stage(tmp_path, [cmd], env=env, redactor=Redactor.from_env(env))
    interrupter.join()
    out = tmp_path / "evidence" / "cmd01_try01.stdout"
    assert out.read_text() == "key=***\n"
    assert (tmp_path / "evidence" / "cmd01_try01.stderr").read_text() == "err ***\n"


def _interrupt_when(marker: Path) -> None:
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGINT)


def test_large_output_does_not_grow_runner_memory(tmp_path: Path) -> None:
    """500 MB of output (and masking it, with no output cap) must not raise the runner's peak RSS by more
    than 50 MB.

    Measured with VmHWM, the high-water mark of the child interpreter's own memory: ru_maxrss would also
    count the pytest process it was forked from (Linux keeps the pre-exec peak in ru_maxrss).
    """
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from fsm_runner.execution.commands import run_command
        from fsm_runner.evidence.redaction import Redactor
        from fsm_runner.execution.policy import SecurityPolicy

        def hwm_kb():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

        env = {{"PATH": {PATH_ONLY["PATH"]!r}, "BIG_TOKEN": "token-abcdef-123"}}
        kwargs = dict(cwd=Path({str(tmp_path)!r}), env=env, out_dir=Path({str(tmp_path / "ev")!r}),
                      timeout=120, policy=SecurityPolicy(), redactor=Redactor.from_env(env),
                      max_output_bytes=0)
        run_command("echo warm-up $BIG_TOKEN", name="warm", **kwargs)
        before = hwm_kb()
        r = run_command("head -c 500000000 /dev/zero; echo $BIG_TOKEN", name="big", **kwargs)
        after = hwm_kb()
        print("RESULT", r.exit_code, before, after)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, out.stderr
    _, code, before, after = line.split()
    assert code == "0"
    big = tmp_path / "ev" / "big.stdout"
    assert big.stat().st_size == 500_000_000 + len("***\n")
    with open(big, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        assert fh.read() == b"***\n"  # the masking pass really ran over the whole file
    assert int(after) - int(before) < 50 * 1024, (before, after)


def test_command_result_validates() -> None:
    with pytest.raises((TypeError, ValueError)):
        CommandResult(cmd="x", argv=("bash", "-c", "x"), cwd="/", index=0)
    result = CommandResult(cmd="x", argv=["bash", "-c", "x"], cwd="/", exit_code=0)
    assert result.ok and result.argv == ("bash", "-c", "x")
    assert CommandResult(cmd="x", argv=(), cwd="/", exit_code=0, timed_out=True).outcome() == "timed out"


def test_signal_names_in_outcome() -> None:
    assert (
        CommandResult(cmd="x", argv=(), cwd="/", exit_code=-signal.SIGTERM).outcome() == "killed by SIGTERM"
    )


# --------------------------------------------------------------------------------------------------------
# output cap
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "lines", "kept_all"),
    [(4096, 20000, False), (65536, 20000, False), (0, 20000, True), (1 << 20, 2000, True)],
    ids=["4KiB", "64KiB", "no-cap", "under-the-cap"],
)
def test_output_over_the_cap_keeps_head_and_tail_and_records_the_cut(
    tmp_path: Path, cap: int, lines: int, kept_all: bool
) -> None:
    # Numbered lines on both streams, then a failure: the error's tail must be the real last lines.
    script = f"for i in $(seq 1 {lines}); do echo out-$i; echo err-$i >&2; done; echo the-real-end >&2; exit 3"
    run = stage(tmp_path, [script], max_output_bytes=cap)
    result = run.results[0]
    assert result.exit_code == 3
    doc = json.loads(Path(result.result_path or "").read_text())
    for stream, prefix, last in (("stdout", "out", f"out-{lines}\n"), ("stderr", "err", "the-real-end\n")):
        data = Path(getattr(result, f"{stream}_path")).read_bytes()
        full = sum(len(f"{prefix}-{i}\n") for i in range(1, lines + 1)) + (13 if stream == "stderr" else 0)
        assert data.startswith(f"{prefix}-1\n{prefix}-2\n".encode()) and data.endswith(last.encode())
        cut = doc[f"{stream}_cut_bytes"]
        assert cut == getattr(result, f"{stream}_cut_bytes")
        if kept_all:
            assert cut == 0 and len(data) == full and b"bytes cut here" not in data
        else:
            marker = f"\n[fsm-runner: {cut} bytes cut here; artifacts.max_output_bytes is {cap}]\n".encode()
            assert cut == full - cap and len(data) == cap + len(marker)
            assert data[cap // 2 : cap // 2 + len(marker)] == marker
    assert result.tail.rstrip().endswith(f"err-{lines}\nthe-real-end")


def test_capping_happens_after_masking_so_no_half_secret_survives(tmp_path: Path) -> None:
    # The secret straddles where the head ends: masked first, it can never be cut in two.
    cap = 4096
    pad = cap // 2 - len(SECRET) // 2
    script = f"head -c {pad} /dev/zero | tr '\\0' a; printf %s \"$TOKEN_X\"; head -c 100000 /dev/zero | tr '\\0' b"
    env = {**PATH_ONLY, "TOKEN_X": SECRET}
    run = stage(tmp_path, [script], env=env, redactor=Redactor.from_env(env), max_output_bytes=cap)
    data = Path(run.results[0].stdout_path or "").read_bytes()
    assert run.results[0].stdout_cut_bytes > 0
    assert SECRET[: len(SECRET) // 2].encode() not in data
    assert SECRET[len(SECRET) // 2 :].encode() not in data


#: Each reads an output file a command replaced with a FIFO (no writer ever opens it): none may wait on it.
FIFO_READERS = {
    "stage": "from tests.execution.test_commands import stage\n"
    "run = stage(tmp, ['rm evidence/cmd01_try01.stderr; mkfifo evidence/cmd01_try01.stderr; exit 1'])\n"
    "assert not run.ok, run\n",
    "last_output_line": "from fsm_runner.execution.outputs import last_output_line\n"
    "os.mkfifo(tmp / 'out')\n"
    "assert last_output_line(tmp / 'out', Redactor()) == ''\n",
    "live": "from fsm_runner.cli.live import last_output_line\n"
    "(tmp / 'tests').mkdir()\n"
    "os.mkfifo(tmp / 'tests' / 'cmd01_try01.stdout')\n"
    "assert last_output_line(tmp, 0) == ''\n",
    "attempt_files": "from fsm_runner.execution.commands import leftover_command_groups\n"
    "from fsm_runner.execution.outputs import cap_stage_outputs\n"
    "os.mkfifo(tmp / 'cmd01_try01.json')\n"
    "cap_stage_outputs(tmp, 10)\n"
    "assert leftover_command_groups(tmp) == []\n",
}


@pytest.mark.parametrize("reader", sorted(FIFO_READERS))
def test_an_output_file_replaced_by_a_fifo_is_not_waited_on(tmp_path: Path, reader: str) -> None:
    script = "import os, sys\nfrom pathlib import Path\nfrom fsm_runner.evidence.redaction import Redactor\n"
    script += f"sys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
    script += f"tmp = Path({str(tmp_path)!r})\nos.chdir(tmp)\n" + FIFO_READERS[reader]
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, cwd=Path.cwd()
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{reader} waited on a FIFO")
    assert done.returncode == 0, done.stderr


def test_a_late_writer_appends_to_the_capped_output(tmp_path: Path) -> None:
    late, go, away = tmp_path / "late-done", tmp_path / "go", tmp_path / "away"
    # a process in a session of its own outlives the command, and writes to its stdout once the cut is made;
    # the command waits until it has left the command's group (the rest of the group is killed at the end)
    writer = f"touch {away}; while [ ! -e {go} ]; do sleep 0.02; done; echo LATE; touch {late}"
    script = (
        f'head -c 200000 /dev/zero | tr "\\0" a; (setsid sh -c "{writer}" &); '
        f"while [ ! -e {away} ]; do sleep 0.01; done; echo done"
    )
    run = stage(tmp_path, [script], max_output_bytes=10_000)
    assert run.ok, run.error
    go.touch()
    out = tmp_path / "evidence" / "cmd01_try01.stdout"
    assert run.results[0].stdout_cut_bytes > 0
    deadline = time.monotonic() + 10
    while not late.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert late.exists(), "the late writer did not write within 10s"
    data = out.read_bytes()
    assert data.endswith(b"done\nLATE\n") and b"\0" not in data
    assert len(data) < 11_000
