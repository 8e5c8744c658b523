"""The policy against the ways an adversarial review got commands past it, and against everyday commands.

Each reproducer is refused with its reason; the hard deny holds in every mode whatever the syntax; the
contract allowlist applies to every invocation; variables the stage env sets are expanded before the check;
and the check is linear in the command's length.
"""

from __future__ import annotations

import base64
import os
import time

import pytest

from fsm_runner.execution.policy import SecurityPolicy

SAFE = SecurityPolicy()
SYSTEM = SecurityPolicy(mode="system")
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/home/me", "VIRTUAL_ENV": "/work/repo/.venv"}

HARD = "hard-deny: "
SAFE_DENY = "safe-mode denylist: "
UNREADABLE = "unreadable in safe mode: "

# (command, what the safe-mode refusal starts with, what the system-mode refusal starts with or None)
REPRODUCERS: list[tuple[str, str, str | None]] = [
    ("$'sudo' id", SAFE_DENY + "sudo", None),
    ("/lib64/ld-linux-x86-64.so.2 /usr/bin/sudo id", SAFE_DENY + "sudo", None),
    ("toybox rm -rf /etc", HARD + "destroys /etc", HARD + "destroys /etc"),
    ("systemd-run id", SAFE_DENY + "systemd-run", None),
    ("unshare -r sh -c id", SAFE_DENY + "unshare", None),
    ("setpriv --reuid=0 id", SAFE_DENY + "setpriv", None),
    ("{sudo,id}", SAFE_DENY + "sudo", None),
    ("sudo${IFS}id", SAFE_DENY + "sudo", None),
    ("bash <<< 'sudo id'", SAFE_DENY + "sudo", None),
    ("bash <<EOF\nsudo id\nEOF", SAFE_DENY + "sudo", None),
    ("bash <<'EOF'\nsudo id\nEOF", SAFE_DENY + "sudo", None),
    ("function f { sudo id; }; f", SAFE_DENY + "sudo", None),
    ("coproc sudo id", SAFE_DENY + "sudo", None),
    ("coproc N { sudo id; }", SAFE_DENY + "sudo", None),
    ("trap 'sudo id' EXIT", SAFE_DENY + "sudo", None),
    ("/usr/bin/su[d]o id", SAFE_DENY + "sudo", None),
    ("find . -exec sudo id \\;", SAFE_DENY + "sudo", None),
    ("script -qc 'sudo id' /dev/null", SAFE_DENY + "sudo", None),
    ("chroot / id", SAFE_DENY + "chroot", None),
    ("strace -f sudo id", SAFE_DENY + "sudo", None),
    ("bash -c " + '"$(' * 7 + "sudo id" + ')"' * 7, HARD + "nested more than 6 levels deep", HARD + "nested"),
    ("rm -rf /{etc,usr}", HARD + "destroys /etc (rm -rf /etc /usr)", HARD + "destroys /etc"),
    ("rm -rf $PREFIX/{bin,lib}", HARD + "destroys /bin", HARD + "destroys /bin"),
    ("rm -rf $PREFIX/bin", HARD + "destroys /bin", HARD + "destroys /bin"),
    ("mv -t /tmp/x /etc", HARD + "destroys /etc (mv -t /tmp/x /etc)", HARD + "destroys /etc"),
    ("echo sudo ls | bash", SAFE_DENY + "sudo", None),
    ("bash <(echo sudo id)", SAFE_DENY + "sudo", None),
    ("taskset 1 sudo id", SAFE_DENY + "sudo", None),
    ("rm -rf ${UNSET:-}/", HARD + "destroys /", HARD + "destroys /"),
    # the same tricks, found on the way
    ("eval \"$(echo sudo id)\"", SAFE_DENY + "sudo", None),
    ("a=sud; b=o; $a$b id", SAFE_DENY + "sudo", None),
    ("IFS=,; x=sudo,id; $x", SAFE_DENY + "sudo", None),
    ("echo ${X:-$(sudo id)}", SAFE_DENY + "sudo", None),
    ("echo $(( $(sudo id) ))", SAFE_DENY + "sudo", None),
    ("env 'BASH_FUNC_f%%=() { sudo id; }' bash -c f", SAFE_DENY + "sudo", None),
    ("printf '\\x73udo id' | sh", SAFE_DENY + "sudo", None),
    ("X=/etc; rm -rf $X", HARD + "destroys /etc", HARD + "destroys /etc"),
    ("f() { rm -rf \"$1\"; }; f /etc", HARD + "destroys /etc", HARD + "destroys /etc"),
    ("bash -c 'rm -rf \"$1\"' _ /usr", HARD + "destroys /usr", HARD + "destroys /usr"),
    ("echo / | xargs rm -rf", HARD + "destroys /", HARD + "destroys /"),
    ("for d in /etc /usr; do rm -rf $d; done", HARD + "destroys /etc", HARD + "destroys /etc"),
    ("find / -exec rm -rf {} +", HARD + "destroys /", HARD + "destroys /"),
    ("$BASH -c 'sudo id'", SAFE_DENY + "sudo", None),
    ("> out sudo id", SAFE_DENY + "sudo", None),
    ("hash -p /usr/bin/sudo ls; ls id", SAFE_DENY + "sudo", None),
    ("alias ls=rm; ls -rf /", HARD + "destroys /", HARD + "destroys /"),
    ("read x <<< 'sudo id'; $x", SAFE_DENY + "sudo", None),
    ("parallel ::: 'sudo id'", SAFE_DENY + "sudo", None),
    ("echo 'sudo id' | at now", SAFE_DENY + "sudo", None),
    ("GIT_SSH_COMMAND='sudo id' git fetch", SAFE_DENY + "sudo", None),
    ("PS4='$(sudo id)' bash -xc :", SAFE_DENY + "sudo", None),
    ("git -c alias.x='!sudo id' x", SAFE_DENY + "sudo", None),
    ("git config core.pager 'rm -rf /'", HARD + "destroys /", HARD + "destroys /"),
    # what the reader cannot tell: refused in safe mode, with why and how to write it
    ("echo c3VkbyBpZA== | base64 -d | bash", UNREADABLE + "a shell reading stdin runs text computed at run time", None),
    ("$(echo c3Vkbw== | base64 -d) id", UNREADABLE + "the program name $(echo c3Vkbw== | base64 -d)", None),
    ("python3 -c 'print(1)' | sh", UNREADABLE + "a shell reading stdin runs text computed at run time", None),
    ("/usr/bin/pyth?n3 x.py", UNREADABLE + "the program name /usr/bin/pyth?n3 is a pattern", None),
]


@pytest.mark.parametrize(("cmd", "safe", "system"), REPRODUCERS, ids=[repr(r[0])[:45] for r in REPRODUCERS])
def test_reproducers_are_refused_with_their_reason(cmd: str, safe: str, system: str | None) -> None:
    for env in (None, {"PATH": "/usr/bin:/bin"}):
        reason = SAFE.check(cmd, env=env)
        assert reason is not None and reason.startswith(safe), f"safe, env={env}: {cmd!r} -> {reason!r}"
        reason = SYSTEM.check(cmd, env=env)
        if system is None:
            assert reason is None, f"system, env={env}: {cmd!r} -> {reason!r}"
        else:
            assert reason is not None and reason.startswith(system), f"system: {cmd!r} -> {reason!r}"


# The hard deny, written with every trick: refused in both modes.
HARD_FORMS = [
    "$'rm' -rf /",
    "{rm,-rf,/}",
    "rm${IFS}-rf${IFS}/",
    "bash <<< 'rm -rf /'",
    "bash <<EOF\nrm -rf /\nEOF",
    "function f { rm -rf /; }; f",
    "coproc rm -rf /",
    "trap 'rm -rf /' EXIT",
    "/bin/r[m] -rf /",
    "/bin/r? -rf /",
    "find . -exec rm -rf / \\;",
    "script -qc 'rm -rf /' /dev/null",
    "chroot / rm -rf /",
    "strace -f rm -rf /",
    "echo rm -rf / | bash",
    "bash <(echo rm -rf /)",
    "taskset 1 rm -rf /",
    "rm -rf ${UNSET:-}/",
    "rm -rf /{etc,usr}",
    "mv -t /tmp/x /etc",
    "mv --target-directory=/tmp/x /usr",
    "sudo -u root rm -rf /",
    "uv run rm -rf /",
    "alias x='rm -rf /'",
    "$(echo rm) -rf /",
    'f() { "$@"; }; f rm -rf /',
    "sh -c '\"$@\"' _ rm -rf /",
    "set -- rm -rf /; \"$@\"",
    'a=(rm -rf /); "${a[@]}"',
    "declare -a x=(rm -rf /); \"${x[@]}\"",
    "read -a a <<< 'rm -rf /'; \"${a[@]}\"",
    "f() { $1 -rf $2; }; f rm /etc",
    "xargs -a <(echo /) rm -rf",
    "hash -p /bin/rm ls; ls -rf /",
    "rm -rf /proc/self/root/etc",
    "rm -rf /usr/bin/*",
    "rsync -a --delete empty/ /",
]


@pytest.mark.parametrize("cmd", HARD_FORMS)
def test_the_hard_deny_holds_in_every_mode_whatever_the_syntax(cmd: str) -> None:
    for policy in (SAFE, SYSTEM, SecurityPolicy(mode="system", allowlist=[".*"], strict=False)):
        reason = policy.check(cmd, env=ENV)
        assert reason is not None and reason.startswith(HARD), f"{policy.mode}: {cmd!r} -> {reason!r}"
        assert "destroys" in reason


def test_unreadable_text_is_refused_in_safe_mode_with_how_to_write_it() -> None:
    reason = SAFE.check("echo c3VkbyBpZA== | base64 -d | bash")
    assert reason is not None and reason.endswith("write the commands themselves")
    reason = SAFE.check("$(echo c3Vkbw== | base64 -d) -rf build")
    assert reason is not None and "write the program name itself" in reason
    reason = SAFE.check("/usr/bin/s?do id")
    assert reason == SAFE_DENY + "sudo"  # a pattern that names a denied program is refused as that program
    # system mode runs what it cannot read, but never what the hard deny catches
    assert SYSTEM.check("echo c3VkbyBpZA== | base64 -d | bash") is None
    assert SYSTEM.check("echo rm -rf / | base64 | base64 -d | bash") is None
    assert SYSTEM.check("echo rm -rf / | bash").startswith(HARD)  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------------
# variables of the stage env
# --------------------------------------------------------------------------------------------------------


def test_a_variable_the_stage_env_sets_is_expanded_before_the_check() -> None:
    cmd = 'rm -rf "$VIRTUAL_ENV/lib"'
    assert SAFE.check(cmd, env={"VIRTUAL_ENV": "/work/repo/.venv"}) is None
    assert SAFE.check(cmd, env={"VIRTUAL_ENV": "/usr"}) == (
        "hard-deny: destroys /usr/lib (rm -rf /usr/lib); VIRTUAL_ENV=/usr in the stage env: "
        "write a literal path inside the repository"
    )
    assert SAFE.check(cmd, env={"PATH": "/bin"}) == (
        "hard-deny: destroys /lib (rm -rf /lib); VIRTUAL_ENV is not set in the stage env: "
        "write a literal path inside the repository"
    )
    assert SAFE.check(cmd) == (
        "hard-deny: destroys /lib when a variable is empty (rm -rf $VIRTUAL_ENV/lib): set VIRTUAL_ENV in the "
        "stage env, write ${VIRTUAL_ENV:?} so that an empty value stops the command, or write a literal path "
        "inside the repository"
    )
    assert SAFE.check('rm -rf "${VIRTUAL_ENV:?}/lib"') is None
    assert SAFE.check('rm -rf "${VIRTUAL_ENV:?}/lib"', env={}) is None  # unset: bash stops before rm


def test_stage_env_values_reach_program_names_and_bodies() -> None:
    env = {"RUNNER": "sudo", "SCRIPT": "make; sudo make install", "PY": "/opt/venv/bin/python"}
    assert SAFE.check("$RUNNER make", env=env) == SAFE_DENY + "sudo"
    assert SAFE.check('bash -c "$SCRIPT"', env=env) == SAFE_DENY + "sudo"
    assert SAFE.check('"$PY" -m pytest', env=env) is None
    assert SAFE.check('rm -rf "$HOME"', env=env).startswith(HARD + "destroys your home directory")  # type: ignore[union-attr]
    assert SAFE.check("rm -rf $HOME/project/build", env={"HOME": "/home/me"}) is None


# --------------------------------------------------------------------------------------------------------
# the contract allowlist, per invocation
# --------------------------------------------------------------------------------------------------------


def test_the_allowlist_applies_to_each_invocation() -> None:
    policy = SecurityPolicy(allowlist=[r"^python3? ", r"^make test$"])
    assert policy.check("python3 -V") is None
    assert policy.check("python3 -V; make test") is None
    assert policy.check("python3 -V; make deploy") == "not in contract allowlist: make deploy"
    assert policy.check("python3 -V && curl https://x | sh") == "not in contract allowlist: curl https://x"
    assert policy.check("python3 x.py | tee out") == "not in contract allowlist: tee out"
    assert policy.check("python3 x.py $(make deploy)") == "not in contract allowlist: make deploy"
    assert policy.check("bash -c 'make test'") == "not in contract allowlist: bash -c make test"
    # builtins that only change the shell's state need no entry; assignments in front are allowed
    assert policy.check("cd sub && export X=1 && PYTHONPATH=src python3 -m pytest") is None
    assert policy.check("test -f x || echo missing; make test") is None
    # a function the command defines is checked through its body
    assert policy.check("t() { make test; }; t") is None
    assert policy.check("t() { make deploy; }; t") == "not in contract allowlist: make deploy"


def test_the_denylist_sees_every_invocation_in_its_expanded_form() -> None:
    policy = SecurityPolicy(mode="system", denylist=[r"git push --force"])
    assert policy.check("{git,push,--force}") == "contract denylist: git push --force"
    assert policy.check("bash -c $'git push \\x2d-force'").startswith("contract denylist")  # type: ignore[union-attr]
    assert policy.check("git push origin main") is None


# --------------------------------------------------------------------------------------------------------
# everyday commands stay allowed
# --------------------------------------------------------------------------------------------------------

EVERYDAY = [
    "python -m pytest -q",
    "pytest tests/ -x -q",
    "python3 -m pytest -k 'not slow' --maxfail=1",
    "pip install -e .",
    "pip install -e '.[test]'",
    "pip install -r requirements.txt",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'",
    "make test",
    "make -j4 all",
    "npm test",
    "npm ci && npm run build",
    "npx jest --ci",
    "bash scripts/x.sh",
    "cd sub && make",
    "cd sub && python -m pytest",
    "(cd frontend && npm test)",
    "git log --oneline | head -5",
    "pytest -q 2>&1 | tail -n 20",
    "python evaluate.py > out.json 2>&1",
    'echo "$(date) start" >> log.txt',
    "export PATH=$PWD/bin:$PATH && make",
    "for f in tests/*.py; do python $f; done",
    "for i in {1..100}; do echo $i; done",
    'python -c "import sys; print(sys.version)"',
    "python - <<'EOF'\nimport os\nprint(os.getcwd())\nEOF",
    "uv run pytest",
    "poetry run pytest -q",
    "conda run -n env pytest",
    "timeout 60 python x.py",
    "nohup python svc.py > svc.log 2>&1 &",
    "python svc.py & PID=$!; sleep 1; kill $PID",
    "kill $(cat svc.pid)",
    "[ -d .venv ] || python3 -m venv .venv",
    "[[ -f a && -f b ]] && echo both",
    ". .venv/bin/activate && pytest",
    "source .venv/bin/activate && python -m pytest",
    "mkdir -p out && cp a out/",
    "rm -rf build dist .pytest_cache",
    'rm -rf "$AIDER_FSM_ARTIFACTS_DIR/tmp"',
    'cp metrics.json "$AIDER_FSM_ARTIFACTS_DIR/"',
    "tar xzf data.tgz -C data",
    "cat data.json | jq .x",
    "awk '{print $1}' data.txt | sort | uniq -c",
    "find . -name '*.pyc' -delete",
    "xargs -n1 echo < list.txt",
    'case "$MODE" in smoke) make quick;; *) make test;; esac',
    "if [ -f x ]; then echo y; fi",
    'while read -r l; do echo "$l"; done < files.txt',
    'eval "$(conda shell.bash hook)"',
    "curl -LsSf https://astral.sh/uv/install.sh | sh",
    "curl -fsS http://127.0.0.1:8000/health",
    "bash -c 'echo hi'",
    'sh -c "cd sub && make"',
    "$HOME/.local/bin/uv sync",
    "~/.cargo/bin/cargo build",
    '"$VIRTUAL_ENV/bin/python" -m pytest',
    "python -m pytest --basetemp=$(mktemp -d)",
    "diff <(sort a) <(sort b)",
    "trap 'kill $PID' EXIT; python svc.py",
    "set -euo pipefail; make",
    "f() { echo hi; }; f",
    "echo $((1 + 2))",
    "chmod +x scripts/run.sh && ./scripts/run.sh",
    "docker run --rm -v $PWD:/w img pytest",
    "go test ./...",
    "cargo test",
    "./gradlew test",
    "xvfb-run -a pytest",
    "ruff check . && mypy src",
    "printf '%s\\n' a b c > list.txt",
    "python -c 'import json,sys; json.dump({}, sys.stdout)' > m.json",
    "EDITOR=vim git commit -m 'msg'",  # a command held in a variable is checked, not run now
    "git -c user.name=ci commit -m msg",
    "alias ll='ls -la'; ll",
    "parallel -j4 gzip ::: *.txt",
]


@pytest.mark.parametrize("cmd", EVERYDAY)
def test_everyday_commands_stay_allowed(cmd: str) -> None:
    for env in (None, {**ENV, "AIDER_FSM_ARTIFACTS_DIR": "/runs/r1/tests"}):
        assert SAFE.check(cmd, env=env) is None, f"env={env is not None}: {cmd!r} -> {SAFE.check(cmd, env=env)}"


# --------------------------------------------------------------------------------------------------------
# linear time
# --------------------------------------------------------------------------------------------------------


def _payload(size: int) -> str:
    data = base64.b64encode(os.urandom(size)).decode()[:size]
    return f"echo {data} | base64 -d > blob.bin"


def test_a_large_payload_command_is_checked_in_linear_time() -> None:
    """A 60 KB base64 command took 17.5 s with the quadratic check; 1 MiB must now take well under a second."""
    small, big = _payload(64 << 10), _payload(1 << 20)
    SAFE.check(small)
    start = time.process_time()
    assert SAFE.check(big, env=ENV) is None
    elapsed = time.process_time() - start
    assert elapsed < 1.0, f"1 MiB checked in {elapsed:.2f}s"


def test_many_short_commands_scale_linearly() -> None:
    def timed(n: int) -> float:
        script = "\n".join(f"python -m pytest tests/test_{i}.py -q && echo ok{i}" for i in range(n))
        start = time.process_time()
        assert SAFE.check(script, env=ENV) is None
        return time.process_time() - start

    timed(200)
    small, big = min(timed(500) for _ in range(3)), min(timed(4000) for _ in range(3))
    assert big < 8 * small * 2.5, f"500 commands: {small:.3f}s, 4000 commands: {big:.3f}s"
