"""teardown: the contract's teardown commands per policy, the kubectl evidence dump, and the end of every
process group deploy left running."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from tests.conftest import pid_alive, procs_in, service_pid
from tests.helpers.phases import SERVICE_FILES, PhaseContexts, PhaseRun, deploy_yaml, run_phase, service_url

HEAD = "version: 1\n"
MARKED_STOP = "python3 stop.py && touch .aider_fsm/torn_down"
KUBECTL = "  kubectl_dump:\n    enabled: true\n    namespace: bench\n    label_selector: app=svc\n    include_logs: true\n"


def deployed(make_ctx: PhaseContexts, pipeline: str, **fields: Any) -> PhaseRun:
    """A context whose fixture service is up, started by deploy_setup."""
    run = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES, **fields)
    assert run.outcome.ok, run.outcome.error
    service_url(run.repo)
    return run


def test_nothing_deployed_is_a_recorded_skip(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "teardown", HEAD + deploy_yaml(teardown="touch stopped"))
    assert run.outcome.status == SKIPPED and run.outcome.reason == "nothing is deployed"
    assert run.stage_dir is None and not (run.repo / "stopped").exists()


@pytest.mark.parametrize(
    "policy, status, ran",
    [
        ("always", "running", True),
        ("always", "failed", True),
        ("on_success", "running", True),
        ("on_success", "failed", False),
        ("on_failure", "running", False),
        ("on_failure", "failed", True),
        ("on_failure", "interrupted", True),
        ("never", "running", False),
        ("never", "failed", False),
    ],
)
def test_teardown_commands_follow_the_policy_and_the_service_always_ends(
    make_ctx: PhaseContexts, policy: str, status: str, ran: bool
) -> None:
    deploy = deployed(make_ctx, HEAD + deploy_yaml(teardown=MARKED_STOP, policy=policy))
    pid, groups = service_pid(deploy.repo), list(deploy.ctx.deploy_pgids)
    assert pid is not None and pid_alive(pid) and len(groups) == 1
    run = run_phase(deploy.ctx, "teardown", status=status)
    assert run.outcome.status == OK
    data = run.outcome.data
    assert data["policy"] == policy
    assert data["run_for"] == ("success" if status == "running" else "failure")
    assert data["teardown_cmds_ran"] is ran
    assert (deploy.repo / ".aider_fsm" / "torn_down").exists() is ran
    assert len(run.outcome.commands) == (1 if ran else 0)
    if not ran:
        assert data["killed_pgids"] == groups  # nothing stopped it but the runner
    assert not pid_alive(pid) and procs_in(deploy.repo) == []
    assert run.ctx.deployed is False and run.ctx.deploy_pgids == [] and run.ctx.deploy_leaders == {}


def test_a_failing_teardown_command_fails_the_phase_and_the_groups_still_end(make_ctx: PhaseContexts) -> None:
    deploy = deployed(make_ctx, HEAD + deploy_yaml(teardown="echo 'cannot reach the cluster' >&2; exit 2"))
    pid, groups = service_pid(deploy.repo), list(deploy.ctx.deploy_pgids)
    run = run_phase(deploy.ctx, "teardown")
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "command"
    assert run.outcome.error.message.endswith("\n  | cannot reach the cluster")
    assert run.outcome.data["killed_pgids"] == groups
    assert pid is not None and not pid_alive(pid) and procs_in(deploy.repo) == []


def test_recorded_groups_are_ended_even_if_the_run_lost_track_of_the_deploy(make_ctx: PhaseContexts) -> None:
    deploy = deployed(make_ctx, HEAD + deploy_yaml(teardown="touch stopped"))
    pid, groups = service_pid(deploy.repo), list(deploy.ctx.deploy_pgids)
    run = run_phase(deploy.ctx, "teardown", deployed=False)
    assert run.outcome.ok and run.outcome.data["killed_pgids"] == groups
    assert pid is not None and not pid_alive(pid)


def fake_kubectl(bin_dir: Path) -> None:
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    # Records each call, and whether the service was still up when the cluster state was dumped.
    fake.write_text(
        "#!/bin/sh\n"
        'state=down; kill -0 "$(cat .aider_fsm/svc.pid)" 2>/dev/null && state=up\n'
        'echo "kubectl $* ($state)" >> .aider_fsm/order.log\n'
        'echo "kubectl $*"\n'
    )
    fake.chmod(0o755)


def test_kubectl_dump_runs_before_teardown(make_ctx: PhaseContexts, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_kubectl(bin_dir)
    stop = "echo teardown >> .aider_fsm/order.log && python3 stop.py"
    pipeline = HEAD + deploy_yaml(teardown=stop, extra=KUBECTL)
    deploy = deployed(make_ctx, pipeline, env_overrides={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    run = run_phase(deploy.ctx, "teardown")
    assert run.outcome.ok
    assert run.outcome.data["kubectl_dump"] == "ok"
    assert run.outcome.data["kubectl_dir"] == "teardown/kubectl"
    texts = [p.read_text() for p in sorted((run.evidence / "kubectl").glob("*.stdout"))]
    assert texts == [
        "kubectl get all -n bench -l app=svc -o wide\n",
        "kubectl get events -n bench -l app=svc\n",
        "kubectl logs -n bench -l app=svc --all-containers=true --tail=500 --prefix=true\n",
    ]
    order = (deploy.repo / ".aider_fsm" / "order.log").read_text().splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in order] == ["(up)", "(up)", "(up)", "teardown"]
    assert procs_in(deploy.repo) == []


def test_a_failing_kubectl_command_does_not_stop_the_dump(make_ctx: PhaseContexts, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    # "get all" fails (as with a namespace the cluster does not know); events and logs work.
    fake.write_text(
        '#!/bin/sh\nif [ "$2" = all ]; then echo "error: the server has no resource all" >&2; exit 1; fi\n'
        'echo "kubectl $*"\n'
    )
    fake.chmod(0o755)
    pipeline = HEAD + deploy_yaml(extra=KUBECTL)
    deploy = deployed(make_ctx, pipeline, env_overrides={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    run = run_phase(deploy.ctx, "teardown")
    assert run.outcome.ok  # the dump is evidence, not a condition of teardown
    kubectl = run.evidence / "kubectl"
    assert (kubectl / "cmd02_try01.stdout").read_text() == "kubectl get events -n bench -l app=svc\n"
    assert (kubectl / "cmd03_try01.stdout").read_text().startswith("kubectl logs -n bench -l app=svc")
    dump = run.outcome.data["kubectl_dump"]
    assert dump.startswith("incomplete: command 1/3 `kubectl get all -n bench -l app=svc -o wide` exit code 1")
    assert dump.endswith(f"see {kubectl / 'cmd01_try01.stderr'}")
    assert procs_in(deploy.repo) == []


def test_kubectl_dump_without_kubectl_is_recorded_not_fatal(make_ctx: PhaseContexts, tmp_path: Path) -> None:
    # No kubectl anywhere on this PATH: only the shell and the tools the commands use.
    basics = tmp_path / "basics"
    basics.mkdir()
    for tool in ("bash", "touch"):
        found = shutil.which(tool)
        assert found is not None
        (basics / tool).symlink_to(found)
    pipeline = HEAD + deploy_yaml(setup="touch up", teardown="touch stopped", extra="  kubectl_dump: {enabled: true}\n")
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, env_overrides={"PATH": str(basics)})
    assert deploy.outcome.ok
    run = run_phase(deploy.ctx, "teardown")
    assert run.outcome.ok
    assert run.outcome.data["kubectl_dump"] == "skipped: kubectl is not on PATH"
    assert "kubectl_dir" not in run.outcome.data and not (run.evidence / "kubectl").exists()
    assert (deploy.repo / "stopped").exists()


def test_the_output_of_a_service_is_capped_once_teardown_has_ended_it(make_ctx: PhaseContexts) -> None:
    # The service writes far more than the cap to the deploy command's stdout, and keeps running.
    service = "{ head -c 300000 /dev/zero | tr '\\0' x; echo; echo LAST-SERVICE-LINE; exec sleep 60; } &"
    pipeline = HEAD + "artifacts: {max_output_bytes: 4096}\n" + deploy_yaml(setup=service, health=None, teardown="true")
    deploy = run_phase(make_ctx, "deploy_setup", pipeline)
    assert deploy.outcome.ok, deploy.outcome.error
    assert deploy.stage_dir is not None
    output = deploy.stage_dir / "cmd01_try01.stdout"
    deadline = time.monotonic() + 10
    while not output.read_bytes().endswith(b"\nLAST-SERVICE-LINE\n") and time.monotonic() < deadline:
        time.sleep(0.02)  # the service has written all it will write once its last line is there
    assert output.stat().st_size > 300000  # still whole while the service runs
    run = run_phase(deploy.ctx, "teardown")
    assert run.outcome.status == OK
    data = output.read_bytes()
    assert data.startswith(b"xxxx") and data.endswith(b"\nLAST-SERVICE-LINE\n") and len(data) < 4096 + 100
    cut = json.loads((deploy.stage_dir / "cmd01_try01.json").read_text())["stdout_cut_bytes"]
    assert cut == 300000 + len(b"\nLAST-SERVICE-LINE\n") - 4096
    assert f"[fsm-runner: {cut} bytes cut here".encode() in data
