"""The bwrap sandbox, for real: runs of small targets whose commands try to write where they may not, leave
``setsid`` processes behind, and reach the host's loopback; a command repair agent held to the same walls;
what setup and validate say when bwrap is missing; and who may tighten or loosen the sandbox.

Tests that need a working bwrap are skipped, with the probe's reason, only where it cannot work at all.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm_runner import replay, setup
from fsm_runner.errors import UsageError
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.execution.commands import run_command
from fsm_runner.execution.policy import SecurityPolicy
from fsm_runner.execution.process import group_alive
from fsm_runner.execution.sandbox import Sandbox, resolve_sandbox, sandbox_problem
from fsm_runner.repair import CommandAgent
from tests.helpers.context import write_repo

BWRAP_PROBLEM = sandbox_problem("host")
NETNS_PROBLEM = sandbox_problem("none")
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"the sandbox cannot work here: {BWRAP_PROBLEM}")
needs_netns = pytest.mark.skipif(
    NETNS_PROBLEM is not None, reason=f"network: none cannot work here: {NETNS_PROBLEM}"
)
SANDBOXED = "version: 1\nsecurity: {sandbox: bwrap}\n"


def processes_named(marker: str) -> list[int]:
    """Live processes on the host whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def attempts(run_dir: Path, phase: str) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / phase).glob("cmd*_try*.json"))]


def run_until(repo: Path, phase: str, **options: object) -> tuple[bool, Path]:
    with setup(repo, **options) as sess:  # type: ignore[arg-type]
        result = sess.advance(phase)
        return result.ok, sess.run_dir


# -- the file system ------------------------------------------------------------------------------------------


@pytest.fixture
def home_marker() -> Iterator[Path]:
    """A file in the real $HOME that a sandboxed stage tries to create (removed whatever happens)."""
    path = Path.home() / f".fsm-sandbox-test-{uuid.uuid4().hex[:8]}"
    yield path
    path.unlink(missing_ok=True)


@needs_bwrap
@pytest.mark.parametrize(
    "where",
    [
        "dir outside the repo",
        "$HOME",
        "/var/tmp",
        "pipeline.yml",
        "bootstrap.yml",
        "replace pipeline",
        "rename the folder above bootstrap.yml",
        "rename the runs",
    ],
)
def test_a_stage_cannot_write_outside_the_repo_nor_the_contract(
    tmp_path: Path, home_marker: Path, where: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    var_tmp = Path("/var/tmp") / f"fsm-sandbox-test-{uuid.uuid4().hex[:8]}"
    cmd, victim = {
        "dir outside the repo": (f"echo x > {outside}/written", outside / "written"),
        "$HOME": (f'echo x > "$HOME/{home_marker.name}"', home_marker),
        "/var/tmp": (f"echo x > {var_tmp}", var_tmp),
        "pipeline.yml": ("echo '# edited' >> pipeline.yml", None),
        "bootstrap.yml": ("echo '# edited' >> .aider_fsm/bootstrap.yml", None),
        "replace pipeline": ("cp pipeline.yml p.new && echo '# x' >> p.new && mv -f p.new pipeline.yml", None),
        # A folder above a read-only file could be moved away and replaced by a writable copy.
        "rename the folder above bootstrap.yml": (
            "mv .aider_fsm moved && mkdir .aider_fsm && echo 'cmds: [x]' > .aider_fsm/bootstrap.yml",
            None,
        ),
        "rename the runs": ("mv .aider_fsm/artifacts .aider_fsm/gone && mkdir .aider_fsm/artifacts", None),
    }[where]
    pipeline = SANDBOXED + f"tests:\n  cmds:\n    - {json.dumps(cmd)}\n"
    repo = write_repo(tmp_path / "target", pipeline, {".aider_fsm/bootstrap.yml": "version: 1\n"})
    contract = {p: p.read_bytes() for p in (repo / "pipeline.yml", repo / ".aider_fsm/bootstrap.yml")}
    try:
        ok, run_dir = run_until(repo, "tests")
        assert not ok
        [attempt] = attempts(run_dir, "tests")
        assert attempt["exit_code"] != 0 and str(attempt["argv"][0]).endswith("bwrap")
        stderr = Path(str(attempt["stderr_path"])).read_text()
        assert "Read-only file system" in stderr or "No such file or directory" in stderr or "busy" in stderr
        if victim is not None:
            assert not victim.exists()
        assert {p: p.read_bytes() for p in contract} == contract
    finally:
        var_tmp.unlink(missing_ok=True)


@needs_bwrap
def test_a_stage_writes_the_repo_the_run_dir_and_a_private_tmp(tmp_path: Path) -> None:
    private = f"/tmp/fsm-sandbox-private-{uuid.uuid4().hex[:8]}"
    cmds = [
        "mkdir -p build && echo built > build/out.txt",
        'echo kept > "$AIDER_FSM_ARTIFACTS_DIR/evidence.txt"',
        f"echo scratch > {private} && cat {private}",
    ]
    repo = write_repo(tmp_path / "target", SANDBOXED + "tests:\n  cmds: " + json.dumps(cmds) + "\n")
    ok, run_dir = run_until(repo, "tests")
    assert ok
    assert (repo / "build" / "out.txt").read_text() == "built\n"
    assert (run_dir / "tests" / "evidence.txt").read_text() == "kept\n"
    assert not Path(private).exists()  # /tmp inside was the command's own
    assert json.loads((run_dir / "run.json").read_text())["sandbox"] == "bwrap"


@needs_bwrap
def test_a_stage_cannot_rewrite_the_runs_evidence_only_its_own(tmp_path: Path) -> None:
    cmds = [
        'test -w "$AIDER_FSM_ARTIFACTS_DIR" && echo mine > "$AIDER_FSM_ARTIFACTS_DIR/own.txt"',
        'for f in "$AIDER_FSM_ARTIFACTS_DIR"/../journal.jsonl "$AIDER_FSM_ARTIFACTS_DIR"/../run.json; do '
        '! echo forged 2>/dev/null >> "$f" || exit 1; done',
        '! echo forged 2>/dev/null > "$AIDER_FSM_ARTIFACTS_DIR/../../earlier/run.json"',
        '! mkdir "$AIDER_FSM_ARTIFACTS_DIR/../forged" 2>/dev/null',
    ]
    repo = write_repo(tmp_path / "target", SANDBOXED + "tests:\n  cmds: " + json.dumps(cmds) + "\n")
    earlier = repo / ".aider_fsm" / "artifacts" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "run.json").write_text("{}")
    ok, run_dir = run_until(repo, "tests")
    assert ok, [Path(str(a["stderr_path"])).read_text() for a in attempts(run_dir, "tests")]
    assert (run_dir / "tests" / "own.txt").read_text() == "mine\n"
    assert b"forged" not in (run_dir / "journal.jsonl").read_bytes() + (run_dir / "run.json").read_bytes()
    assert (earlier / "run.json").read_text() == "{}" and not (run_dir / "forged").exists()


# -- processes ------------------------------------------------------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_nothing_a_command_starts_outlives_it_setsid_included(tmp_path: Path, sandbox: str) -> None:
    marker = f"fsm-sandbox-orphan-{uuid.uuid4().hex[:8]}"
    # The orphan runs `sleep 300` under the marker's name; the command waits until it surely started (the
    # grep pattern does not match itself, nor the command's own bash).
    cmd = (
        f"setsid bash -c 'exec -a {marker} sleep 300' < /dev/null > /dev/null 2>&1 & "
        f"for _ in $(seq 100); do grep -qs '{marker[:-1]}[{marker[-1]}] ' /proc/[0-9]*/cmdline && break; "
        "sleep 0.05; done; echo started"
    )
    pipeline = f"version: 1\nsecurity: {{sandbox: {sandbox}}}\ntests:\n  cmds: {json.dumps(cmd)}\n"
    repo = write_repo(tmp_path / "target", pipeline)
    try:
        ok, run_dir = run_until(repo, "tests")
        assert ok and Path(str(attempts(run_dir, "tests")[0]["stdout_path"])).read_text() == "started\n"
        left = processes_named(marker)
        if sandbox == "none":
            assert left, "without the sandbox a setsid process escapes the command's group (the control case)"
        else:
            assert left == []
    finally:
        for pid in processes_named(marker):
            os.kill(pid, signal.SIGKILL)


@needs_bwrap
def test_a_service_command_lives_until_the_sandbox_ends_its_services(tmp_path: Path) -> None:
    marker = f"fsm-sandbox-service-{uuid.uuid4().hex[:8]}"
    sandbox = Sandbox(writable=[tmp_path])
    common = {"cwd": tmp_path, "env": {"PATH": os.environ["PATH"]}, "out_dir": tmp_path / "ev", "timeout": 30}
    try:
        result = run_command(
            f"bash -c 'exec -a {marker} sleep 300' > /dev/null 2>&1 < /dev/null & "
            f"setsid bash -c 'exec -a {marker}-setsid sleep 300' > /dev/null 2>&1 < /dev/null &",
            name="cmd01_try01",
            policy=SecurityPolicy(),
            redactor=Redactor(),
            keep_background=True,
            sandbox=sandbox.services(),
            **common,  # type: ignore[arg-type]
        )
        assert result.ok and result.pgid is not None and group_alive(result.pgid)
        deadline = time.monotonic() + 5
        while len(processes_named(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(processes_named(marker)) == 2  # the group's member and the setsid one
        # A teardown-like command in the same namespace sees the service's pid (its /proc is the namespace's).
        seen = run_command(
            f"grep -l '{marker[:-1]}[{marker[-1]}]' /proc/[0-9]*/cmdline | wc -l",  # the pattern is not the marker
            name="cmd02_try01",
            policy=SecurityPolicy(),
            redactor=Redactor(),
            sandbox=sandbox.services(),
            **common,  # type: ignore[arg-type]
        )
        assert seen.ok and Path(str(seen.stdout_path)).read_text().strip() == "2"
        assert sandbox.end_services() is True
        assert processes_named(marker) == [] and not group_alive(result.pgid)
    finally:
        sandbox.close()
        for pid in processes_named(marker):
            os.kill(pid, signal.SIGKILL)


# -- the network ----------------------------------------------------------------------------------------------


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def host_server() -> Iterator[int]:
    """An HTTP server on the host's 127.0.0.1 (the test's own process); yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


REACH = textwrap.dedent(
    """
    import json, os, sys, urllib.request

    def reach(port):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
        except OSError:
            return False

    service = reach(os.environ["AIDER_FSM_PORT"])
    if sys.argv[1] == "health":
        sys.exit(0 if service else 1)
    metrics = {"ok": True, "score": 1.0, "service": service, "host": reach(os.environ["HOST_PORT"])}
    json.dump(metrics, open(".aider_fsm/metrics.json", "w"))
    """
)


def network_pipeline(network: str) -> str:
    return textwrap.dedent(
        f"""\
        version: 1
        security: {{sandbox: bwrap, network: {network}}}
        deploy:
          setup_cmds: python3 -m http.server "$AIDER_FSM_PORT" --bind 127.0.0.1 > .aider_fsm/http.log 2>&1 &
          health_cmds: python3 reach.py health
          timeout_seconds: 20
        evaluation:
          run_cmds: python3 reach.py evaluate
          metrics_path: .aider_fsm/metrics.json
          required_keys: [ok, service, host]
        """
    )


@needs_bwrap
@needs_netns
@pytest.mark.parametrize("network", ["host", "none"])
def test_network_none_reaches_the_runs_service_but_not_the_hosts_loopback(
    tmp_path: Path, host_server: int, network: str
) -> None:
    repo = write_repo(tmp_path / "target", network_pipeline(network), {"reach.py": REACH})
    with setup(repo, env_overrides={"HOST_PORT": str(host_server)}) as sess:
        result = sess.run()
        port = sess.ctx.port
    assert result.ok, result.error
    assert result.metrics is not None and result.metrics["service"] is True  # health passed before, too
    assert result.metrics["host"] is (network == "host")  # the control: with the host's network it is reached
    assert processes_named(f"http.server {port}") == []  # the service ended with its namespace


# -- the repair agent -----------------------------------------------------------------------------------------

AGENT = textwrap.dedent(
    """\
    #!/usr/bin/env bash
    # Fixes the failing test, tries what it may not, and leaves a setsid helper behind.
    report=.aider_fsm/agent_report.txt
    touch .aider_fsm/fixed
    echo '# agent was here' >> pipeline.yml 2>/dev/null && echo "pipeline: written" >> $report || echo "pipeline: refused" >> $report
    echo x > "$OUTSIDE/agent" 2>/dev/null && echo "outside: written" >> $report || echo "outside: refused" >> $report
    setsid bash -c "exec -a $MARKER sleep 300" < /dev/null > /dev/null 2>&1 &
    for _ in $(seq 100); do grep -qs "${MARKER%?}[${MARKER: -1}] " /proc/[0-9]*/cmdline && break; sleep 0.05; done
    echo "helper: started" >> $report
    """
)


@needs_bwrap
def test_the_command_agent_runs_in_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = f"fsm-sandbox-agent-{uuid.uuid4().hex[:8]}"
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.setenv("MARKER", marker)
    monkeypatch.setenv("OUTSIDE", str(outside))
    repo = write_repo(tmp_path / "target", SANDBOXED + "tests:\n  cmds: test -f .aider_fsm/fixed\n")
    (repo / ".aider_fsm").mkdir()
    agent_script = tmp_path / "agent.sh"
    agent_script.write_text(AGENT)
    agent_script.chmod(0o755)
    before = (repo / "pipeline.yml").read_bytes()
    try:
        with setup(repo, repair_agent=CommandAgent([str(agent_script)], timeout=60)) as sess:
            result = sess.advance("tests", repair_iters=1)
            run_dir = sess.run_dir
        assert result.ok and result.repairs_used == 1
        report = (repo / ".aider_fsm" / "agent_report.txt").read_text().splitlines()
        assert report == ["pipeline: refused", "outside: refused", "helper: started"]
        assert (repo / "pipeline.yml").read_bytes() == before and not (outside / "agent").exists()
        provenance = json.loads(next(run_dir.glob("repair*/provenance.json")).read_text())
        assert provenance["pipeline_restored"] is False  # the sandbox refused the write; nothing to restore
        assert processes_named(marker) == []
    finally:
        for pid in processes_named(marker):
            os.kill(pid, signal.SIGKILL)


# -- bwrap missing --------------------------------------------------------------------------------------------


@pytest.fixture
def no_bwrap_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A PATH with the usual tools but no bwrap."""
    bindir = tmp_path / "bin-without-bwrap"
    bindir.mkdir()
    for tool in ("bash", "sh", "git", "python3", "true", "nsenter"):
        found = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if found:
            (bindir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bindir))
    return str(bindir)


@pytest.mark.parametrize(("contract", "caller"), [("bwrap", None), ("none", "bwrap")])
def test_without_bwrap_setup_fails_once_saying_how_to_install_it(
    tmp_path: Path, no_bwrap_path: str, contract: str, caller: str | None
) -> None:
    repo = write_repo(tmp_path / "target", f"version: 1\nsecurity: {{sandbox: {contract}}}\ntests: {{cmds: 'true'}}\n")
    with pytest.raises(UsageError) as caught:
        setup(repo, sandbox=caller)
    message = str(caught.value)
    assert "`bwrap` is not on PATH" in message and "apt-get install bubblewrap" in message
    assert not (repo / ".aider_fsm" / "artifacts").exists() or not any((repo / ".aider_fsm" / "artifacts").iterdir())
    # The CLI: one error line, the usage exit code; validate reports it as a problem of the contract.
    env = {**os.environ, "PATH": no_bwrap_path}
    sandbox_args = ["--sandbox", caller] if caller else []
    run = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), *sandbox_args],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert run.returncode == 2 and run.stderr.count("apt-get install bubblewrap") == 1, run.stderr
    check = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "validate", str(repo), *sandbox_args],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert check.returncode == 2 and "apt-get install bubblewrap" in check.stdout, check.stdout + check.stderr
    if contract == "bwrap":
        assert "security.sandbox" in check.stdout and "pipeline.yml" in check.stdout
    # Without the sandbox, the same machine validates the contract.
    if caller:
        ok = subprocess.run(
            [sys.executable, "-m", "fsm_runner", "validate", str(repo)], capture_output=True, text=True, env=env
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_bwrap_that_cannot_make_namespaces_is_probed_once_and_explained(
    tmp_path: Path, no_bwrap_path: str
) -> None:
    calls = tmp_path / "calls"
    stub = Path(no_bwrap_path) / "bwrap"  # what a container without user namespaces answers
    stub.write_text(
        f"#!/bin/sh\necho x >> {calls}\n"
        "echo 'bwrap: No permissions to creating new namespace, likely because the kernel does not allow "
        "non-privileged user namespaces.' >&2\nexit 1\n"
    )
    stub.chmod(0o755)
    problem = sandbox_problem("host")
    assert problem is not None and "cannot create the sandbox's namespaces" in problem
    assert "No permissions to creating new namespace" in problem and "unprivileged user namespaces" in problem
    assert sandbox_problem("host") == problem and calls.read_text() == "x\n"  # probed once, then remembered
    repo = write_repo(tmp_path / "target", SANDBOXED + "tests: {cmds: 'true'}\n")
    with pytest.raises(UsageError) as caught:
        setup(repo)
    assert str(caught.value) == problem


# -- who decides ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contract", "caller", "recorded", "expected"),
    [
        ("none", None, "none", "none"),
        ("none", "bwrap", "none", "bwrap"),
        ("bwrap", None, "none", "bwrap"),
        ("bwrap", "bwrap", "none", "bwrap"),
        ("none", None, "bwrap", "bwrap"),
        ("bwrap", "none", "none", UsageError),
        ("none", "none", "bwrap", UsageError),
        ("none", "bwarp", "none", UsageError),
    ],
)
def test_a_caller_may_tighten_the_sandbox_never_loosen_it(
    contract: str, caller: str | None, recorded: str, expected: object
) -> None:
    if expected is UsageError:
        with pytest.raises(UsageError, match="never loosen|its replay does too|must be one of"):
            resolve_sandbox(contract, caller, recorded=recorded)
    else:
        assert resolve_sandbox(contract, caller, recorded=recorded) == expected


@needs_bwrap
def test_the_caller_tightens_a_contract_and_the_replay_keeps_the_sandbox(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "target", "version: 1\ntests:\n  cmds: test -f fixed.txt && echo x > pipeline.yml\n")
    (repo / "fixed.txt").unlink(missing_ok=True)
    ok, run_dir = run_until(repo, "tests", sandbox="bwrap")  # the contract says nothing: the caller tightens
    assert not ok and json.loads((run_dir / "run.json").read_text())["sandbox"] == "bwrap"
    with pytest.raises(UsageError, match="its replay does too"):
        replay(run_dir, sandbox="none")
    (repo / "fixed.txt").write_text("")
    result = replay(run_dir)  # the recorded sandbox, without asking: the write to pipeline.yml now fails
    assert not result.ok
    last = attempts(run_dir, "tests.2")[-1] if (run_dir / "tests.2").is_dir() else attempts(run_dir, "tests")[-1]
    assert str(last["argv"][0]).endswith("bwrap") and last["exit_code"] != 0
    assert (repo / "pipeline.yml").read_text().startswith("version: 1")


@needs_bwrap
def test_a_contract_that_asks_for_the_sandbox_cannot_be_run_without_it(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "target", SANDBOXED + "tests: {cmds: 'true'}\n")
    with pytest.raises(UsageError, match="never loosen"):
        setup(repo, sandbox="none")
    ok, run_dir = run_until(repo, "tests")
    assert ok and str(attempts(run_dir, "tests")[0]["argv"][0]).endswith("bwrap")



@pytest.mark.parametrize("head", [SANDBOXED, "version: 1\n"], ids=["bwrap", "none"])
def test_a_link_planted_at_a_later_attempts_output_is_never_written_through(tmp_path: Path, head: str) -> None:
    """The runner writes command output on the host: a command must not choose where, even in its own dir."""
    if head == SANDBOXED and BWRAP_PROBLEM is not None:
        pytest.skip(f"the sandbox cannot work here: {BWRAP_PROBLEM}")
    victim = tmp_path / "victim"
    victim.write_text("original\n")
    plant = f'ln -s {victim} "$AIDER_FSM_ARTIFACTS_DIR/cmd02_try01.stdout"'
    pipeline = head + f"tests:\n  cmds:\n    - {json.dumps(plant)}\n    - echo WRITTEN-THROUGH-A-LINK\n"
    repo = write_repo(tmp_path / "target", pipeline, {})
    ok, run_dir = run_until(repo, "tests")
    assert ok
    assert victim.read_text() == "original\n"
    second = run_dir / "tests" / "cmd02_try01.stdout"
    assert not second.is_symlink() and second.read_text() == "WRITTEN-THROUGH-A-LINK\n"
