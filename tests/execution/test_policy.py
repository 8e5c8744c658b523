"""The security policy: a table of commands that pins what is blocked, why, and what is allowed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm_runner.errors import ContractError
from fsm_runner.execution.policy import SecurityPolicy

SAFE = SecurityPolicy()
SYSTEM = SecurityPolicy(mode="system")

HARD = "hard-deny: "
SAFE_DENY = "safe-mode denylist: "
INTERACTIVE = "looks interactive under unattended=strict: "

# (command, expected reason prefix in safe mode or None, expected in system mode or None)
TABLE: list[tuple[str, str | None, str | None]] = [
    # --- hard deny, including evasions ---------------------------------------------------------------------
    ("rm -rf /", HARD + "destroys / (rm -rf /)", HARD + "destroys /"),
    ("rm -fr /*", HARD + "destroys /", HARD),
    ("rm -r -f /", HARD + "destroys /", HARD),
    ('rm  -rf  "/"', HARD + "destroys / (rm -rf /)", HARD),
    ("rm -rf '/'", HARD + "destroys /", HARD),
    ("/bin/rm -rf /", HARD + "destroys /", HARD),
    ("\\rm -rf /", HARD + "destroys /", HARD),
    ("r''m -rf /", HARD + "destroys /", HARD),
    ("rm --recursive --force /", HARD + "destroys /", HARD),
    ("rm -rf //", HARD + "destroys /", HARD),
    ("rm -rf /./", HARD + "destroys /", HARD),
    ("rm -rf / --no-preserve-root", HARD + "rm --no-preserve-root", HARD),
    ("rm -Rf /etc", HARD + "destroys /etc", HARD),
    ("rm -rf /usr/*", HARD + "destroys /usr/*", HARD),
    ("rm -rf /usr/lib", HARD + "destroys /usr/lib", HARD),
    ("rm -rf /tmp/../etc", HARD + "destroys /etc", HARD),
    ("rm -rf /home/alice", HARD + "destroys /home/alice", HARD),
    ("rm -rf ~", HARD + "destroys your home directory", HARD),
    ("rm -rf $HOME/", HARD + "destroys your home directory", HARD),
    ('rm -rf "$BUILD_DIR"/*', HARD + "destroys / when a variable is empty", HARD),
    ("a && rm -rf /", HARD + "destroys /", HARD),
    ("echo hi;rm -rf /", HARD + "destroys /", HARD),
    ("true\nrm -rf /boot", HARD + "destroys /boot", HARD),
    ("bash -c 'rm -rf /'", HARD + "destroys /", HARD),
    ('sh -lc "cd / && rm -rf /var"', HARD + "destroys /var", HARD),
    ('eval "rm -rf /"', HARD + "destroys /", HARD),
    ("echo $(rm -rf /)", HARD + "destroys /", HARD),
    ('echo "`rm -rf /`"', HARD + "destroys /", HARD),
    ("env X=1 rm -rf /", HARD + "destroys /", HARD),
    ("env -S 'rm -rf /'", HARD + "destroys /", HARD),
    ("nohup rm -rf / &", HARD + "destroys /", HARD),
    ("timeout -s KILL 5 rm -rf /", HARD + "destroys /", HARD),
    ("sudo -u root rm -rf /", HARD + "destroys /", HARD),
    ("su -c 'rm -rf /' root", HARD + "destroys /", HARD),
    ("find / -delete", HARD + "destroys /", HARD),
    ("find /etc -name '*.conf' -exec rm -f {} +", HARD + "destroys /etc", HARD),
    ("mv /usr /tmp/usr", HARD + "destroys /usr", HARD),
    ("chmod -R 777 /", HARD + "recursive chmod of / (chmod -R 777 /)", HARD),
    ("chown -R nobody /etc", HARD + "recursive chown of /etc", HARD),
    (":(){ :|:& };:", HARD + "fork bomb", HARD + "fork bomb"),
    (":(){ :|: & };:", HARD + "fork bomb", HARD),
    ("bomb() { bomb | bomb & }; bomb", HARD + "fork bomb", HARD),
    ("dd if=/dev/zero of=/dev/sda bs=1M", HARD + "writes to the raw disk /dev/sda", HARD),
    ("echo x > /dev/sda", HARD + "writes to the raw disk /dev/sda", HARD),
    ("cat img 1>/dev/nvme0n1", HARD + "writes to the raw disk /dev/nvme0n1", HARD),
    ("mkfs.ext4 /dev/vdb1", HARD + "writes to the raw disk /dev/vdb1", HARD),
    ("cp disk.img /dev/xvda", HARD + "writes to the raw disk /dev/xvda", HARD),
    # --- safe-mode denylist (system mode lifts it) ---------------------------------------------------------
    ("sudo ls", SAFE_DENY + "sudo", None),
    ("sudo\tls", SAFE_DENY + "sudo", None),
    ("x; sudo y", SAFE_DENY + "sudo", None),
    ("x|sudo tee /etc/hosts", SAFE_DENY + "sudo", None),
    ("FOO=1 sudo -E make install", SAFE_DENY + "sudo", None),
    ("(cd sub && sudo make)", SAFE_DENY + "sudo", None),
    ("cat <(sudo cat /etc/shadow)", SAFE_DENY + "sudo", None),
    ('sh -c "su - root -c id"', SAFE_DENY + "su", None),
    ("mkfs.ext4 disk.img", SAFE_DENY + "mkfs.ext4", None),
    ("dd if=x of=/dev/loop0", SAFE_DENY + "dd of=/dev/loop0", None),
    ("shutdown -h now", SAFE_DENY + "shutdown", None),
    ("reboot", SAFE_DENY + "reboot", None),
    ("/sbin/poweroff", SAFE_DENY + "poweroff", None),
    ("systemctl reboot", SAFE_DENY + "systemctl reboot", None),
    ("init 0", SAFE_DENY + "init 0", None),
    ("docker system prune -af", SAFE_DENY + "docker system prune", None),
    ("docker volume prune -f", SAFE_DENY + "docker volume prune", None),
    ("iptables -F", SAFE_DENY + "iptables", None),
    ("mount /dev/sdb1 /mnt", SAFE_DENY + "mount", None),
    ("kill -9 -1", SAFE_DENY + "kill -1", None),
    ("sysctl -w vm.swappiness=1", SAFE_DENY + "sysctl -w", None),
    # --- allowed ------------------------------------------------------------------------------------------
    ("rm -rf ./build", None, None),
    ("rm -rf /tmp/x", None, None),
    ("rm -rf build/ dist/ .pytest_cache", None, None),
    ("rm -rf /home/alice/project/out", None, None),
    ('rm -rf "$AIDER_FSM_ARTIFACTS_DIR/tmp"', None, None),
    ("rm -rf ${OUT:?}/", None, None),
    ("rm -f /etc/app.conf.bak", None, None),  # not recursive: cannot destroy a tree
    ("python -m pytest -q", None, None),
    ("echo sudo is a word", None, None),  # only command words count, not arguments
    ('echo "rm -rf /"', None, None),  # a string argument is not executed
    ("grep -rn 'sudo' .", None, None),
    ("echo ok # sudo reboot", None, None),  # a comment
    ("command -v sudo", None, None),  # a lookup, not a run
    ("dd if=/dev/zero of=/tmp/blob bs=1M count=1", None, None),
    ("dd if=data of=/dev/null", None, None),
    ("dd if=/dev/sda of=disk.img", None, None),  # reading a disk is not destroying it
    ("ls -l /dev/sda", None, None),
    ("docker system df", None, None),
    ("find . -name '*.pyc' -delete", None, None),
    ("kill %1", None, None),
    ("echo $((1 + 2))", None, None),
    ("curl -fsSL https://astral.sh/uv/install.sh | sh", None, None),  # decided: not on the safe denylist
    ("pip install -e '.[test]'", None, None),
    # --- interactive under strict (independent of mode) ---------------------------------------------------
    ("vim notes.txt", INTERACTIVE + "vim opens an editor", INTERACTIVE),
    ("git log | less", INTERACTIVE + "less is a full-screen program", INTERACTIVE),
    ("top", INTERACTIVE + "top", INTERACTIVE),
    ("python", INTERACTIVE + "python without a script or -c", INTERACTIVE),
    ("python3.11 -u", INTERACTIVE + "python3.11", INTERACTIVE),
    ("node", INTERACTIVE + "node", INTERACTIVE),
    ("bash", INTERACTIVE + "bash without -c or a script", INTERACTIVE),
    ("bash -i", INTERACTIVE + "bash", INTERACTIVE),
    ("read -p 'Continue?' answer", INTERACTIVE + "read waits for input", INTERACTIVE),
    ("ssh build-host make", INTERACTIVE + "ssh without -o BatchMode=yes", INTERACTIVE),
    ("git commit", INTERACTIVE + "git commit without -m", INTERACTIVE),
    ("git -C repo commit --amend", INTERACTIVE + "git commit without -m", INTERACTIVE),
    ("git rebase -i HEAD~3", INTERACTIVE + "git rebase -i", INTERACTIVE),
    ("docker run -it ubuntu bash", INTERACTIVE + "docker run -t needs a terminal", INTERACTIVE),
    ("npm init", INTERACTIVE + "npm init without -y", INTERACTIVE),
    ("apt-get install curl", INTERACTIVE + "apt-get install without -y", INTERACTIVE),
    ("conda create -n env python=3.11", INTERACTIVE + "conda create without -y", INTERACTIVE),
    ("pip uninstall torch", INTERACTIVE + "pip uninstall without -y", INTERACTIVE),
    ("huggingface-cli login", INTERACTIVE + "huggingface-cli login without --token", INTERACTIVE),
    ("gh auth login", INTERACTIVE + "gh auth login", INTERACTIVE),
    ("sqlite3 results.db", INTERACTIVE + "sqlite3", INTERACTIVE),
    ("bash -c 'vim x'", INTERACTIVE + "vim", INTERACTIVE),
    # --- not interactive ----------------------------------------------------------------------------------
    ("python - <<'EOF'\nimport os\nvim = input\nEOF\necho done", None, None),  # heredoc bodies are data
    ("echo 1 | python", None, None),
    ("python < script.py", None, None),
    ("python -c 'print(1)'", None, None),
    ("python --version", None, None),
    ("bash -c 'echo hi'", None, None),
    ("bash scripts/run.sh", None, None),
    ("while read -r line; do echo $line; done < list.txt", None, None),
    ("read -r x < file", None, None),
    ("top -bn1", None, None),
    ("emacs --batch -l build.el", None, None),
    ("ssh -o BatchMode=yes host true", None, None),
    ("scp -B a host:b", None, None),
    ("git commit -m 'msg'", None, None),
    ("git commit -am msg", None, None),
    ("git commit --no-edit --amend", None, None),
    ("docker run --rm -v $PWD:/w img pytest", None, None),
    ("docker build -t img .", None, None),
    ("npm init -y", None, None),
    ("apt-get install -y curl", None, None),
    ("conda install --yes numpy", None, None),
    ("huggingface-cli login --token $HF_TOKEN", None, None),
    ("sqlite3 results.db 'select count(*) from runs'", None, None),
    ("redis-cli ping", None, None),
]


@pytest.mark.parametrize(("cmd", "safe", "system"), TABLE, ids=[repr(row[0])[:40] for row in TABLE])
def test_policy_table(cmd: str, safe: str | None, system: str | None) -> None:
    for policy, expected in ((SAFE, safe), (SYSTEM, system)):
        reason = policy.check(cmd)
        if expected is None:
            assert reason is None, f"{policy.mode}: {cmd!r} unexpectedly blocked: {reason}"
        else:
            assert reason is not None and reason.startswith(expected), f"{policy.mode}: {cmd!r} -> {reason!r}"


def test_table_is_big_enough() -> None:
    blocked = [row for row in TABLE if row[1] is not None]
    allowed = [row for row in TABLE if row[1] is None]
    assert len(blocked) >= 40 and len(allowed) >= 20


def test_strict_off_allows_interactive_commands() -> None:
    relaxed = SecurityPolicy(strict=False)
    assert relaxed.check("vim notes.txt") is None
    assert relaxed.check("git commit") is None
    assert relaxed.check("sudo vim") == "safe-mode denylist: sudo"  # strictness does not lift the denylist


def test_contract_denylist_matches_raw_and_normalised_forms() -> None:
    policy = SecurityPolicy(mode="system", denylist=[r"git push --force", r"^curl"])
    assert policy.check("git push --force origin main") == "contract denylist: git push --force"
    assert policy.check('git  push  "--force"') == "contract denylist: git push --force"
    assert policy.check("curl https://x") == "contract denylist: ^curl"
    assert policy.check("git push origin main") is None


def test_contract_allowlist_requires_a_match() -> None:
    policy = SecurityPolicy(allowlist=[r"^python -m pytest", r"^make (test|lint)$"])
    assert policy.check("python -m pytest -q") is None
    assert policy.check("make test") is None
    assert policy.check("make deploy") == "not in contract allowlist: make deploy"
    assert SecurityPolicy(allowlist="^make").check("make x") is None  # a single string is one pattern


def test_order_hard_deny_then_safe_then_contract() -> None:
    everything = SecurityPolicy(allowlist=[".*"], denylist=[".*"])
    assert everything.check("rm -rf /").startswith("hard-deny")  # type: ignore[union-attr]
    assert everything.check("sudo ls") == "safe-mode denylist: sudo"
    assert everything.check("ls") == "contract denylist: .*"
    system_allow_all = SecurityPolicy(mode="system", allowlist=[".*"])
    assert system_allow_all.check("rm -rf /").startswith("hard-deny")  # type: ignore[union-attr]
    assert system_allow_all.check("sudo ls") is None
    # the allowlist is checked before interactivity: an unlisted editor is reported as unlisted
    assert SecurityPolicy(allowlist=["^make"]).check("vim x") == "not in contract allowlist: vim x"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "yolo"}, "security.mode: must be 'safe' or 'system', got 'yolo'"),
        ({"denylist": ["ok", "(unclosed"]}, "security.denylist[1]: invalid regular expression '(unclosed'"),
        ({"allowlist": [3]}, "security.allowlist[0]: must be a regular expression string, got int"),
        ({"strict": "yes"}, "strict: must be true or false"),
    ],
)
def test_invalid_policies_give_clear_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ContractError) as info:
        SecurityPolicy(**kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_empty_and_unbalanced_commands_do_not_crash() -> None:
    assert SAFE.check("") is None
    assert SAFE.check("   ") is None
    assert SAFE.check("echo 'unterminated") is None
    assert SAFE.check('rm -rf "/') == "hard-deny: destroys / (rm -rf /)"  # bash would fail, we still refuse


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("rm -f/\"'`$(){};|&<>\\\n*~#ab=")), max_size=60))
def test_check_never_raises(cmd: str) -> None:
    for policy in (SAFE, SYSTEM):
        result = policy.check(cmd)
        assert result is None or isinstance(result, str)
