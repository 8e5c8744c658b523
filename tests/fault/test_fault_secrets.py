"""A secret planted in the caller's environment never reaches any file under the run dir.

The secret travels three ways (the child process's environment, ``env_overrides``, ``fsm-runner run --env``)
and every stage prints it to stdout and stderr, once right across the 1 MiB chunk boundary of the masker;
the metrics carry it, a command line contains it literally, and a failing command quotes it in the error.
Afterwards every file under the run dir is read as bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.evidence.redaction import MASK
from tests.conftest import TargetFactory, procs_in, wait_for_file
from tests.helpers import target_files as files
from tests.helpers.git_http import commit_all, served

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


# -- every path a secret can take, on a git target with a token in its URL ----------------------------------
#
# Five secrets: the caller's environment, ``--env``, a bootstrap.yml variable filled from a plainly named
# caller variable, and a URL token given as the user name or as the password. Every stage prints them (and
# `git remote get-url origin`, which prints the URL with its token) to stdout, stderr and a file in its
# $AIDER_FSM_ARTIFACTS_DIR; a deployed service prints one every 50 ms until teardown ends it. Four runs: one
# that passes, one whose metrics fail the guard with a secret as the value, one a real agent program repairs,
# and one SIGKILLed while a command runs, then replayed. Afterwards no byte under the run dir, and nothing
# `run`, `run --json`, `show` or `replay` printed, holds a secret or the first six characters of one.

PLANTED = {
    "env": "envsekrit-7f3a91c2",
    "cli": "clisekrit-52b8e0d4",
    "boot": "bootsekrit-c19d4a77",
    "url_user": "urlusertok-9e21b6f0",
    "url_pass": "urlpasstok-3d7c5a18",
}
NEEDLES = [v.encode() for v in PLANTED.values()] + [v[:6].encode() for v in PLANTED.values()]

LEAK_SH = """\
echo "out $MY_API_KEY $OTHER_TOKEN $HF_TOKEN"
echo "err $MY_API_KEY $OTHER_TOKEN $HF_TOKEN" >&2
git remote get-url origin
git remote get-url origin >&2
printf 'artifact %s %s %s\\n' "$MY_API_KEY" "$OTHER_TOKEN" "$HF_TOKEN" > "$AIDER_FSM_ARTIFACTS_DIR/leak.txt"
git remote get-url origin >> "$AIDER_FSM_ARTIFACTS_DIR/leak.txt"
"""

#: A deployed service that prints a numbered line with a secret every 50 ms, and a last one when it is ended.
CHATTY = """\
import os, signal, time
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
n = 0
while not stopping:
    print(f"chatty {n} {os.environ['MY_API_KEY']} {os.environ['HF_TOKEN']}", flush=True)
    n += 1
    time.sleep(0.05)
print(f"chatty bye after {n}", flush=True)
"""

#: The SIGKILLed run holds here (first time only) until the test has killed the runner.
HOLD_SH = """\
sh leak.sh
sleep 1  # the deployed service prints meanwhile
if [ -f .aider_fsm/hold_wanted ] && [ ! -f .aider_fsm/released ]; then
  touch .aider_fsm/holding
  sleep 60
fi
"""

SCORING_LEAKY = """
import os
def score(samples, run_id):
    secrets = os.environ["MY_API_KEY"] + " " + os.environ["OTHER_TOKEN"] + " " + os.environ["HF_TOKEN"]
    return {"ok": True, "score": 1.0, "note": "keys " + secrets}
"""

#: ``ok`` is a string: the guard quotes it. The secret straddles character 400 of the line (where the repair
#: prompt cuts long lines), so a prompt that cuts before it masks shows half of it.
SCORING_FAILING = """
import os
def score(samples, run_id):
    return {"ok": "x" * 385 + os.environ["MY_API_KEY"], "score": 0, "why": os.environ["OTHER_TOKEN"]}
"""

AGENT = """\
import json, os, sys
request = json.load(open(sys.argv[1]))
print("agent sees", os.environ.get("MY_API_KEY"), os.environ.get("VAULT_READ_VALUE"))
print(open(request["prompt_file"]).read())
scoring = os.path.join(request["repo"], ".aider_fsm", "scoring.py")
open(scoring, "w").write(open(sys.argv[2]).read())
print("fixed", scoring)
"""


def _secret_pipeline() -> str:
    pipeline = files.PIPELINE
    for old, new in (
        ("cmds: python3 stage.py tests", "cmds:\n    - python3 stage.py tests\n    - sh leak.sh"),
        (
            "    - python3 svc.py > .aider_fsm/svc.log 2>&1 &\n",
            "    - python3 svc.py > .aider_fsm/svc.log 2>&1 &\n    - python3 chatty.py &\n    - sh leak.sh\n",
        ),
        ("    - python3 rollout.py\n", "    - python3 rollout.py\n    - sh leak.sh\n"),
        ("    - python3 evaluate.py\n", "    - sh hold.sh\n    - python3 evaluate.py\n"),
        ("teardown_cmds: python3 stop.py", "teardown_cmds: ['python3 stop.py', 'sh leak.sh']"),
    ):
        assert old in pipeline
        pipeline = pipeline.replace(old, new)
    return pipeline


def _secret_target(make_target: TargetFactory, scenario: str) -> Path:
    scoring = SCORING_FAILING if scenario in ("fail", "repair") else SCORING_LEAKY
    bootstrap = files.BOOTSTRAP.replace("env:\n", 'env:\n  HF_TOKEN: "${VAULT_READ_VALUE}"\n')
    bootstrap = bootstrap.replace("  - python3 stage.py bootstrap\n", "  - python3 stage.py bootstrap\n  - sh leak.sh\n")
    repo = make_target(pipeline=_secret_pipeline(), scoring=scoring, bootstrap=bootstrap)
    (repo / "leak.sh").write_text(LEAK_SH)
    (repo / "chatty.py").write_text(CHATTY)
    (repo / "hold.sh").write_text(HOLD_SH)
    (repo / ".gitignore").write_text(".venv/\n")
    if scenario == "sigkill":
        (repo / ".aider_fsm" / "hold_wanted").write_text("")
    commit_all(repo)
    return repo


def _cli(*args: object, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "fsm_runner", *map(str, args)]
    return subprocess.run(argv, capture_output=True, env=env, timeout=timeout)


def _leaks(data: bytes) -> list[str]:
    return [n.decode() for n in NEEDLES if n in data]


def _wait_for_hold(clones: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> Path:
    """The checkout of the run once its evaluate command holds and the runner recorded it as running."""
    deadline = time.monotonic() + timeout
    while True:
        for holding in clones.glob("*.checkouts/*/.aider_fsm/holding"):
            checkout = holding.parents[1]
            run_dir = Path((checkout.parent / f"{checkout.name}.run").read_text().strip())
            for path in run_dir.glob("evaluate/cmd*_try*.json"):
                with contextlib.suppress(OSError, ValueError):
                    doc = json.loads(path.read_text())
                    if doc.get("running") is True and "hold.sh" in doc.get("cmd", ""):
                        return checkout
        assert proc.poll() is None, f"the runner exited with {proc.returncode} before evaluate held"
        assert time.monotonic() < deadline, "evaluate did not hold in time"
        time.sleep(0.05)


def _chatty_lines(run_dir: Path) -> list[str]:
    lines = []
    for path in sorted(run_dir.glob("deploy_setup*/cmd*_try*.stdout")):
        lines += [ln for ln in path.read_text().splitlines() if ln.startswith("chatty")]
    return lines


@pytest.mark.parametrize("url_form", ["token-as-user", "token-as-password"])
@pytest.mark.parametrize("scenario", ["pass", "fail", "repair", "sigkill"])
def test_planted_secrets_never_reach_the_run_dir_or_the_terminal(
    make_target: TargetFactory, tmp_path: Path, scenario: str, url_form: str
) -> None:
    repo = _secret_target(make_target, scenario)
    clones = tmp_path / "clones"
    base = {k: v for k, v in os.environ.items() if k not in ("MY_API_KEY", "OTHER_TOKEN", "HF_TOKEN")}
    env = {**base, "MY_API_KEY": PLANTED["env"], "VAULT_READ_VALUE": PLANTED["boot"]}
    json_flag = ["--json"] if url_form == "token-as-password" else []
    printed: list[tuple[str, bytes]] = []
    (tmp_path / "web").mkdir()
    with served(repo, tmp_path / "web") as url:
        user_info = PLANTED["url_user"] if url_form == "token-as-user" else f"alice:{PLANTED['url_pass']}"
        target = url.replace("http://", f"http://{user_info}@")
        run = [
            "run", target, "--llm", "m", "--clones-dir", clones, "--env", f"OTHER_TOKEN={PLANTED['cli']}",
            *json_flag,
        ]
        if scenario == "repair":
            agent = tmp_path / "agent.py"
            agent.write_text(AGENT)
            fixed = tmp_path / "fixed_scoring.py"
            fixed.write_text(SCORING_LEAKY)
            run += ["--repair-cmd", f"{sys.executable} {agent} {{request_file}} {fixed}"]
        if scenario == "sigkill":
            argv = [sys.executable, "-m", "fsm_runner", *map(str, run)]
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                checkout = _wait_for_hold(clones, proc)
                proc.kill()
                out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            printed += [("killed run stdout", out), ("killed run stderr", err)]
            (checkout / ".aider_fsm" / "released").touch()
        else:
            done = _cli(*run, env=env)
            printed += [("run stdout", done.stdout), ("run stderr", done.stderr)]
            assert done.returncode == (1 if scenario == "fail" else 0), done.stderr.decode()
        (run_dir,) = [p for p in clones.glob("*.runs/*") if p.is_dir()]
        checkout = clones / f"{run_dir.parent.name.removesuffix('.runs')}.checkouts" / run_dir.name
        try:
            if scenario in ("fail", "sigkill"):
                again = _cli("replay", run_dir, "--env", f"OTHER_TOKEN={PLANTED['cli']}", *json_flag, env=env)
                printed += [("replay stdout", again.stdout), ("replay stderr", again.stderr)]
                assert again.returncode == (1 if scenario == "fail" else 0), again.stderr.decode()
            for show in (["show", run_dir], ["show", run_dir, "--json"]):
                shown = _cli(*show, env=env)
                assert shown.returncode == 0, shown.stderr.decode()
                printed += [(" ".join(map(str, show[:1] + show[2:])), shown.stdout + shown.stderr)]
        finally:
            for pid in procs_in(checkout):
                os.kill(pid, signal.SIGKILL)

    leaks = {where: found for where, data in printed if (found := _leaks(data))}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        if found := _leaks(path.read_bytes()):
            leaks[str(path.relative_to(run_dir))] = found
    assert leaks == {}, f"secrets (or their first characters) found: {leaks}"

    # The secrets were really there to mask.
    tests_out = (run_dir / "tests" / "cmd02_try01.stdout").read_text()
    assert tests_out.startswith(f"out {MASK} {MASK} {MASK}\n") and f"{MASK}@127.0.0.1" in tests_out
    assert (run_dir / "tests" / "leak.txt").read_text().startswith(f"artifact {MASK} {MASK} {MASK}\n")
    # The deployed service's lines are all there, masked, up to the one it printed when teardown ended it.
    lines = _chatty_lines(run_dir)
    numbered = [int(ln.split()[1]) for ln in lines if not ln.startswith("chatty bye")]
    assert any(ln.startswith("chatty bye after") for ln in lines), lines[-3:]
    assert len(numbered) >= 5 and all(ln.endswith(f"{MASK} {MASK}") for ln in lines if "bye" not in ln)
    if scenario == "repair":
        (repair_dir,) = run_dir.glob("repair_*")
        prompt = (repair_dir / "prompt.md").read_text()
        assert "x" * 100 in prompt and MASK in prompt  # the metrics file was quoted, masked
        assert MASK in (repair_dir / "agent_output.log").read_text()
    if scenario == "sigkill":
        run_json = json.loads((run_dir / "run.json").read_text())
        assert run_json["status"] == "ok" and run_json["redrive_count"] == 1


# -- one path at a time, on a local target -------------------------------------------------------------------


def test_a_deployed_services_output_is_all_kept_and_masked(make_target: TargetFactory) -> None:
    """The service prints a numbered line with a secret every 50 ms from deploy until teardown ends it:
    every line is in the evidence, in order, masked, up to the one it printed when it was told to stop."""
    pipeline = files.PIPELINE.replace(
        "    - python3 svc.py > .aider_fsm/svc.log 2>&1 &\n",
        "    - python3 svc.py > .aider_fsm/svc.log 2>&1 &\n    - python3 chatty.py &\n",
    )
    pipeline = pipeline.replace("    - python3 evaluate.py\n", "    - sleep 1\n    - python3 evaluate.py\n")
    repo = make_target(pipeline=pipeline)
    (repo / "chatty.py").write_text(CHATTY)
    overrides = {"MY_API_KEY": PLANTED["env"], "HF_TOKEN": PLANTED["boot"]}
    with fsm_runner.setup(repo, env_overrides=overrides) as sess:
        result = sess.run("m")
    assert result.ok, result.error
    (stdout,) = sess.run_dir.glob("deploy_setup/cmd03_try01.stdout")
    lines = stdout.read_text().splitlines()
    assert lines[-1].startswith("chatty bye after ")
    count = int(lines[-1].rsplit(" ", 1)[1])
    assert count >= 5 and lines[:-1] == [f"chatty {n} {MASK} {MASK}" for n in range(count)]


def test_a_dead_runs_evidence_is_masked_by_the_next_setup(make_target: TargetFactory) -> None:
    """A runner SIGKILLed while a command runs never masked that command's output: the next run of the tree
    ends the command and masks what it left."""
    hold = 'echo "held $MY_API_KEY"; touch .aider_fsm/holding; sleep 60'
    repo = make_target(pipeline=files.PIPELINE.replace("cmds: python3 stage.py tests", f"cmds: '{hold}'"))
    env = {**os.environ, "MY_API_KEY": PLANTED["env"]}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(repo)], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_file(repo / ".aider_fsm" / "holding", proc)
        # The running command's record is written just after it starts: under load its output comes first.
        deadline = time.monotonic() + 10
        while PLANTED["env"].encode() not in _held_output(repo) or not _held_output(repo, ".json"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    (dead,) = (repo / ".aider_fsm" / "artifacts").iterdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MY_API_KEY", PLANTED["env"])
        sess = fsm_runner.setup(repo)
        sess.close()
    assert [e["run_id"] for e in sess.ctx.ended_leftovers] == [dead.name]
    assert (dead / "tests" / "cmd01_try01.stdout").read_text() == f"held {MASK}\n"
    leaks = [str(p) for p in dead.rglob("*") if p.is_file() and PLANTED["env"].encode() in p.read_bytes()]
    assert leaks == []


def _held_output(repo: Path, suffix: str = ".stdout") -> bytes:
    found = list(repo.glob(f".aider_fsm/artifacts/*/tests/cmd01_try01{suffix}"))
    return found[0].read_bytes() if found else b""


def test_a_result_object_carries_no_secret(make_target: TargetFactory) -> None:
    """The guard quotes the metrics value (``ok must be true, got "..."``); the result masks it as the
    evidence does, and its metrics too."""
    scoring = 'import os\ndef score(samples, run_id):\n    return {"ok": os.environ["MY_API_KEY"], "score": 0}\n'
    repo = make_target(scoring=scoring)
    with fsm_runner.setup(repo, env_overrides={"MY_API_KEY": PLANTED["env"]}) as sess:
        result = sess.run("m")
    assert not result.ok and result.error is not None
    assert result.error.message.startswith(f'guard has_required_keys failed: ok must be true, got "{MASK}"')
    assert PLANTED["env"] not in json.dumps(result.to_json()) and PLANTED["env"] not in str(result)
