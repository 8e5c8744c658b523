"""health: poll the health commands with backoff until they pass or the deploy window runs out."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm_runner.engine import guards
from fsm_runner.engine.deployment import ServiceWatch, end_deployment, services_exited
from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from fsm_runner.execution.ports import free_port
from fsm_runner.states import health
from tests.conftest import procs_in
from tests.helpers.phases import SERVICE_FILES, PhaseContexts, deploy_yaml, run_phase

HEAD = "version: 1\n"


@pytest.mark.parametrize(
    "pipeline",
    [HEAD, HEAD + deploy_yaml(health=None), HEAD + deploy_yaml(health=[])],
    ids=["no-deploy", "no-health", "empty-health"],
)
def test_no_health_commands_is_a_recorded_skip(make_ctx: PhaseContexts, pipeline: str) -> None:
    run = run_phase(make_ctx, "health", pipeline)
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "pipeline.yml has no deploy.health_cmds"
    assert run.stage_dir is None and run.ctx.health_passed_at is None


@pytest.mark.parametrize("delay", ["0", "0.5"])
def test_a_deployed_service_becomes_healthy(make_ctx: PhaseContexts, delay: str) -> None:
    pipeline = HEAD + deploy_yaml(extra=f"  env:\n    SVC_DELAY: '{delay}'\n")
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES)
    ctx = deploy.ctx
    try:
        assert deploy.outcome.ok
        assert not guards.is_healthy(ctx)
        run = run_phase(ctx, "health")
        assert run.outcome.status == OK and run.outcome.error is None
        polls = run.outcome.data["polls"]
        assert polls >= (2 if delay != "0" else 1)  # a service still starting is polled again
        assert (run.evidence / f"cmd01_try{polls:02d}.json").is_file()
        assert (run.evidence / f"cmd01_try{polls:02d}.stdout").read_text() == "healthy\n"
        recorded = run.outcome.commands  # the journal lists the first poll and the last
        assert [c.attempt for c in recorded] == sorted({1, polls})
        assert recorded and recorded[-1].exit_code == 0 and recorded[-1].attempt == polls
        assert run.outcome.data == {"polls": polls, "polls_discarded": max(0, polls - 2)}
        assert recorded[-1].result == f"health/cmd01_try{polls:02d}.json"
        assert ctx.health_passed_at is not None and ctx.deployed_at is not None
        assert ctx.health_passed_at >= ctx.deployed_at
        assert guards.is_healthy(ctx)
    finally:
        run_phase(ctx, "teardown")
    assert procs_in(deploy.repo) == []


def test_no_service_is_unhealthy_within_the_window(make_ctx: PhaseContexts) -> None:
    pipeline = HEAD + deploy_yaml(setup=None, timeout=1)
    run = run_phase(make_ctx, "health", pipeline, files=SERVICE_FILES)
    outcome = run.outcome
    assert outcome.status == FAILED and outcome.error is not None
    assert outcome.error.kind == "unhealthy" and outcome.error.phase == "health"
    first, *tail = outcome.error.message.splitlines()
    polls = outcome.data["polls"]
    assert polls >= 2
    assert first == f"guard is_healthy: no health command passed within 1.0s ({polls} polls); last output:"
    assert tail and tail[-1].startswith("  | not ready:")
    assert outcome.error.evidence == str(run.evidence / f"cmd01_try{polls:02d}.stderr")
    # The journal lists the first poll and the last, the only ones whose files are on disk.
    assert [c.attempt for c in outcome.commands] == [1, polls]
    assert sorted(p.name for p in run.evidence.iterdir()) == sorted(
        [f"cmd01_try{p:02d}.{ext}" for p in (1, polls) for ext in ("json", "stdout", "stderr")] + ["summary.json"]
    )
    assert outcome.data == {"polls": polls, "polls_discarded": polls - 2}
    assert all(c.exit_code != 0 for c in outcome.commands)
    assert 0.9 <= outcome.duration_s < 2.5
    assert run.summary()["error"]["kind"] == "unhealthy"
    assert run.ctx.health_passed_at is None and not guards.is_healthy(run.ctx)


def test_every_health_command_must_pass_in_the_same_poll(make_ctx: PhaseContexts) -> None:
    pipeline = HEAD + deploy_yaml(setup=None, health=["touch first-ran", "exit 1"], timeout=0.5)
    run = run_phase(make_ctx, "health", pipeline)
    assert run.outcome.error is not None and run.outcome.error.kind == "unhealthy"
    assert (run.repo / "first-ran").exists()
    assert (run.evidence / "cmd02_try01.json").is_file()


def test_a_blocked_health_command_fails_at_once(make_ctx: PhaseContexts) -> None:
    pipeline = "version: 1\nsecurity:\n  denylist: ['curl']\n" + deploy_yaml(setup=None, health="curl http://127.0.0.1:9/")
    run = run_phase(make_ctx, "health", pipeline)
    assert run.outcome.error is not None and run.outcome.error.kind == "unhealthy"
    assert run.outcome.error.message.startswith("health command blocked: ")
    assert run.outcome.data == {"polls": 1, "polls_discarded": 0}
    assert run.outcome.duration_s < 0.5


def test_the_health_window_is_capped_by_max_cmd_seconds(make_ctx: PhaseContexts) -> None:
    pipeline = "version: 1\nsecurity:\n  max_cmd_seconds: 0.5\n" + deploy_yaml(setup=None, health="exit 1", timeout=30)
    run = run_phase(make_ctx, "health", pipeline)
    assert run.outcome.error is not None
    assert "within 0.5s" in run.outcome.error.message
    assert run.outcome.duration_s < 1.5


def test_a_long_window_keeps_the_files_of_the_first_and_last_polls_only(make_ctx: PhaseContexts) -> None:
    # fails 15 times, then passes: 16 polls, of which the files of polls 2..15 are removed
    probe = 'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo "poll $n"; [ $n -gt 15 ]'
    pipeline = HEAD + deploy_yaml(setup=None, health=[probe, "echo second"], timeout=20)
    run = run_phase(make_ctx, "health", pipeline)
    outcome = run.outcome
    assert outcome.status == OK
    assert outcome.data == {"polls": 16, "polls_discarded": 14}
    assert [(c.index, c.attempt) for c in outcome.commands] == [(1, 1), (1, 16), (2, 16)]
    assert sorted(p.name for p in run.evidence.iterdir()) == sorted(
        [f"cmd01_try01.{ext}" for ext in ("json", "stdout", "stderr")]
        + [f"cmd0{i}_try16.{ext}" for i in (1, 2) for ext in ("json", "stdout", "stderr")]
        + ["summary.json"]
    )
    assert (run.evidence / "cmd01_try16.stdout").read_text() == "poll 16\n"
    assert (run.evidence / "cmd01_try01.stdout").read_text() == "poll 1\n"
    assert all(c.result and (run.ctx.run_dir / c.result).is_file() for c in outcome.commands)


DEAD_ON_START = "sleep 0.3 && python3 no_such_server.py &"  # a server that exits soon after it is started


def test_health_fails_at_once_when_the_deployed_services_have_exited(make_ctx: PhaseContexts) -> None:
    pipeline = HEAD + deploy_yaml(setup=DEAD_ON_START, timeout=20)
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES)
    assert deploy.outcome.ok and deploy.ctx.deploy_pgids
    run = run_phase(deploy.ctx, "health")
    outcome, error = run.outcome, run.outcome.error
    assert outcome.status == FAILED and error is not None and error.kind == "unhealthy"
    assert outcome.duration_s < 5  # not the 20 s window
    first, *quoted = error.message.splitlines()
    assert first.startswith("the deploy's services exited (exit code ")
    assert "before a health command passed" in first
    assert first.endswith("; its output (deploy_setup/cmd01_try01.stderr):")
    assert quoted and "can't open file" in quoted[-1] and "no_such_server.py" in quoted[-1]
    assert error.evidence == str(deploy.evidence / "cmd01_try01.stderr")
    exited = outcome.data["services_exited"]
    assert exited["pgids"] == deploy.ctx.deploy_pgids
    assert outcome.data["polls"] >= 1 and run.ctx.health_passed_at is None


def test_the_secret_in_a_dead_service_output_is_masked(make_ctx: PhaseContexts) -> None:
    setup = 'sleep 0.3 && echo "token $SVC_TOKEN rejected" >&2 && exit 3 &'
    pipeline = HEAD + deploy_yaml(setup=setup, timeout=20)
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, secrets={"SVC_TOKEN": "s3cr3t-value-42"})
    run = run_phase(deploy.ctx, "health")
    assert run.outcome.error is not None
    assert run.outcome.error.message.endswith("\n  | token *** rejected")
    assert "s3cr3t-value-42" not in run.outcome.error.message


def test_health_goes_on_polling_while_one_deployed_service_still_runs(make_ctx: PhaseContexts) -> None:
    pipeline = HEAD + deploy_yaml(setup=["sleep 30 > /dev/null 2>&1 &", DEAD_ON_START], timeout=1.5)
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES)
    assert len(deploy.ctx.deploy_pgids) == 2
    run = run_phase(deploy.ctx, "health")
    assert run.outcome.error is not None
    assert run.outcome.error.message.startswith("guard is_healthy: no health command passed within 1.5s")
    assert run.outcome.duration_s >= 1.4
    assert len(end_deployment(deploy.ctx)) == 1  # the one still running


def test_a_service_that_leaves_its_process_group_is_still_waited_for(make_ctx: PhaseContexts) -> None:
    # The server moves to a session of its own (as a daemon does) after the deploy recorded its group.
    setup = "(sleep 0.2; exec setsid python3 svc.py) > .aider_fsm/svc.log 2>&1 &"
    pipeline = HEAD + deploy_yaml(setup=setup, timeout=20, extra="  env:\n    SVC_DELAY: '1'\n")
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES)
    try:
        assert deploy.ctx.deploy_pgids
        run = run_phase(deploy.ctx, "health")
        assert run.outcome.status == OK, run.outcome.error
        assert run.outcome.duration_s >= 0.9
    finally:
        run_phase(deploy.ctx, "teardown")
    assert procs_in(deploy.repo) == []


DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_docs_give_the_poll_interval_the_code_uses() -> None:
    first, cap = f"{health.FIRST_DELAY * 1000:g} ms", f"{health.MAX_DELAY * 1000:g} ms"
    assert f"({first} growing to {cap})" in (DOCS / "integration.md").read_text()
    assert f"starts at {first} and grows to {cap}" in (DOCS / "pipeline_spec.md").read_text()
    for doc in DOCS.glob("*.md"):
        for sentence in re.split(r"(?<=\.)\s", doc.read_text()):
            if "health" in sentence.lower() and re.search(r"\bpoll", sentence):
                assert set(re.findall(r"\b\d+ ms\b", sentence)) <= {first, cap}, (doc.name, sentence)


#: A server that sleeps ``$SLOW`` seconds, then listens on the port it is given.
SLOW_SERVER = r"""
import http.server, os, sys, time
with open(".aider_fsm/server.pid", "w") as f:
    f.write(str(os.getpid()))
time.sleep(float(os.environ.get("SLOW", "0")))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""
#: A launcher that starts the server with a clean environment in a session of its own, and exits 0.
LAUNCHER = (
    'env -i PATH="$PATH" SLOW=2 setsid python3 server.py "$1" > .aider_fsm/server.log 2>&1 </dev/null &\n'
    "sleep 0.5\n"
)
PR_SET_CHILD_SUBREAPER = 36


def _children() -> dict[int, str]:
    """This process's children and their states (``Z``: exited, not reaped)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == os.getpid():
            found[int(entry.name)] = fields[0].decode()
    return found


@pytest.fixture
def unreaped_orphans() -> Iterator[None]:
    """Orphans become this process's children and stay unreaped while the test runs, as under a container
    init that never reaps: the exit codes of deploy processes that exited are known whatever the host's init
    does. Adopted children are reaped at the end."""
    libc = ctypes.CDLL(None, use_errno=True)
    before = set(_children())
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("cannot become a child subreaper here")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid, state in _children().items():
            if pid not in before:
                if state != "Z":
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


@pytest.mark.usefixtures("unreaped_orphans")
def test_a_slow_service_a_launcher_handed_off_is_waited_for(make_ctx: PhaseContexts) -> None:
    # The launcher exits 0 long before the server listens; the server carries none of the deploy's environment.
    setup = 'mkdir -p .aider_fsm && sh start.sh "$AIDER_FSM_PORT" &'
    health_cmd = 'curl -fsS "http://127.0.0.1:$AIDER_FSM_PORT/"'
    pipeline = HEAD + deploy_yaml(setup=setup, health=health_cmd, teardown=None, timeout=20)
    files = {"server.py": SLOW_SERVER, "start.sh": LAUNCHER}
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=files, port=free_port())
    try:
        assert deploy.outcome.ok and deploy.ctx.deploy_pgids
        run = run_phase(deploy.ctx, "health")
        assert run.outcome.status == OK, run.outcome.error
        assert run.outcome.duration_s >= 1.5  # polled past the launcher's exit, until the server listened
        assert "services_exited" not in run.outcome.data
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((deploy.repo / ".aider_fsm/server.pid").read_text()), signal.SIGTERM)


@pytest.mark.usefixtures("unreaped_orphans")
def test_a_hand_off_seen_once_is_remembered_after_the_launcher_is_reaped(make_ctx: PhaseContexts) -> None:
    deploy = run_phase(make_ctx, "deploy_setup", HEAD + deploy_yaml(setup="sleep 0.2 &"))
    ctx = deploy.ctx
    assert deploy.outcome.ok and ctx.deploy_pgids
    deadline = time.monotonic() + 5
    while not (exited := [pid for pid, state in _children().items() if state == "Z"]):
        assert time.monotonic() < deadline, "the launcher did not exit"
        time.sleep(0.02)
    watch = ServiceWatch()
    assert watch.exited(ctx) is None  # exit code 0: a launcher that handed off
    for pid in exited:
        os.waitpid(pid, 0)  # an init that reaps now and then: the exit code is gone
    fresh = services_exited(ctx)
    assert fresh is not None and fresh.exit_codes == ()  # nothing known: taken as gone
    assert watch.exited(ctx) is None  # the watch remembers the 0 it saw


def test_a_window_that_runs_out_quotes_the_deploy_output(make_ctx: PhaseContexts) -> None:
    # The server dies while the deploy command still runs: deploy leaves no group to watch, so health polls on.
    setup = 'python3 no_such_server.py --port "$AIDER_FSM_PORT" & sleep 0.3'
    pipeline = HEAD + deploy_yaml(setup=setup, timeout=1)
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES, port=free_port())
    assert deploy.outcome.ok and not deploy.ctx.deploy_pgids
    run = run_phase(deploy.ctx, "health")
    error = run.outcome.error
    assert error is not None and error.kind == "unhealthy"
    assert error.message.startswith("guard is_healthy: no health command passed within 1.0s")
    before, _, quoted = error.message.partition(
        "; the deploy's output (deploy_setup/cmd01_try01.stderr):\n  | "
    )
    assert "\n  | not ready:" in before  # the health command's own output comes first
    assert "can't open file" in quoted and "no_such_server.py" in quoted
    assert error.evidence == str(run.evidence / f"cmd01_try{run.outcome.data['polls']:02d}.stderr")


def test_the_deploy_output_a_window_quotes_is_masked(make_ctx: PhaseContexts) -> None:
    setup = ["echo starting", 'echo "token $SVC_TOKEN rejected" >&2']
    pipeline = HEAD + deploy_yaml(setup=setup, timeout=0.5)
    deploy = run_phase(
        make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES, secrets={"SVC_TOKEN": "s3cr3t-42"}
    )
    run = run_phase(deploy.ctx, "health")
    assert run.outcome.error is not None
    message = run.outcome.error.message
    assert "; the deploy's output (deploy_setup/cmd01_try01.stdout):\n  | starting;" in message
    assert message.endswith(
        "; the deploy's output (deploy_setup/cmd02_try01.stderr):\n  | token *** rejected"
    )
    assert "s3cr3t-42" not in message


def test_a_dead_service_whose_output_went_to_a_log_names_the_log(make_ctx: PhaseContexts) -> None:
    setup = "sleep 0.3 && python3 no_such_server.py > .aider_fsm/server.log 2>&1 &"
    pipeline = HEAD + deploy_yaml(setup=setup, timeout=20)
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES)
    run = run_phase(deploy.ctx, "health")
    error = run.outcome.error
    assert error is not None and run.outcome.duration_s < 5
    first = error.message.splitlines()[0]
    assert first.startswith("the deploy's services exited (exit code ")
    assert first.endswith(
        "; they left no output in the deploy's evidence (deploy_setup): the deploy command sends it to "
        f"{deploy.repo / '.aider_fsm/server.log'}"
    )
    assert error.evidence == str(deploy.evidence)
    assert "can't open file" in (deploy.repo / ".aider_fsm/server.log").read_text()
