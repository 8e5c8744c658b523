"""Teardown policies and the kubectl evidence dump, through real sessions."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

import fsm_runner
from tests.conftest import TargetFactory, pid_alive, service_pid
from tests.fixtures import target_files as files

MARKED = files.PIPELINE.replace("teardown_cmds: python3 stop.py", "teardown_cmds: python3 stop.py && touch .aider_fsm/torn_down")


@pytest.mark.parametrize(
    "policy, succeed, ran",
    [
        ("always", True, True),
        ("always", False, True),
        ("on_success", True, True),
        ("on_success", False, False),
        ("on_failure", True, False),
        ("on_failure", False, True),
        ("never", True, False),
        ("never", False, False),
    ],
)
def test_teardown_commands_follow_the_policy_and_the_service_always_ends(
    make_target: TargetFactory, policy: str, succeed: bool, ran: bool
) -> None:
    pipeline = MARKED.replace("teardown_policy: always", f"teardown_policy: {policy}")
    repo = make_target(pipeline=pipeline, scoring=files.SCORING_GOOD if succeed else files.SCORING_BROKEN)
    with fsm_runner.setup(repo) as sess:
        sess.rollout(llm="m")
        pid = service_pid(repo)
        result = sess.evaluate()
    assert result.ok is succeed
    assert (repo / ".aider_fsm" / "torn_down").exists() is ran
    assert pid is not None and not pid_alive(pid)  # the deploy's process group is ended whatever the policy


def test_kubectl_dump_runs_before_teardown(make_target: TargetFactory, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text('#!/bin/sh\necho "kubectl $*"\n')
    fake.chmod(0o755)
    pipeline = files.PIPELINE.replace(
        "  teardown_policy: always\n",
        "  teardown_policy: always\n  kubectl_dump:\n    enabled: true\n    namespace: bench\n"
        "    label_selector: app=svc\n    include_logs: true\n",
    )
    repo = make_target(pipeline=pipeline)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with fsm_runner.setup(repo, env_overrides=env) as sess:
        sess.rollout(llm="m")
        assert sess.evaluate().ok
    summary = json.loads((sess.run_dir / "teardown" / "summary.json").read_text())
    assert summary["data"]["kubectl_dump"] == "ok"
    outputs = sorted((sess.run_dir / "teardown" / "kubectl").glob("*.stdout"))
    texts = [p.read_text() for p in outputs]
    assert texts == [
        "kubectl get all -n bench -l app=svc -o wide\n",
        "kubectl get events -n bench -l app=svc\n",
        "kubectl logs -n bench -l app=svc --all-containers=true --tail=500 --prefix=true\n",
    ]


def test_kubectl_dump_without_kubectl_is_recorded_not_fatal(make_target: TargetFactory, tmp_path: Path) -> None:
    pipeline = files.PIPELINE.replace("  teardown_policy: always\n", "  teardown_policy: always\n  kubectl_dump: {enabled: true}\n")
    repo = make_target(pipeline=pipeline)
    empty = tmp_path / "empty"
    empty.mkdir()
    python3 = Path(tmp_path / "pybin")
    python3.mkdir()
    (python3 / "python3").symlink_to(sys.executable)
    # no kubectl anywhere on this PATH: only python3 and the shell's basics
    basics = tmp_path / "basics"
    basics.mkdir()
    for tool in ("bash", "sed", "touch", "test", "sleep", "cat"):
        found = shutil.which(tool)
        if found:
            (basics / tool).symlink_to(found)
    env = {"PATH": f"{empty}:{python3}:{basics}"}
    with fsm_runner.setup(repo, env_overrides=env) as sess:
        sess.rollout(llm="m")
        assert sess.evaluate().ok
    summary = json.loads((sess.run_dir / "teardown" / "summary.json").read_text())
    assert summary["data"]["kubectl_dump"] == "skipped: kubectl is not on PATH"
