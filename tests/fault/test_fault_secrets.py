"""A secret planted in the caller's environment never reaches any file under the run dir.

The secret travels three ways (the child process's environment, ``env_overrides``, ``fsm-runner run --env``)
and every stage prints it to stdout and stderr, once right across the 1 MiB chunk boundary of the masker;
the metrics carry it, a command line contains it literally, and a failing command quotes it in the error.
Afterwards every file under the run dir is read as bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsm_runner.evidence.redaction import MASK
from tests.conftest import TargetFactory
from tests.helpers import target_files as files

SECRET = "sekrit-planted-123"
LEAK = 'echo "out $MY_API_KEY"; echo "err $MY_API_KEY" >&2'
# 1 MiB minus a few bytes of padding, so the secret straddles the masker's first chunk boundary.
STRADDLE = f'head -c {(1 << 20) - 7} /dev/zero | tr "\\0" a; echo "$MY_API_KEY"'
SCORING = """
import os
def score(samples, run_id):
    return {"ok": True, "score": 1.0, "run_id": run_id, "note": "key=" + os.environ["MY_API_KEY"]}
"""


def _leaky_pipeline(fail: bool) -> str:
    pipeline = files.PIPELINE
    for old, new in (
        (
            "cmds: python3 stage.py tests",
            f"cmds:\n    - python3 stage.py tests\n    - '{LEAK}'\n    - '{STRADDLE}'",
        ),
        ("    - python3 stage.py deploy\n", f"    - python3 stage.py deploy\n    - '{LEAK}'\n"),
        (
            "    - python3 rollout.py\n",
            f"    - python3 rollout.py\n    - '{LEAK}'\n    - echo {SECRET} | wc -c\n",
        ),
        ("    - python3 evaluate.py\n", f"    - python3 evaluate.py\n    - '{LEAK}'\n"),
        ("teardown_cmds: python3 stop.py", f"teardown_cmds: ['python3 stop.py', '{LEAK}']"),
    ):
        assert old in pipeline
        pipeline = pipeline.replace(old, new)
    if fail:  # the error message quotes the failing command's output
        pipeline = pipeline.replace("    - python3 evaluate.py\n", f"    - '{LEAK}; exit 3'\n")
    return pipeline


DRIVER = textwrap.dedent(
    """
    import os, sys, fsm_runner
    overrides = {"MY_API_KEY": sys.argv[2]} if len(sys.argv) > 2 else None
    with fsm_runner.setup(sys.argv[1], env_overrides=overrides) as sess:
        sess.rollout(llm="m", require_samples=True)
        result = sess.evaluate()
    print(result.ok, sess.run_dir)
    """
)


def _run(repo: Path, how: str) -> tuple[bool, Path]:
    base = {k: v for k, v in os.environ.items() if k != "MY_API_KEY"}
    if how == "caller-env":
        argv, env = [sys.executable, "-c", DRIVER, str(repo)], {**base, "MY_API_KEY": SECRET}
    elif how == "env_overrides":
        argv, env = [sys.executable, "-c", DRIVER, str(repo), SECRET], base
    else:
        argv = [
            sys.executable,
            "-m",
            "fsm_runner",
            "run",
            str(repo),
            "--llm",
            "m",
            "--env",
            f"MY_API_KEY={SECRET}",
        ]
        env = base
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    runs = sorted((repo / ".aider_fsm" / "artifacts").iterdir())
    assert len(runs) == 1, done.stderr
    if how == "cli":
        return done.returncode == 0, runs[0]
    ok, _, where = done.stdout.strip().partition(" ")
    assert Path(where) == runs[0], done.stderr
    return ok == "True", runs[0]


@pytest.mark.parametrize("fail", [False, True], ids=["run-ok", "run-fails"])
@pytest.mark.parametrize("how", ["caller-env", "env_overrides", "cli"])
def test_planted_secret_never_reaches_the_run_dir(make_target: TargetFactory, how: str, fail: bool) -> None:
    repo = make_target(pipeline=_leaky_pipeline(fail), scoring=SCORING)
    ok, run_dir = _run(repo, how)
    assert ok is not fail
    leaks = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        if SECRET.encode() in path.read_bytes():
            leaks.append(str(path.relative_to(run_dir)))
    assert leaks == [], f"the secret is in {leaks}"
    # The secret was really there to mask: the captured output holds the mask where it was printed.
    assert (run_dir / "tests" / "cmd02_try01.stdout").read_text() == f"out {MASK}\n"
    assert (run_dir / "tests" / "cmd03_try01.stdout").read_bytes().endswith(f"a{MASK}\n".encode())
    if fail:
        journal = (run_dir / "journal.jsonl").read_text()
        assert f"err {MASK}" in journal  # the quoted tail, masked
    else:
        assert f"key={MASK}" in (run_dir / "evaluate.metrics.json").read_text()




@pytest.mark.parametrize(
    "where",
    [
        "bootstrap-env",
        "stage-env",
    ],
)
def test_secret_introduced_by_the_contract_env_is_masked_too(tmp_path: Path, where: str) -> None:
    repo = tmp_path / "repo"
    (repo / ".aider_fsm").mkdir(parents=True)
    stage_env = "  env:\n    DB_PASSWORD: literal-stage-pw-789\n" if where == "stage-env" else ""
    (repo / "pipeline.yml").write_text(
        f'version: 1\ntests:\n  cmds: echo "$HF_TOKEN $DB_PASSWORD"\n{stage_env}'
    )
    if where == "bootstrap-env":  # a secret-looking variable filled from a plainly named caller variable
        (repo / ".aider_fsm" / "bootstrap.yml").write_text(
            'version: 1\nenv:\n  HF_TOKEN: "${VAULT_READ_VALUE}"\n'
        )
    value = "sekrit-via-bootstrap-456" if where == "bootstrap-env" else "literal-stage-pw-789"
    env = {**os.environ, "VAULT_READ_VALUE": "sekrit-via-bootstrap-456"}
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo), "--until", "tests"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (run_dir,) = (repo / ".aider_fsm" / "artifacts").iterdir()
    printed = (run_dir / "tests" / "cmd01_try01.stdout").read_text()
    assert value in printed or MASK in printed
    leaks = [
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file() and value.encode() in p.read_bytes()
    ]
    assert leaks == [], f"the secret is in {leaks}"
