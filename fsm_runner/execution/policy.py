"""The command security policy: decide, before a command runs, whether it may run at all.

Commands are shell text, so matching regexes against the raw string is easy to fool (``rm  -rf "/"``,
``$'sudo' id``, ``{sudo,id}``, ``sudo${IFS}id``). The policy therefore reads the command the way bash would
(:mod:`fsm_runner.execution.shellwords`): quotes removed, braces and variables expanded (with the values the
stage env gives them), every nested command read as one (``$(..)``, ``bash -c``, ``eval``, ``trap``,
functions, ``find -exec``, here-documents and ``echo .. | bash`` fed to a shell) and wrappers peeled off
(``sudo``, ``env``, ``timeout 5``, ``taskset 1``, ``chroot /``, ``strace -f``, ...). Rules then look at
*command words*, not at text, so ``echo sudo is a word`` and ``echo "rm -rf /"`` are allowed while
``sudo ls`` is not.

Order of checks, first hit wins:

1. hard deny (no mode lifts it): recursive ``rm``/``chmod``/``chown``, ``find -delete`` or ``mv`` on ``/``,
   a top-level system directory (``/etc``, ``/usr``, ``/home``, ...), a glob directly under them, or your home
   directory (also when a variable left empty would leave ``/``); ``rm --no-preserve-root``; fork bombs;
   writes to raw disks (``dd of=``, ``>``, ``tee``, ``cp``, ``mkfs`` on ``/dev/sd*``, ``nvme*``, ...);
   and commands nested deeper than the reader follows or expanding to more words than it checks.
2. ``mode: safe`` denylist: privilege escalation (sudo, su, doas, chroot), disk tools (mkfs, fdisk, parted,
   wipefs), ``dd of=/dev/*`` (except /dev/null and friends), power (shutdown, reboot, halt, poweroff,
   ``init 0``, ``systemctl reboot``), firewall (iptables, nft, ufw), mount, kernel modules, user management,
   ``docker system prune`` / ``docker volume prune``, ``kill -9 -1``, ``sysctl -w``. Then what safe mode
   cannot read: a program name computed at run time or written as a glob, and text built at run time from
   text in the command that a shell, ``eval`` or ``xargs`` runs (``echo c3Vkbw== | base64 -d | bash``). The
   message says how to write it plainly. ``curl ... | sh`` and package managers are *not* refused: a
   downloaded script is like a script file, which the policy does not read either.
3. the contract ``denylist`` (``re.search`` on the raw command, its normalised form and every invocation).
4. the contract ``allowlist``: when non-empty, every invocation (``a; b | c`` is three, ``$(d)`` and
   ``bash -c 'e'`` bodies included) must ``re.search``-match one, as written or after expansion; shell
   builtins that only change the shell's state (``cd``, ``export``, ``set``, ``test``, ``echo``, ...) are
   exempt.
5. ``strict`` (unattended=strict): commands that would wait for a human are refused (editors, pagers, REPLs
   and shells without a script, ``read``, ``ssh`` without BatchMode, ``git commit`` without ``-m``,
   ``docker run -t``, ``npm init`` / ``apt-get install`` / ``conda install`` / ``pip uninstall`` without
   ``-y``, ``gh auth login`` / ``huggingface-cli login`` without a token, ``aws configure``).

``system`` mode lifts rule 2 (what it cannot read runs, unread), never rule 1. This is a guardrail against
mistakes and careless agents, not a sandbox: what a script file or a program does, what a downloaded script
contains, and relative paths that climb to ``/`` are not seen.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from attrs import Attribute, define, field

from fsm_runner.errors import ContractError

# The shell reader is the largest module of the runner, and most imports of fsm_runner never check a command:
# it is imported where a check needs it, on first use.
if TYPE_CHECKING:
    from fsm_runner.execution.shellwords import Invocation

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
_RAW_DISK = re.compile(
    r"^/dev/(sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme\d|mmcblk\d|disk\d|disk/|dm-\d|md\d|mapper/)"
)
_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
_DISK_WRITERS = frozenset({"tee", "shred", "wipefs", "mke2fs", "mkswap", "blkdiscard", "badblocks"})
_HOME_ITSELF = frozenset({"", "/", "/*", "/.", "/.*"})
_VARIABLE_NAME = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def _system_target(path: str) -> str | None:
    """The system location a path covers (``/``, ``/etc``, ``/usr/*``), or None for an ordinary path."""
    if not path.startswith("/"):
        return None
    norm = posixpath.normpath(re.sub(r"/+", "/", path))
    if norm == "/":
        return "/"
    parts = norm.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "proc" and parts[2] == "root":  # /proc/self/root is /
        return _system_target("/" + "/".join(parts[3:]))
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
    if len(parts) == 3 and "/".join(parts[:2]) in _SYSTEM_SUBDIRS and _GLOB.search(parts[2]):
        return norm  # /usr/bin/*
    return None


def _dangerous_path(word: str, home: str) -> tuple[str, bool] | None:
    """What destroying ``word`` would destroy, when that is the system or a home directory, and whether
    that depends on a value the policy does not know being empty."""
    from fsm_runner.execution.shellwords import home_rest, span_kinds, without_unknowns

    rest = home_rest(word)
    if rest is not None and re.sub(r"/+", "/", rest) in _HOME_ITSELF:
        return "your home directory", False
    target = _system_target(without_unknowns(word, home))
    if target is None:
        return None
    return target, bool(span_kinds(word) - {"h", "H", "g", "G"})


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


def _mv_sources(args: Sequence[str]) -> list[str]:
    """The operands ``mv`` moves away: all of them with ``-t DIR``, else all but the last."""
    operands: list[str] = []
    target_given = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            operands.extend(args[i + 1 :])
            break
        if arg in ("-t", "--target-directory", "-S", "--suffix"):
            target_given = target_given or arg in ("-t", "--target-directory")
            i += 2
            continue
        if arg.startswith(("--target-directory=", "--suffix=")):
            target_given = target_given or arg.startswith("--target")
        elif _is_cluster(arg) and ("t" in arg or "S" in arg):
            letter = "t" if "t" in arg else "S"
            target_given = target_given or letter == "t"
            if arg.endswith(letter):
                i += 1  # the value is the next argument
        elif not arg.startswith("-") or arg == "-":
            operands.append(arg)
        i += 1
    return operands if target_given else operands[:-1]


def _advice(inv: Invocation, word: str, unknown: bool) -> str:
    """How to write a denied path plainly, when a variable made it dangerous."""
    if unknown:
        names = _VARIABLE_NAME.findall(word)
        name = names[0] if names else "VAR"
        return (
            f": set {name} in the stage env, write ${{{name}:?}} so that an empty value stops the command, "
            "or write a literal path inside the repository"
        )
    facts = dict(inv.expanded)
    if not facts:
        return ""
    said = ", ".join(
        f"{k}={v}" if v else f"{k} is empty" if v is not None else f"{k} is not set" for k, v in facts.items()
    )
    return f"; {said} in the stage env: write a literal path inside the repository"


def _first_dangerous(inv: Invocation, paths: Iterable[str], home: str) -> str | None:
    """``destroys X (argv)`` for the first path that is the system or a home directory."""
    shown = dict(zip(inv.argv, inv.shown_argv, strict=False))
    for path in paths:
        found = _dangerous_path(path, home)
        if found:
            what, unknown = found
            when = " when a variable is empty" if unknown else ""
            return f"destroys {what}{when} ({inv.shown()}){_advice(inv, shown.get(path, path), unknown)}"
    return None


_HARD_PROGRAMS = (
    frozenset({"rm", "chmod", "chown", "chgrp", "find", "mv", "dd", "cp", "rsync"}) | _DISK_WRITERS
)


def _hard_deny_argv(inv: Invocation, home: str) -> str | None:
    if not inv.argv or (inv.argv[0] not in _HARD_PROGRAMS and not inv.argv[0].startswith("mkfs")):
        return None
    name, args = inv.argv[0], inv.argv[1:]
    opts, operands = _options_and_operands(args)
    if name == "rm":
        if "--no-preserve-root" in opts:
            return f"hard-deny: rm --no-preserve-root ({inv.shown()})"
        if _has_flag(opts, "rR", ("--recursive",)):
            return _prefixed(_first_dangerous(inv, operands, home))
    elif name in ("chmod", "chown", "chgrp"):
        if _has_flag(opts, "R", ("--recursive",)):
            what = _first_dangerous(inv, operands, home)
            if what:
                return f"hard-deny: recursive {name} of {what.removeprefix('destroys ')}"
    elif name == "find":
        from fsm_runner.execution.shellwords import basename, find_starts

        if "-delete" in args or any(
            a in _FIND_EXEC and basename(b) == "rm" for a, b in zip(args, args[1:], strict=False)
        ):
            return _prefixed(_first_dangerous(inv, find_starts(args), home))
    elif name == "mv":
        return _prefixed(_first_dangerous(inv, _mv_sources(args), home))
    elif name == "rsync":
        if any(o.startswith("--delete") or o == "--remove-source-files" for o in opts):
            return _prefixed(_first_dangerous(inv, operands[-1:], home))
    elif name == "dd":
        for arg in args:
            if arg.startswith("of=") and _RAW_DISK.match(arg[3:]):
                return f"hard-deny: writes to the raw disk {arg[3:]} ({inv.shown()})"
    elif name in _DISK_WRITERS or name.startswith("mkfs") or (name == "cp" and operands):
        targets = operands[-1:] if name == "cp" else operands
        for target in targets:
            if _RAW_DISK.match(target):
                return f"hard-deny: writes to the raw disk {target} ({inv.shown()})"
    return None


def _prefixed(reason: str | None) -> str | None:
    return f"hard-deny: {reason}" if reason else None


def _hard_deny(inv: Invocation, home: str) -> str | None:
    reason = _hard_deny_argv(inv, home)
    if reason:
        return reason
    for op, target in inv.redirects:
        if ">" in op and _RAW_DISK.match(target):
            return f"hard-deny: writes to the raw disk {target} ({op} {target})"
    return None


_BOMB_HEAD = re.compile(r"\(\)\{")
_NOT_NAME = frozenset("(){}|&;")


def _fork_bomb(cmd: str) -> bool:
    """``:(){ :|:& };:`` and its renamings: a function that pipes itself into itself in the background, then
    called. Linear in the command's length (every definition head is looked at once)."""
    text = re.sub(r"\s+", "", cmd)
    for m in _BOMB_HEAD.finditer(text):
        k = m.start()
        while k > 0 and text[k - 1] not in _NOT_NAME:
            k -= 1
        name = text[k : m.start()]
        for candidate in (name, name[8:] if name.startswith("function") else ""):
            if candidate and _calls_itself(text, m.end(), candidate):
                return True
    return False


def _calls_itself(text: str, i: int, name: str) -> bool:
    body = f"{name}|{name}&"
    if not text.startswith(body, i):
        return False
    i += len(body)
    for optional in (";", "}", ";"):
        if text.startswith(optional, i):
            i += 1
        elif optional == "}":
            return False
    return text.startswith(name, i)


# ----------------------------------------------------------------------------------------------------------
# Safe-mode denylist
# ----------------------------------------------------------------------------------------------------------

_SAFE_DENY = frozenset(
    {"sudo", "su", "doas", "pkexec", "runuser", "chroot", "nsenter"}
    | {"unshare", "setpriv", "capsh", "systemd-run"}
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
    from fsm_runner.execution.shellwords import SHELLS, shell_args, su_body

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

    def check(self, cmd: str, env: Mapping[str, str] | None = None) -> str | None:
        """Return why ``cmd`` must not run, or None when it may.

        ``env`` is the environment the command will get (the stage env): variables it sets are expanded
        before the check, those it does not set are empty. Without it, every variable's value is unknown.
        """
        if not cmd.strip():
            return None
        if _fork_bomb(cmd):
            return "hard-deny: fork bomb"
        from fsm_runner.execution.shellwords import analyse

        analysis = analyse(cmd, env, _NAMES)
        home = (env or {}).get("HOME") or os.path.expanduser("~")
        for inv in analysis.invocations:
            reason = _hard_deny(inv, home)
            if reason:
                return reason
        if analysis.hard:
            return f"hard-deny: {analysis.hard[0]}"
        if self.mode == "safe":
            reason = self._safe(analysis.invocations, analysis.unreadable)
            if reason:
                return reason
        return self._contract(cmd, analysis.normalised, analysis.invocations)

    def _safe(self, invocations: Sequence[Invocation], unreadable: Sequence[str]) -> str | None:
        for inv in invocations:
            reason = _safe_deny(inv)
            if reason:
                return reason
        if unreadable:
            return f"unreadable in safe mode: {unreadable[0]}"
        return None

    def _contract(self, cmd: str, normalised: str, invocations: Sequence[Invocation]) -> str | None:
        for pattern in self._deny:
            if pattern.search(cmd) or pattern.search(normalised):
                return f"contract denylist: {pattern.pattern}"
            for inv in invocations:
                if pattern.search(inv.text) or pattern.search(inv.source):
                    return f"contract denylist: {pattern.pattern} ({inv.shown()})"
        if self._allow:
            for inv in invocations:
                if not inv.argv or inv.argv[0] in _SHELL_STATE or inv.function:
                    continue
                if not any(p.search(inv.text) or p.search(inv.source) for p in self._allow):
                    return f"not in contract allowlist: {inv.shown()}"
        if self.strict:
            for inv in invocations:
                why = None if inv.deferred else _interactive(inv)
                if why:
                    return f"looks interactive under unattended=strict: {why}"
        return None


#: Builtins that only change the shell's own state or print: exempt from the contract allowlist.
_SHELL_STATE = frozenset(
    {"cd", "pushd", "popd", "dirs", "export", "unset", "set", "shopt", "local", "declare", "typeset"}
    | {"readonly", "true", "false", ":", "test", "[", "[[", "exit", "return", "shift", "wait", "echo"}
    | {"printf", "break", "continue", "umask", "let", "hash", "type"}
)
#: Program names a glob command name (``/usr/bin/su[d]o``) is matched against.
_NAMES = (
    _SAFE_DENY
    | _DISK_WRITERS
    | {"rm", "chmod", "chown", "chgrp", "find", "mv", "dd", "cp", "mkfs", "init", "systemctl", "kill"}
    | {"docker", "podman", "sysctl"}
)
