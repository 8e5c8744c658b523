"""The command security policy: decide, before a command runs, whether it may run at all.

Commands are shell text, so matching regexes against the raw string is easy to fool (``rm  -rf "/"``,
``/bin/rm -fr /*``, ``x;sudo y``). The policy therefore lexes the command the way bash roughly would
(:mod:`fsm_runner.execution.shellwords`): quotes are removed, ``; && || | & ( )`` and newlines split it into
simple commands, ``$(..)``, backticks, ``<(..)``, ``bash -c '..'`` and ``eval`` bodies are checked as
commands of their own, and wrappers (``sudo``, ``env``, ``nohup``, ``timeout 5``, ``xargs``, ...) and
``VAR=x`` prefixes are peeled off to find the program that really runs. Rules then look at *command words*,
not at text, so ``echo sudo is a word`` and ``echo "rm -rf /"`` are allowed while ``sudo ls`` is not.

Order of checks, first hit wins:

1. hard deny (no mode lifts it): recursive ``rm``/``chmod``/``chown``, ``find -delete`` or ``mv`` on ``/``,
   a top-level system directory (``/etc``, ``/usr``, ``/home``, ...), a glob directly under them, or your home
   directory (also when an unset ``$VAR`` would leave ``/``); ``rm --no-preserve-root``; fork bombs; writes to
   raw disks (``dd of=``, ``>``, ``tee``, ``cp``, ``mkfs`` on ``/dev/sd*``, ``nvme*``, ``vd*``, ...).
2. ``mode: safe`` denylist: privilege escalation (sudo, su, doas), disk tools (mkfs, fdisk, parted, wipefs),
   ``dd of=/dev/*`` (except /dev/null and friends), power (shutdown, reboot, halt, poweroff, ``init 0``,
   ``systemctl reboot``), firewall (iptables, nft, ufw), mount, kernel modules, user management,
   ``docker system prune`` / ``docker volume prune``, ``kill -9 -1``, ``sysctl -w``. ``curl ... | sh`` and
   package managers are *not* on it: the contract's commands are arbitrary code already, so a downloaded
   installer adds no capability; add ``curl.*\\|\\s*(ba)?sh`` to the contract denylist to forbid it.
3. the contract ``denylist`` (``re.search`` on the raw command and on its normalised form).
4. the contract ``allowlist``: when non-empty, the command (raw or normalised) must ``re.search``-match one.
5. ``strict`` (unattended=strict): commands that would wait for a human are refused (editors, pagers, REPLs
   and shells without a script, ``read``, ``ssh`` without BatchMode, ``git commit`` without ``-m``,
   ``docker run -t``, ``npm init`` / ``apt-get install`` / ``conda install`` / ``pip uninstall`` without
   ``-y``, ``gh auth login`` / ``huggingface-cli login`` without a token, ``aws configure``).

This is a guardrail against mistakes and careless agents, not a sandbox: a command built at run time
(``$(echo rm) -rf /``), relative paths that climb to ``/``, or a script file that does the damage are not
seen.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import Attribute, define, field

from fsm_runner.errors import ContractError
from fsm_runner.execution.shellwords import SHELLS, Invocation, basename, collect, shell_args, su_body

MODES = ("safe", "system")

# ----------------------------------------------------------------------------------------------------------
# Hard deny
# ----------------------------------------------------------------------------------------------------------

# Top-level directories whose loss breaks the system (or every user's data).
_SYSTEM_DIR_NAMES = (
    "bin boot dev etc home lib lib32 lib64 libx32 media mnt opt proc root run sbin snap srv sys usr var"
)
_SYSTEM_DIRS = frozenset(_SYSTEM_DIR_NAMES.split())
_SYSTEM_SUBDIRS = frozenset(
    {"usr/bin", "usr/sbin", "usr/lib", "usr/lib32", "usr/lib64", "usr/libexec", "usr/share", "usr/include"}
    | {"usr/local", "var/lib"}
)
_GLOB = re.compile(r"[*?\[]")
_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_GUARDED_VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?\?")
_HOME = re.compile(r"^(~|\$HOME\b|\$\{HOME\})")
_RAW_DISK = re.compile(
    r"^/dev/(sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|disk\d|disk/|dm-\d|md\d|mapper/)"
)
_FORK_BOMB = re.compile(r"(?:function)?([^\s(){}|&;]+)\(\)\{\1\|\1&;?\};?\1")
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_DISK_WRITERS = frozenset({"tee", "shred", "wipefs", "mke2fs", "mkswap", "blkdiscard", "badblocks"})


def _system_target(path: str) -> str | None:
    """The system location a path covers (``/``, ``/etc``, ``/usr/*``), or None for an ordinary path."""
    if not path.startswith("/"):
        return None
    norm = posixpath.normpath(re.sub(r"/+", "/", path))
    if norm == "/":
        return "/"
    parts = norm.strip("/").split("/")
    if _GLOB.search(parts[0]):
        return "/"
    if parts[0] not in _SYSTEM_DIRS:
        return None
    if len(parts) == 1:
        return norm
    if len(parts) == 2 and (
        _GLOB.search(parts[1]) or parts[0] == "home" or "/".join(parts) in _SYSTEM_SUBDIRS
    ):
        return norm
    return None


def _dangerous_path(raw: str) -> str | None:
    """What destroying ``raw`` would destroy, when that is the system or a home directory."""
    home = _HOME.match(raw)
    if home:
        rest = re.sub(r"/+", "/", raw[home.end() :])
        return "your home directory" if rest in ("", "/", "/*", "/.", "/.*") else None
    target = _system_target(raw)
    if target:
        return target
    if "$" in raw and not _GUARDED_VARIABLE.search(raw):
        target = _system_target(_VARIABLE.sub("", raw))
        if target:
            return f"{target} when a variable is empty"
    return None


def _options_and_operands(args: Sequence[str]) -> tuple[list[str], list[str]]:
    opts: list[str] = []
    operands: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            operands.extend(args[i + 1 :])
            break
        (opts if arg.startswith("-") and arg != "-" else operands).append(arg)
    return opts, operands


def _is_cluster(arg: str) -> bool:
    """A bundle of short options such as ``-rf`` (not ``--long``, not ``-``)."""
    return len(arg) > 1 and arg[0] == "-" and arg[1] != "-"


def _has_flag(opts: Iterable[str], letters: str, long: Iterable[str]) -> bool:
    longs = set(long)
    return any(o in longs or (_is_cluster(o) and any(ch in o[1:] for ch in letters)) for o in opts)


def _first_dangerous(paths: Iterable[str]) -> str | None:
    for path in paths:
        what = _dangerous_path(path)
        if what:
            return what
    return None


def _hard_deny_argv(inv: Invocation) -> str | None:
    if not inv.argv:
        return None
    name, args = inv.argv[0], inv.argv[1:]
    opts, operands = _options_and_operands(args)
    what: str | None = None
    if name == "rm":
        if "--no-preserve-root" in opts:
            return f"hard-deny: rm --no-preserve-root ({inv.shown()})"
        if _has_flag(opts, "rR", ("--recursive",)):
            what = _first_dangerous(operands)
    elif name in ("chmod", "chown", "chgrp"):
        if _has_flag(opts, "R", ("--recursive",)):
            what = _first_dangerous(operands)
            if what:
                return f"hard-deny: recursive {name} of {what} ({inv.shown()})"
    elif name == "find":
        if "-delete" in args or any(
            a in _FIND_EXEC and basename(b) == "rm" for a, b in zip(args, args[1:], strict=False)
        ):
            what = _first_dangerous(_find_starts(args))
    elif name == "mv" and len(operands) > 1:
        what = _first_dangerous(operands[:-1])
    elif name == "dd":
        for arg in args:
            if arg.startswith("of=") and _RAW_DISK.match(arg[3:]):
                return f"hard-deny: writes to the raw disk {arg[3:]} ({inv.shown()})"
    elif name in _DISK_WRITERS or name.startswith("mkfs") or (name == "cp" and operands):
        targets = operands[-1:] if name == "cp" else operands
        for target in targets:
            if _RAW_DISK.match(target):
                return f"hard-deny: writes to the raw disk {target} ({inv.shown()})"
    return f"hard-deny: destroys {what} ({inv.shown()})" if what else None


def _find_starts(args: Sequence[str]) -> list[str]:
    starts: list[str] = []
    for arg in args:
        if arg in ("-H", "-L", "-P") or (arg.startswith("-O") and len(arg) <= 3):
            continue
        if arg.startswith("-") or arg in ("(", "!", ")"):
            break
        starts.append(arg)
    return starts


def _hard_deny(inv: Invocation) -> str | None:
    reason = _hard_deny_argv(inv)
    if reason:
        return reason
    for op, target in inv.redirects:
        if ">" in op and _RAW_DISK.match(target):
            return f"hard-deny: writes to the raw disk {target} ({op} {target})"
    return None


# ----------------------------------------------------------------------------------------------------------
# Safe-mode denylist
# ----------------------------------------------------------------------------------------------------------

_SAFE_DENY = frozenset(
    {"sudo", "su", "doas", "pkexec", "runuser"}
    | {"shutdown", "reboot", "halt", "poweroff", "telinit"}
    | {"mke2fs", "mkswap", "fdisk", "sfdisk", "cfdisk", "gdisk", "sgdisk", "parted", "wipefs", "blkdiscard"}
    | {"iptables", "ip6tables", "iptables-restore", "nft", "ufw", "firewall-cmd"}
    | {"mount", "umount", "swapon", "swapoff", "modprobe", "insmod", "rmmod"}
    | {"useradd", "userdel", "usermod", "groupadd", "groupdel", "passwd", "chpasswd", "visudo", "killall5"}
)
_POWER_VERBS = frozenset({"poweroff", "reboot", "halt", "suspend", "hibernate", "hybrid-sleep", "kexec"})
_HARMLESS_DEVICES = re.compile(r"^/dev/(null|zero|stdout|stderr|fd/\d+|tty)$")


def _positionals(args: Sequence[str]) -> list[str]:
    return [a for a in args if not a.startswith("-")]


def _safe_deny(inv: Invocation) -> str | None:
    for word in inv.chain:
        if word in _SAFE_DENY or word.startswith("mkfs"):
            return f"safe-mode denylist: {word}"
    if not inv.argv:
        return None
    name, args = inv.argv[0], inv.argv[1:]
    pos = _positionals(args)
    if name == "init" and pos[:1] in (["0"], ["6"]):
        return f"safe-mode denylist: init {pos[0]}"
    if name == "systemctl" and pos[:1] and pos[0] in _POWER_VERBS:
        return f"safe-mode denylist: systemctl {pos[0]}"
    if name == "dd":
        for arg in args:
            if arg.startswith("of=/dev/") and not _HARMLESS_DEVICES.match(arg[3:]):
                return f"safe-mode denylist: dd {arg}"
    if name in ("docker", "podman") and pos[:2] in (["system", "prune"], ["volume", "prune"]):
        return f"safe-mode denylist: {name} {pos[0]} prune"
    if name == "kill" and "-1" in args[1:]:
        return "safe-mode denylist: kill -1 (signals every process you own)"
    if name == "sysctl" and (_has_flag(args, "w", ("--write",)) or any("=" in p for p in pos)):
        return "safe-mode denylist: sysctl -w"
    return None


# ----------------------------------------------------------------------------------------------------------
# Interactive commands (unattended=strict)
# ----------------------------------------------------------------------------------------------------------

_EDITORS = frozenset(
    {"vi", "vim", "nvim", "view", "vimdiff", "nano", "pico", "joe", "micro", "mcedit", "emacs"}
)
_FULL_SCREEN = frozenset({"less", "more", "most", "man", "top", "htop", "btop", "watch", "mc", "tig", "ncdu"})
_REPLS = frozenset(
    {"python", "python2", "python3", "ipython", "node", "nodejs", "irb", "julia", "lua", "ghci", "R"}
)
_PYTHON_VERSIONED = re.compile(r"^python\d(\.\d+)?$")
_REPL_BATCH_FLAGS = frozenset(
    {"-c", "-m", "-e", "-p", "--eval", "--print", "-V", "--version", "-h", "--help"}
)
_DB_CLIENTS = frozenset({"psql", "mysql", "mariadb", "mongosh", "mongo", "sqlite3", "redis-cli"})
_DB_BATCH_FLAGS = frozenset({"-c", "-e", "-f", "--command", "--execute", "--file", "--eval", "-l", "--list"})
_YES = frozenset({"-y", "--yes", "--assume-yes"})
# program -> subcommands that ask for confirmation (or answers) unless given -y / --yes
_CONFIRMING: dict[str, frozenset[str]] = {
    "apt": frozenset({"install", "remove", "purge", "upgrade", "full-upgrade", "autoremove"}),
    "apt-get": frozenset({"install", "remove", "purge", "upgrade", "dist-upgrade", "autoremove"}),
    "conda": frozenset({"create", "install", "remove", "update"}),
    "mamba": frozenset({"create", "install", "remove", "update"}),
    "micromamba": frozenset({"create", "install", "remove", "update"}),
    "pip": frozenset({"uninstall"}),
    "pip3": frozenset({"uninstall"}),
    "npm": frozenset({"init"}),
    "yarn": frozenset({"init"}),
}


def _interactive(inv: Invocation) -> str | None:
    """Why ``inv`` would wait for a human, or None."""
    if not inv.argv:
        return None
    name, args = inv.argv[0], inv.argv[1:]
    if name in _EDITORS:
        if name == "emacs" and any(a in ("--batch", "-batch", "--script") for a in args):
            return None
        return f"{name} opens an editor"
    if name in _FULL_SCREEN:
        if name == "top" and _has_flag(args, "b", ("--batch",)):
            return None
        return f"{name} is a full-screen program"
    if name in ("read", "select"):
        if inv.stdin_redirected or inv.loop_condition:
            return None
        return f"{name} waits for input on stdin"
    if name in SHELLS:
        _, runs_something, forced = shell_args(args)
        if forced or not (runs_something or inv.stdin_redirected):
            return f"{name} without -c or a script starts an interactive shell"
        return None
    if name in _REPLS or _PYTHON_VERSIONED.match(name):
        if "-i" in args or not (_positionals(args) or inv.stdin_redirected or _REPL_BATCH_FLAGS & set(args)):
            return f"{name} without a script or -c starts an interactive prompt"
        return None
    if name in _DB_CLIENTS:
        return _db_client(name, args, inv.stdin_redirected)
    if name == "su" and su_body(args) is None:
        return "su without -c starts an interactive shell"
    return _interactive_tools(name, args)


def _db_client(name: str, args: Sequence[str], stdin_redirected: bool) -> str | None:
    if stdin_redirected or _DB_BATCH_FLAGS & set(args) or {"--version", "-V", "--help"} & set(args):
        return None
    needed = {"sqlite3": 2, "redis-cli": 1}.get(name)
    if needed is not None and len(_positionals(args)) >= needed:
        return None
    return f"{name} without a command or input file opens an interactive prompt"


def _git_subcommand(args: Sequence[str]) -> tuple[str, list[str]]:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-C", "-c", "--git-dir", "--work-tree", "--namespace"):
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg, list(args[i + 1 :])
    return "", []


def _git(args: Sequence[str]) -> str | None:
    sub, rest = _git_subcommand(args)
    if sub == "commit":
        long_ok = ("--message", "--file", "--reuse-message", "--no-edit", "--fixup")
        if any(a.startswith(long_ok) for a in rest) or _has_flag(rest, "mFC", ()):
            return None
        return "git commit without -m opens an editor"
    if sub == "rebase" and _has_flag(rest, "i", ("--interactive",)):
        return "git rebase -i opens an editor"
    if sub == "add" and _has_flag(rest, "ip", ("--interactive", "--patch")):
        return "git add -p/-i asks questions"
    has_message = any(a.startswith(("--message", "--file")) for a in rest) or _has_flag(rest, "mF", ())
    if sub == "tag" and _has_flag(rest, "as", ("--annotate", "--sign")) and not has_message:
        return "git tag -a without -m opens an editor"
    return None


def _interactive_tools(name: str, args: Sequence[str]) -> str | None:
    pos = _positionals(args)
    if name in ("ssh", "scp", "sftp"):
        batch = any(re.fullmatch(r"(-o)?batchmode[= ]yes", a, re.IGNORECASE) for a in args)
        batch = batch or (name == "scp" and _has_flag(args, "B", ())) or (name == "sftp" and "-b" in args)
        return None if batch else f"{name} without -o BatchMode=yes may prompt for a password"
    if name == "git":
        return _git(args)
    if name in ("docker", "podman") and pos[:1] and pos[0] in ("run", "exec", "create"):
        if _has_flag(args, "t", ("--tty", "--tty=true")):
            return f"{name} {pos[0]} -t needs a terminal"
        return None
    confirming = _CONFIRMING.get(name, frozenset())
    if pos[:1] and pos[0] in confirming and not (_YES & set(args) or _has_flag(args, "y", ())):
        return f"{name} {pos[0]} without -y asks for confirmation"
    if name == "gh" and pos[:2] == ["auth", "login"] and "--with-token" not in args:
        return "gh auth login without --with-token is interactive"
    hf_login = (name == "huggingface-cli" and pos[:1] == ["login"]) or (
        name == "hf" and pos[:2] == ["auth", "login"]
    )
    if hf_login and not any(a.startswith("--token") for a in args):
        return f"{name} login without --token asks for a token"
    if name == "aws" and pos == ["configure"]:
        return "aws configure asks questions"
    return None


# ----------------------------------------------------------------------------------------------------------
# The policy
# ----------------------------------------------------------------------------------------------------------


def _to_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _check_mode(_: Any, __: Attribute[str], value: str) -> None:
    if value not in MODES:
        raise ContractError(f"must be 'safe' or 'system', got {value!r}", key="security.mode")


def _check_regexes(_: Any, attribute: Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for i, pattern in enumerate(value):
        key = f"security.{attribute.name}[{i}]"
        if not isinstance(pattern, str):
            raise ContractError(f"must be a regular expression string, got {type(pattern).__name__}", key=key)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ContractError(f"invalid regular expression {pattern!r}: {exc}", key=key) from exc


def _check_bool(_: Any, attribute: Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ContractError(f"must be true or false, got {value!r}", key=attribute.name)


@define(frozen=True)
class SecurityPolicy:
    """What commands may run: see the module docstring for the rules and their order."""

    mode: str = field(default="safe", validator=_check_mode)
    allowlist: tuple[str, ...] = field(default=(), converter=_to_tuple, validator=_check_regexes)
    denylist: tuple[str, ...] = field(default=(), converter=_to_tuple, validator=_check_regexes)
    strict: bool = field(default=True, validator=_check_bool)
    _allow: tuple[re.Pattern[str], ...] = field(init=False, eq=False, repr=False)
    _deny: tuple[re.Pattern[str], ...] = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_allow", tuple(re.compile(p) for p in self.allowlist))
        object.__setattr__(self, "_deny", tuple(re.compile(p) for p in self.denylist))

    def check(self, cmd: str) -> str | None:
        """Return why ``cmd`` must not run, or None when it may."""
        if not cmd.strip():
            return None
        invocations, tokens = collect(cmd)
        if _FORK_BOMB.search(re.sub(r"\s+", "", cmd)):
            return "hard-deny: fork bomb"
        for inv in invocations:
            reason = _hard_deny(inv)
            if reason:
                return reason
        if self.mode == "safe":
            for inv in invocations:
                reason = _safe_deny(inv)
                if reason:
                    return reason
        normalised = " ".join(tokens)
        for pattern in self._deny:
            if pattern.search(cmd) or pattern.search(normalised):
                return f"contract denylist: {pattern.pattern}"
        if self._allow and not any(p.search(cmd) or p.search(normalised) for p in self._allow):
            return "not in contract allowlist"
        if self.strict:
            for inv in invocations:
                why = _interactive(inv)
                if why:
                    return f"looks interactive under unattended=strict: {why}"
        return None
