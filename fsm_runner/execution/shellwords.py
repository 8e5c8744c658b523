"""Turn a command string into the invocations it runs, roughly the way bash would.

Quotes are removed, ``; && || | & ( )`` and newlines split the text into simple commands, ``$(..)``,
backticks, ``<(..)``, ``bash -c '..'``, ``su -c '..'`` and ``eval`` bodies are lexed as commands of their own,
and wrappers (``sudo``, ``env``, ``nohup``, ``timeout 5``, ``xargs``, ...) and ``VAR=x`` prefixes are peeled
off to find the program that really runs. Enough structure for the security policy to look at command words
rather than text; not a full shell parser.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from attrs import define

_MAX_DEPTH = 6
_SHOW = 80

# ----------------------------------------------------------------------------------------------------------
# Lexing
# ----------------------------------------------------------------------------------------------------------

_REDIRECT_OP = re.compile(r"&>>|&>|<<<|<<-|<<|<>|<&|>>|>&|>\||<|>")
_CONTROL_OP = re.compile(r"&&|\|\||;;&|;;|;&|\|&|[;&|()\n]")


@define(frozen=True)
class _Segment:
    """One simple command: its words (quotes removed), redirections and whether stdin comes from elsewhere."""

    words: tuple[str, ...]
    redirects: tuple[tuple[str, str], ...]
    stdin_redirected: bool


def _skip_quoted(text: str, i: int) -> int:
    """Index after the quoted string starting at ``text[i]`` (a ' or ")."""
    quote = text[i]
    i += 1
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return len(text)


def _balanced(text: str, start: int, open_: str, close: str) -> tuple[str, int]:
    """Body between ``start`` and the matching ``close``, and the index after it."""
    depth = 1
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c in "'\"":
            i = _skip_quoted(text, i)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return text[start:i], i + 1
        i += 1
    return text[start:], len(text)


def _backtick(text: str, start: int) -> tuple[str, int]:
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "`":
            return text[start:i], i + 1
        i += 1
    return text[start:], len(text)


class _Lexer:
    """A small bash-like lexer: enough structure to find command words, not a full shell parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.segments: list[_Segment] = []
        self.subs: list[str] = []  # bodies of $(..), `..`, <(..) to check as commands of their own
        self.tokens: list[str] = []  # words and operators, for the normalised form
        self._word: list[str] = []
        self._in_word = False
        self._words: list[str] = []
        self._redirects: list[tuple[str, str]] = []
        self._stdin = False
        self._pending: str | None = None
        self._heredocs: list[tuple[str, bool]] = []

    def run(self) -> _Lexer:
        text = self.text
        n = len(text)
        while self.i < n:
            c = text[self.i]
            if c == "\\":
                if text[self.i + 1 : self.i + 2] != "\n":
                    self._add(text[self.i + 1 : self.i + 2])
                self.i += 2
            elif c == "'":
                end = text.find("'", self.i + 1)
                end = n if end < 0 else end
                self._add(text[self.i + 1 : end])
                self.i = end + 1
            elif c == '"':
                self._double_quoted()
            elif c == "`":
                body, end = _backtick(text, self.i + 1)
                self.subs.append(body)
                self._add(text[self.i : end])
                self.i = end
            elif text.startswith("$(", self.i) or (c in "<>" and text.startswith("(", self.i + 1)):
                body, end = _balanced(text, self.i + 2, "(", ")")
                if not body.startswith("("):  # $(( arithmetic )) runs nothing
                    self.subs.append(body)
                self._add(text[self.i : end])
                self.i = end
            elif text.startswith("${", self.i):
                _, end = _balanced(text, self.i + 2, "{", "}")
                self._add(text[self.i : end])
                self.i = end
            elif c == "#" and not self._in_word:
                end = text.find("\n", self.i)
                self.i = n if end < 0 else end
            elif c in " \t\r":
                self._end_word()
                self.i += 1
            elif c in "<>" or text.startswith("&>", self.i):
                self._redirect()
            elif c in ";&|()\n":
                self._operator()
            else:
                self._add(c)
                self.i += 1
        self._end_word()
        self._end_segment(next_stdin=False)
        return self

    def _add(self, s: str) -> None:
        self._word.append(s)
        self._in_word = True

    def _double_quoted(self) -> None:
        text = self.text
        i = self.i + 1
        buf: list[str] = []
        while i < len(text) and text[i] != '"':
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                nxt = text[i + 1]
                if nxt in '$`"\\':
                    buf.append(nxt)
                elif nxt != "\n":
                    buf.append(c + nxt)
                i += 2
                continue
            if text.startswith("$(", i) or c == "`":
                body, end = _balanced(text, i + 2, "(", ")") if c == "$" else _backtick(text, i + 1)
                if not body.startswith("("):
                    self.subs.append(body)
                buf.append(text[i:end])
                i = end
                continue
            buf.append(c)
            i += 1
        self._add("".join(buf))
        self.i = i + 1

    def _end_word(self) -> None:
        if not self._in_word:
            return
        word = "".join(self._word)
        self._word = []
        self._in_word = False
        self.tokens.append(word)
        if self._pending is None:
            self._words.append(word)
            return
        op, self._pending = self._pending, None
        self._redirects.append((op, word))
        if op in ("<<", "<<-"):
            self._heredocs.append((word, op == "<<-"))

    def _end_segment(self, *, next_stdin: bool) -> None:
        if self._words or self._redirects:
            self.segments.append(_Segment(tuple(self._words), tuple(self._redirects), self._stdin))
        self._words = []
        self._redirects = []
        self._pending = None
        self._stdin = next_stdin

    def _redirect(self) -> None:
        fd = "".join(self._word) if self._in_word else ""
        if fd.isdigit():
            self._word = []
            self._in_word = False
        else:
            self._end_word()
            fd = ""
        match = _REDIRECT_OP.match(self.text, self.i)
        op = match.group() if match else self.text[self.i]
        self.i += len(op)
        self.tokens.append(fd + op)
        if op.startswith("<") and fd in ("", "0"):
            self._stdin = True
        self._pending = op

    def _operator(self) -> None:
        self._end_word()
        match = _CONTROL_OP.match(self.text, self.i)
        op = match.group() if match else self.text[self.i]
        self.i += len(op)
        self.tokens.append(";" if op == "\n" else op)
        self._end_segment(next_stdin=op in ("|", "|&"))
        if op == "\n" and self._heredocs:
            self._skip_heredoc_bodies()

    def _skip_heredoc_bodies(self) -> None:
        for delimiter, strip_tabs in self._heredocs:
            while self.i < len(self.text):
                end = self.text.find("\n", self.i)
                end = len(self.text) if end < 0 else end
                line = self.text[self.i : end]
                self.i = end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
        self._heredocs = []


# ----------------------------------------------------------------------------------------------------------
# Finding the program that really runs
# ----------------------------------------------------------------------------------------------------------

_KEYWORDS = frozenset({"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
# wrapper -> (options that take a value, positional arguments before the wrapped command)
_WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "sudo": (frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "--user", "--group"}), 0),
    "doas": (frozenset({"-u", "-C"}), 0),
    "env": (frozenset({"-u", "-C", "--unset", "--chdir"}), 0),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "ionice": (frozenset({"-c", "-n", "--class", "--classdata"}), 0),
    "stdbuf": (frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}), 0),
    "time": (frozenset({"-f", "-o", "--format", "--output"}), 0),
    "timeout": (frozenset({"-s", "-k", "--signal", "--kill-after"}), 1),
    "flock": (frozenset({"-w", "-E", "--timeout", "--conflict-exit-code"}), 1),
    "xargs": (frozenset({"-I", "-n", "-P", "-L", "-d", "-a", "-E", "-s", "--max-args", "--max-procs"}), 0),
    "exec": (frozenset({"-a"}), 0),
    "nohup": (frozenset(), 0),
    "setsid": (frozenset(), 0),
    "command": (frozenset(), 0),
    "builtin": (frozenset(), 0),
    "unbuffer": (frozenset(), 0),
    "chronic": (frozenset(), 0),
    "busybox": (frozenset(), 0),
}
SHELLS = frozenset({"bash", "sh", "dash", "zsh", "ksh", "ash", "mksh", "fish"})


@define(frozen=True)
class Invocation:
    """A simple command after unwrapping: every program name met and the final argv (argv[0] a basename)."""

    chain: tuple[str, ...]
    argv: tuple[str, ...]
    redirects: tuple[tuple[str, str], ...]
    stdin_redirected: bool
    loop_condition: bool  # the command follows `while`/`until` (``while read line``)

    def shown(self) -> str:
        text = " ".join(self.argv)
        return text if len(text) <= _SHOW else text[: _SHOW - 3] + "..."


def basename(word: str) -> str:
    """The program name of a command word: ``/usr/bin/rm`` and ``rm`` are both ``rm``."""
    return word.rstrip("/").rsplit("/", 1)[-1] if "/" in word else word


def _skip_options(args: Sequence[str], with_value: frozenset[str]) -> tuple[int, list[str]]:
    i = 0
    flags: list[str] = []
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1, flags
        if not arg.startswith("-") or arg == "-":
            break
        flags.append(arg)
        i += 2 if arg in with_value else 1
    return i, flags


def _split_env_string(args: list[str]) -> list[str]:
    """Expand ``env -S 'a b'`` into its words."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-S", "--split-string") and i + 1 < len(args):
            out.extend(args[i + 1].split())
            i += 2
            continue
        if arg.startswith("--split-string="):
            out.extend(arg.split("=", 1)[1].split())
        elif arg.startswith("-S") and len(arg) > 2:
            out.extend(arg[2:].split())
        else:
            out.append(arg)
        i += 1
    return out


def shell_args(args: Sequence[str]) -> tuple[str | None, bool, bool]:
    """For ``bash ARGS``: (the -c body or None, runs a script/-c, forced interactive with -i)."""
    has_c = forced_i = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            i += 2
            continue
        if arg in ("--command", "--interactive"):
            has_c = has_c or arg == "--command"
            forced_i = forced_i or arg == "--interactive"
            i += 1
            continue
        if arg[:1] in ("-", "+") and len(arg) > 1 and not arg.startswith("--"):
            has_c = has_c or "c" in arg[1:]
            forced_i = forced_i or "i" in arg[1:]
            i += 1
            continue
        if arg.startswith("--"):
            i += 1
            continue
        break
    rest = args[i:]
    if has_c:
        return (rest[0] if rest else ""), True, forced_i
    return None, bool(rest), forced_i


def su_body(args: Sequence[str]) -> str | None:
    """For ``su ARGS``: the ``-c`` body, or None when su would start a shell."""
    for i, arg in enumerate(args):
        if arg in ("-c", "--command") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--command="):
            return arg.split("=", 1)[1]
    return None


def _unwrap(seg: _Segment) -> tuple[Invocation, list[str]]:
    """Peel keywords, assignments and wrappers off a segment; also return nested command bodies."""
    words = list(seg.words)
    chain: list[str] = []
    nested: list[str] = []
    loop_condition = False
    while words:
        word = words[0]
        if word in _KEYWORDS:
            loop_condition = loop_condition or word in ("while", "until")
            words.pop(0)
            continue
        if _ASSIGNMENT.match(word):
            words.pop(0)
            continue
        name = basename(word)
        spec = _WRAPPERS.get(name)
        if spec is None:
            break
        chain.append(name)
        args = _split_env_string(words[1:]) if name == "env" else words[1:]
        consumed, flags = _skip_options(args, spec[0])
        if name == "command" and any(f in ("-v", "-V") for f in flags):
            words = []  # `command -v x` looks x up, it does not run it
            break
        rest = args[consumed:]
        while rest and _ASSIGNMENT.match(rest[0]):
            rest.pop(0)
        words = rest[spec[1] :]
    argv: tuple[str, ...] = ()
    if words:
        name = basename(words[0])
        chain.append(name)
        argv = (name, *words[1:])
        body: str | None = None
        if name in SHELLS:
            body = shell_args(argv[1:])[0]
        elif name == "su":
            body = su_body(argv[1:])
        elif name == "eval":
            body = " ".join(argv[1:])
        if body is not None:
            nested.append(body)
    inv = Invocation(tuple(chain), argv, seg.redirects, seg.stdin_redirected, loop_condition)
    return inv, nested


def collect(cmd: str, depth: int = 0, stdin_redirected: bool = False) -> tuple[list[Invocation], list[str]]:
    """All invocations in ``cmd`` (nested bodies included) and the normalised token list of the top level."""
    lexer = _Lexer(cmd).run()
    out: list[Invocation] = []
    bodies: list[tuple[str, bool]] = [(s, False) for s in lexer.subs]
    for seg in lexer.segments:
        if stdin_redirected and not seg.stdin_redirected:
            seg = _Segment(seg.words, seg.redirects, True)
        inv, nested = _unwrap(seg)
        out.append(inv)
        bodies.extend((body, inv.stdin_redirected) for body in nested)
    if depth < _MAX_DEPTH:
        for body, redirected in bodies:
            out.extend(collect(body, depth + 1, redirected)[0])
    return out, lexer.tokens
