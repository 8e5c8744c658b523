"""Read a command string the way bash would, far enough to know every program it runs and with what words.

The security policy judges programs and their words, not text, so this module does what bash does before it
runs anything, statically: quotes (``'..'``, ``".."``, ``$'..'``, backslashes) are removed, brace expansion
(``{sudo,id}``, ``/{etc,usr}``) and parameter expansion (``$X``, ``${X:-word}``, ``${IFS}``, with the values
of the stage environment when they are known) are applied, unquoted values are split into words, and
``; && || | & ( )`` and newlines split the text into simple commands. Everything that runs a command of its
own is read as one: ``$(..)``, backticks, ``<(..)``, ``bash -c``, ``eval``, ``trap``, ``alias``, functions,
``find -exec``, ``xargs``, here-documents and here-strings fed to a shell, ``echo .. | bash``, and the
wrappers in front of a program (``sudo``, ``env``, ``timeout 5``, ``taskset 1``, ``chroot /``, ``strace -f``,
``uv run``, ...).

What cannot be known from the text is kept as a marked *unknown part* of a word, with its kind: a value
computed from text written in the command (``$(echo c3Vkbw== | base64 -d)``: the policy refuses to guess),
the output of a program or a file (``$(curl ..)``, ``$(cat f)``: like a script file, not read), the home
directory, or a process substitution. Variables assigned inside the command are followed by collecting every
value they are given (``X=/etc; rm -rf $X`` is ``rm -rf /etc``); a command is read again when an assignment
found late changes what an earlier word means. Nesting deeper than :data:`MAX_DEPTH` levels, and expansions
that would make more words than can be checked, are reported rather than followed.

Not a full shell: no arithmetic, no globbing against the file system, no alias expansion, and a script file
or a program's output is not read.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

from attrs import define

#: Shell levels (``$(..)``, ``bash -c``, ``eval``, ...) read; a command nested deeper is reported.
MAX_DEPTH = 6
_SHOW = 80
_MAX_CANDIDATES = 16  # values kept per variable, alternatives per word
_MAX_WORDS = 1024  # words one brace expression may make
_MAX_NEST = 40  # ${..} in ${..}, arrays and quotes within one shell level
_MAX_FN_ARGS = 64

Part = tuple[Any, ...]
Word = list[Part]

# ----------------------------------------------------------------------------------------------------------
# Unknown parts of a word
# ----------------------------------------------------------------------------------------------------------

# An unknown part is START + kind + index + END inside a word; the index names the text shown for it. Kinds,
# in upper case when the part was quoted (so it cannot split into several words):
_S, _E = "\ue000", "\ue001"
VALUE = "v"  # a value the policy does not know (a variable with no known value, an unsupported expansion)
COMPUTED = "c"  # text written in the command and transformed at run time (base64 -d, python -c, awk '..')
EXTERNAL = "x"  # a program's output, a file, stdin: text from outside the command, like a script file
HOME = "h"  # the home directory
NONEMPTY = "g"  # an unknown value that is never empty (``${X:?}``)
PROCSUB = "p"  # the path of a process substitution ``<(..)``
#: Kinds the policy cannot read: a program name or a script made of them is refused in safe mode.
OPAQUE = frozenset("vcgVCG")
_SPAN = re.compile("\ue000([a-zA-Z])(\\d+)\ue001")


def span_kinds(text: str) -> set[str]:
    """The kinds of the unknown parts in ``text`` (empty when everything is known)."""
    return {m.group(1) for m in _SPAN.finditer(text)} if _S in text else set()


def without_unknowns(text: str, home: str) -> str:
    """``text`` with every unknown part empty, the home directory as ``home`` and never-empty values as
    ``x``: what a path means when a variable turns out empty."""
    if _S not in text:
        return text

    def one(m: re.Match[str]) -> str:
        kind = m.group(1).lower()
        return home if kind == HOME else "x" if kind == NONEMPTY else ""

    return _SPAN.sub(one, text)


def home_rest(text: str) -> str | None:
    """The part of ``text`` after a leading home directory (``~/x`` -> ``/x``), or None."""
    m = _SPAN.match(text)
    return text[m.end() :] if m and m.group(1).lower() == HOME else None


# ----------------------------------------------------------------------------------------------------------
# What the policy gets
# ----------------------------------------------------------------------------------------------------------


@define(frozen=True)
class Invocation:
    """One simple command after expansion and unwrapping: every program name met (wrappers first) and the
    final argv (argv[0] a basename; words may hold unknown parts, see :func:`span_kinds`)."""

    chain: tuple[str, ...]
    argv: tuple[str, ...]
    redirects: tuple[tuple[str, str], ...]
    stdin_redirected: bool
    loop_condition: bool  # the command follows `while`/`until` (``while read line``)
    text: str = ""  # the simple command as the shell runs it, assignments in front dropped, unknowns shown
    source: str = ""  # the simple command as written
    shown_argv: tuple[str, ...] = ()
    deferred: bool = False  # a command a variable or a setting holds, which may run later (EDITOR=..)
    function: bool = False  # a call of a function the command defines (its body is read as commands)
    expanded: tuple[
        tuple[str, str | None], ...
    ] = ()  # variables of the stage env read: (name, value or None)

    def shown(self) -> str:
        text = " ".join(self.shown_argv or self.argv)
        return text if len(text) <= _SHOW else text[: _SHOW - 3] + "..."


@define(frozen=True)
class Analysis:
    """Everything the policy needs from one command."""

    invocations: tuple[Invocation, ...]
    normalised: str  # the top level with quotes removed and words expanded, for contract regexes
    unreadable: tuple[str, ...]  # why parts of it cannot be read (the policy refuses these in safe mode)
    hard: tuple[str, ...]  # why it cannot be checked at all (too deep, too large): refused in every mode


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------

_PLAIN = re.compile(r"[^ \t\r\n\\'\"`$<>;&|()]+")
_BLANKS = re.compile(r"[ \t\r]+")
_DQ = re.compile(r'["\\$`]')
_DOC = re.compile(r"[\\$`]")
_BACKTICK = re.compile(r"[\\`]")
_ANSI = re.compile(r"[\\']")
_DQ_END = re.compile(r'[\\"]')
_PW = re.compile(r"[{}\\'\"$`]")
_PW_DQ = re.compile(r'[{}\\"$`]')
_PARENS = re.compile(r"[()'\"\\`]")
_CURLY = re.compile(r"[{}'\"\\`]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"\d+")
_REDIRECT_OP = re.compile(r"&>>|&>|<<<|<<-|<<|<>|<&|>>|>&|>\||<|>")
_CONTROL_OP = re.compile(r"&&|\|\||;;&|;;|;&|\|&|[;&|()\n]")
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\[[^\]]*\])?(\+?)=")
_PARAM_OPS = (":-", ":=", ":?", ":+", "-", "=", "?", "+", "##", "#", "%%", "%", "//", "/#", "/%", "/")
_CASE_OPS = ("^^", "^", ",,", ",")
_GLOB_CHARS = re.compile(r"[*?\[]")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f"}
_ESCAPES.update({"v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"})
_HEX = re.compile(r"[0-9A-Fa-f]+")
_OCT = re.compile(r"[0-7]+")


def basename(word: str) -> str:
    """The program name of a command word: ``/usr/bin/rm`` and ``rm`` are both ``rm``."""
    return word.rstrip("/").rsplit("/", 1)[-1] if "/" in word else word


def _quote(word: str) -> str:
    return shlex.quote(word)


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(word: Word) -> str | None:
    """The text of a word written without quotes or expansions (how keywords must be written), else None."""
    if len(word) == 1 and word[0][0] == "L" and not word[0][2]:
        return str(word[0][1])
    return None


def decode_escapes(
    text: str, start: int = 0, *, stop_at_quote: bool = False, echo: bool = False
) -> tuple[str, int]:
    """Decode backslash escapes the way ``$'..'``, ``printf`` and ``echo -e`` do; with ``stop_at_quote``,
    stop after the closing ``'`` of ``$'..'``. Returns the text and the index after it."""
    out: list[str] = []
    i, n = start, len(text)
    pattern = _ANSI if stop_at_quote else _BACKTICK_FREE
    while True:
        m = pattern.search(text, i)
        if m is None:
            out.append(text[i:])
            return "".join(out), n
        out.append(text[i : m.start()])
        if text[m.start()] == "'":
            return "".join(out), m.start() + 1
        i = _one_escape(text, m.start() + 1, out, echo)


_BACKTICK_FREE = re.compile(r"\\")


def _one_escape(text: str, k: int, out: list[str], echo: bool) -> int:
    e = text[k : k + 1]
    if e in _ESCAPES:
        out.append(_ESCAPES[e])
        return k + 1
    if e in ("x", "u", "U"):
        width = {"x": 2, "u": 4, "U": 8}[e]
        m = _HEX.match(text, k + 1, min(len(text), k + 1 + width))
        if m:
            out.append(chr(min(int(m.group(), 16), 0x10FFFF)))
            return m.end()
    elif e.isdigit() and e in "01234567":
        first = k + 1 if (echo and e == "0") else k
        m = _OCT.match(text, first, min(len(text), first + 3))
        if m:
            out.append(chr(int(m.group(), 8) & 0xFF))
            return m.end()
        out.append("\0")
        return first
    elif e == "c" and k + 1 < len(text):
        out.append(chr(ord(text[k + 1]) & 0x1F))
        return k + 2
    out.append("\\" + e)
    return k + 1


def _skip_dquote(text: str, i: int) -> int:
    while True:
        m = _DQ_END.search(text, i)
        if m is None:
            return len(text)
        if m.group() == '"':
            return m.end()
        i = m.start() + 2


def _skip_backtick(text: str, i: int) -> int:
    while True:
        m = _BACKTICK.search(text, i)
        if m is None:
            return len(text)
        if m.group() == "`":
            return m.end()
        i = m.start() + 2


class _Matches:
    """Where each ``(`` or ``{`` of a text is closed, found by one scan from the first one asked about (quoted
    strings skipped whole) and remembered: nested or unclosed brackets cost one pass, not one per bracket."""

    def __init__(self, text: str, pattern: re.Pattern[str], open_: str, close: str) -> None:
        self.text, self.pattern, self.open, self.close = text, pattern, open_, close
        self.ends: dict[int, int] = {}

    def end(self, i: int) -> int:
        """Index after the bracket that closes the one at ``i`` (the end of the text when none does)."""
        found = self.ends.get(i)
        if found is None:
            self._scan(i)
            found = self.ends.get(i, len(self.text))
        return found

    def _scan(self, i: int) -> None:
        text, n, stack = self.text, len(self.text), []
        while i < n:
            m = self.pattern.search(text, i)
            if m is None:
                break
            c, j = m.group(), m.start()
            i = j + 1
            if c == self.open:
                stack.append(j)
            elif c == self.close:
                if stack:
                    self.ends[stack.pop()] = i
                if not stack:
                    return
            elif c == "\\":
                i = j + 2
            elif c == "'":
                k = text.find("'", j + 1)
                i = n if k < 0 else k + 1
            elif c == '"':
                i = _skip_dquote(text, j + 1)
            else:
                i = _skip_backtick(text, j + 1)
        for j in stack:
            self.ends[j] = n


# ----------------------------------------------------------------------------------------------------------
# Lexing: text -> bodies of simple commands whose words are lists of parts
# ----------------------------------------------------------------------------------------------------------
# Parts: ("L", text, quoted) | ("V", name, op, arg word | None, quoted, display) | ("C", body | None, quoted,
# display) for $(..) and backticks | ("P", body | None, quoted, display) for <(..) | ("A", [word, ...]) for an
# array value.


class _Seg:
    """One simple command as written: words, redirections, where its stdin comes from."""

    __slots__ = ("words", "redirects", "stdin", "source", "kind", "op", "plain")

    def __init__(
        self,
        words: list[Word],
        redirects: list[tuple[str, Word]],
        stdin: Any,
        source: str,
        kind: str,
        op: str,
    ) -> None:
        self.words = words
        self.redirects = redirects
        self.stdin = stdin  # None | ("doc", [word]) | ("file", word) | ("pipe", _Seg)
        self.source = source
        self.kind = kind  # "" a command, "fundef" a function header, "syntax" a case header or pattern
        self.op = op  # the operator after it
        self.plain: list[str] | None = None  # the words, when all are plain and none is special


class _Body:
    __slots__ = ("segments", "children", "depth")

    def __init__(self, depth: int) -> None:
        self.segments: list[_Seg] = []
        self.children: list[_Body] = []  # bodies of $(..), `..`, <(..), arithmetic, ${x:-$(..)}
        self.depth = depth


# Plain words (no quotes, expansions, braces, redirections; none starting with # or ~) up to an operator or
# the end: the common case, read in one match.
_WORD = r"[^\s\\'\"`$<>;&|(){}#~][^\s\\'\"`$<>;&|(){}]*"
_SIMPLE = re.compile(rf"[ \t]*{_WORD}(?:[ \t]+{_WORD})*[ \t]*(?=[;&|\n]|\Z)")
_SYNTAX_WORDS = frozenset({"[[", "case", "esac"})
# first words that make a simple command more than a program and its arguments
_LEADING = frozenset(
    {"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "esac"}
)
_LEADING |= frozenset({"for", "select", "function", "coproc", "case"})
_KEYWORDS = frozenset(
    {"!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "esac"}
)


class _Lexer:
    """Splits one shell level into simple commands; nested levels become child bodies, lexed at once."""

    def __init__(
        self, ctx: _Ctx, text: str, depth: int, start: int = 0, *, closing: bool = False, nest: int = 0
    ) -> None:
        self.ctx, self.text, self.depth, self.nest = ctx, text, depth, nest
        self.i = start
        self.closing = closing  # the level ends at an unmatched ")" ($(..), <(..), an array)
        self.body = _Body(depth)
        self.parts: Word = []
        self.in_word = False
        self.words: list[Word] = []
        self.redirects: list[tuple[str, Word]] = []
        self.pending: tuple[str, str] | None = None  # a redirection waiting for its word: (fd, operator)
        self.plain: list[str] | None = None  # set by _simple_command, kept while nothing else is added
        self.stdin: Any = None
        self.docs: list[tuple[str, bool, bool, list[Word]]] = []  # here-documents waiting for their body
        self.seg_start = start
        self.pipe_from: _Seg | None = None
        self.paren = 0
        self.case = 0
        self.pattern = False  # reading the pattern of a case item, up to its ")"
        self.dbracket = False

    # -- the main loop ----------------------------------------------------------------------------------

    def run(self) -> _Body:
        text, n = self.text, len(self.text)
        while self.i < n:
            i = self.i
            fresh = not self.words and not self.in_word and self.pending is None and not self.pattern
            if fresh and self._simple_command(i):
                continue
            c = text[i]
            m = _PLAIN.match(text, i)
            if m is not None:
                if c == "#" and not self.in_word:
                    j = text.find("\n", i)
                    self.i = n if j < 0 else j
                else:
                    self._plain_run(m.group())
                    self.i = m.end()
            elif c in " \t\r":
                self._end_word()
                self.i = _BLANKS.match(text, i).end()  # type: ignore[union-attr]
            elif c == ")" and self.closing and not self.pattern and self.paren == 0 and not self.dbracket:
                self._end_word()
                self._end_segment("", i)
                self.i = i + 1
                return self.body
            else:
                self._special(c, i)
        self._end_word()
        self._end_segment("", n)
        return self.body

    def _simple_command(self, i: int) -> bool:
        """Most commands are plain words up to an operator: take them in one match."""
        m = _SIMPLE.match(self.text, i)
        if m is None or m.end() == i:
            return False
        words = m.group().split()
        if not words or _SYNTAX_WORDS.intersection(words):
            return False
        self.words = [[("L", w, False)] for w in words]
        self.i = m.end()
        if words[0] not in _LEADING and "=" not in words[0]:
            self.plain = words
        return True

    def _special(self, c: str, i: int) -> None:
        text = self.text
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt != "\n":
                self._lit(nxt or "\\", True)
            self.i = i + 2
        elif c == "'":
            j = text.find("'", i + 1)
            j = len(text) if j < 0 else j
            self._lit(text[i + 1 : j], True)
            self.i = j + 1
        elif c == '"':
            self.i = self._dquote(i + 1)
        elif c == "`":
            self.i = self._backtick(i + 1, False)
        elif c == "$":
            self.i = self._dollar(i, False)
        elif self.dbracket and c in "<>&|()":  # operators of the test inside [[ .. ]], not of the shell
            self._lit(c, False)
            self.i = i + 1
        elif c in "<>" and text.startswith("(", i + 1):
            self.i = self._subst(i + 2, False, "P", c + "(")
        elif c in "<>" or text.startswith("&>", i):
            self._redirect()
        elif self.pattern and c in "(|":  # `a|b)` and `(a)` in a case: part of the pattern
            self._end_word()
            self.i = i + 1
        else:
            self._operator()

    def _lit(self, s: str, quoted: bool) -> None:
        self.parts.append(("L", s, quoted))
        self.in_word = True

    def _plain_run(self, s: str) -> None:
        if not self.in_word and s[0] == "~":  # tilde expansion at the start of a word
            head, sep, tail = s.partition("/")
            if head == "~":
                self.parts.append(("V", "HOME", "", None, False, "~"))
            elif head in ("~+", "~-"):
                self.parts.append(("V", "PWD" if head == "~+" else "OLDPWD", "", None, False, head))
            else:
                user = head[1:]
                self._lit("/root" if user == "root" else "/home/" + user, True)
            self.in_word = True
            if sep:
                self._lit(sep + tail, False)
            return
        self._lit(s, False)

    def _at_command_start(self) -> bool:
        return all(_plain(w) in _KEYWORDS for w in self.words)

    def _end_word(self) -> None:
        if not self.in_word:
            return
        word, self.parts, self.in_word = self.parts, [], False
        if self.pending is not None:
            (fd, op), self.pending = self.pending, None
            self._attach_redirect(fd, op, word)
            return
        plain = _plain(word)
        if plain == "[[" and self._at_command_start():
            self.dbracket = True
        elif plain == "]]" and self.dbracket:
            self.dbracket = False
        elif plain == "esac" and self.case and self._at_command_start():
            self.case -= 1
            self.pattern = False
        elif plain == "in" and len(self.words) == 2 and _plain(self.words[0]) == "case":
            self.case += 1
            self.pattern = True
        self.words.append(word)

    def _end_segment(self, op: str, end: int, kind: str = "") -> None:
        self.pending = None
        if self.words or self.redirects or kind:
            if self.stdin is None and self.pipe_from is not None:
                self.stdin = ("pipe", self.pipe_from)
            seg = _Seg(
                self.words, self.redirects, self.stdin, self.text[self.seg_start : end].strip(), kind, op
            )
            if (
                self.plain is not None
                and len(self.plain) == len(self.words)
                and not self.redirects
                and not kind
            ):
                seg.plain = self.plain
            self.body.segments.append(seg)
            self.pipe_from = seg if op in ("|", "|&") else None
        else:
            self.pipe_from = None
        self.words, self.redirects, self.stdin, self.dbracket, self.plain = [], [], None, False, None

    # -- operators and redirections ---------------------------------------------------------------------

    def _operator(self) -> None:
        text, i = self.text, self.i
        if text[i] == "(" and self._array(i):
            return
        self._end_word()
        m = _CONTROL_OP.match(text, i)
        op = m.group() if m else text[i]
        if op == "(":
            if self._function_header(i) or self._arith_command(i):
                return
            self.paren += 1
        elif op == ")":
            if self.pattern:
                self.pattern = False
                self.i = i + 1
                self._end_segment("", i, "syntax")
                self.seg_start = self.i
                return
            self.paren = max(0, self.paren - 1)
        self.i = i + len(op)
        self._end_segment(op, i)
        self.seg_start = self.i
        if op in (";;", ";&", ";;&") and self.case:
            self.pattern = True
        if op == "\n" and self.docs:
            self._read_docs()
            self.seg_start = self.i

    def _function_header(self, i: int) -> bool:
        """``name ()`` and ``function name ()``: a definition, not a call."""
        named = len(self.words) == 1 or (len(self.words) == 2 and _plain(self.words[0]) == "function")
        if not named or self.redirects:
            return False
        m = _BLANKS.match(self.text, i + 1)
        j = m.end() if m else i + 1
        if not self.text.startswith(")", j):
            return False
        self.i = j + 1
        self._end_segment("", i, "fundef")
        self.seg_start = self.i
        return True

    def _array(self, i: int) -> bool:
        """``name=(a b c)``: the words are the value, not a subshell."""
        if not (self.in_word and len(self.parts) == 1 and self.parts[0][0] == "L" and not self.parts[0][2]):
            return False
        m = _ASSIGN.fullmatch(self.parts[0][1])
        if m is None:
            return False
        if self.nest >= _MAX_NEST:
            self.ctx.too_deep(self.text[i : i + 40])
            self.i = self.ctx.parens(self.text).end(i)
            return True
        sub = _Lexer(self.ctx, self.text, self.depth, i + 1, closing=True, nest=self.nest + 1)
        body = sub.run()
        self.body.children.extend(body.children)
        self.parts.append(("A", [w for seg in body.segments for w in seg.words]))
        self.i = sub.i
        return True

    def _arith_command(self, i: int) -> bool:
        """``(( .. ))`` and ``for (( .. ))``: arithmetic, whose only commands are the substitutions in it."""
        if not self.text.startswith("((", i) or not (
            not self.words or [_plain(w) for w in self.words] == ["for"]
        ):
            return False
        end = self._arith_end(i)
        if end < 0:
            return False
        self._arith(self.text[i + 2 : end - 2])
        self.i = end
        return True

    def _arith_end(self, i: int) -> int:
        """For ``((`` at ``i``: the index after its ``))`` when it is arithmetic, else -1."""
        matches = self.ctx.parens(self.text)
        end = matches.end(i)
        return end if end - 1 > i + 1 and matches.end(i + 1) == end - 1 else -1

    def _arith(self, text: str) -> None:
        child = self._child_text(text)
        if child is not None:
            child.segments = []  # the words of an arithmetic expression are not commands

    def _redirect(self) -> None:
        fd = ""
        first = self.parts[0] if self.in_word and len(self.parts) == 1 else None
        if first is not None and first[0] == "L" and not first[2] and str(first[1]).isdigit():
            fd = first[1]
            self.parts, self.in_word = [], False
        self._end_word()
        m = _REDIRECT_OP.match(self.text, self.i)
        op = m.group() if m else self.text[self.i]
        self.i += len(op)
        self.pending = (fd, op)

    def _attach_redirect(self, fd: str, op: str, word: Word) -> None:
        if op in ("<<", "<<-"):
            holder: list[Word] = []
            delim = "".join(str(p[1]) for p in word if p[0] == "L")
            quoted = any(p[0] != "L" or p[2] for p in word)
            self.docs.append((delim, op == "<<-", quoted, holder))
            self.stdin = ("doc", holder)
        elif op == "<<<":
            self.stdin = ("doc", [word])
        elif op in ("<", "<>") and fd in ("", "0"):
            self.stdin = ("file", word)
        self.redirects.append((fd + op, word))

    def _read_docs(self) -> None:
        text, n = self.text, len(self.text)
        for delim, strip, quoted, holder in self.docs:
            start = end = self.i
            while self.i < n:
                j = text.find("\n", self.i)
                line_end = n if j < 0 else j
                line = text[self.i : line_end]
                end = self.i
                self.i = line_end + 1
                if (line.lstrip("\t") if strip else line) == delim:
                    break
                end = min(self.i, n)
            body = text[start:end]
            if strip:
                body = re.sub(r"(?m)^\t+", "", body)
            holder.append([("L", body, True)] if quoted else self._doc_word(body))
        self.docs = []

    def _doc_word(self, body: str) -> Word:
        """The parts of an unquoted here-document: ``$x``, ``$(..)`` and backticks expand in it."""
        sub = _Lexer(self.ctx, body, self.depth, nest=self.nest + 1)
        sub._dquote(0, doc=True)
        self.body.children.extend(sub.body.children)
        return sub.parts

    # -- quotes and expansions --------------------------------------------------------------------------

    def _dquote(self, i: int, doc: bool = False) -> int:
        text, n = self.text, len(self.text)
        self._lit("", True)
        pattern = _DOC if doc else _DQ
        while True:
            m = pattern.search(text, i)
            if m is None:
                self._lit(text[i:], True)
                return n
            j = m.start()
            if j > i:
                self._lit(text[i:j], True)
            c = text[j]
            if c == '"':
                return j + 1
            if c == "\\":
                nxt = text[j + 1 : j + 2]
                if nxt in ("$", "`", "\\") or (nxt == '"' and not doc):
                    self._lit(nxt, True)
                elif nxt != "\n":
                    self._lit("\\" + nxt, True)
                i = j + 2
            elif c == "$":
                i = self._dollar(j, True)
            else:
                i = self._backtick(j + 1, True)

    def _backtick(self, i: int, quoted: bool) -> int:
        text, n = self.text, len(self.text)
        out: list[str] = []
        end = n
        while True:
            m = _BACKTICK.search(text, i)
            if m is None:
                out.append(text[i:])
                break
            k = m.start()
            out.append(text[i:k])
            if text[k] == "`":
                end = k + 1
                break
            nxt = text[k + 1 : k + 2]
            out.append(nxt if nxt in ("$", "`", "\\") else "\\" + nxt)
            i = k + 2
        body_text = "".join(out)
        child = self._child_text(body_text)
        self.parts.append(("C", child, quoted, "`" + _short(body_text) + "`"))
        self.in_word = True
        return end

    def _child_text(self, text: str) -> _Body | None:
        """A separate text read as a nested shell level (a backtick body, an arithmetic expression)."""
        if self.depth + 1 > MAX_DEPTH:
            self.ctx.too_deep(text)
            return None
        child = _Lexer(self.ctx, text, self.depth + 1).run()
        self.body.children.append(child)
        return child

    def _subst(self, start: int, quoted: bool, kind: str, opener: str) -> int:
        """``$(..)`` or ``<(..)`` starting at ``start``: a nested level read in place; returns the end."""
        child: _Body | None = None
        if self.depth + 1 > MAX_DEPTH:
            end = self.ctx.parens(self.text).end(start - 1)
            self.ctx.too_deep(self.text[start - len(opener) : end])
        else:
            lexer = _Lexer(self.ctx, self.text, self.depth + 1, start, closing=True)
            child = lexer.run()
            end = lexer.i
            self.body.children.append(child)
        self.parts.append((kind, child, quoted, _short(self.text[start - len(opener) : end])))
        self.in_word = True
        return end

    def _dollar(self, i: int, quoted: bool) -> int:
        text = self.text
        nxt = text[i + 1 : i + 2]
        if nxt == "'" and not quoted:
            decoded, end = decode_escapes(text, i + 2, stop_at_quote=True)
            self._lit(decoded, True)
            return end
        if nxt == '"' and not quoted:
            return self._dquote(i + 2)
        if nxt == "(":
            if text.startswith("((", i + 1):
                end = self._arith_end(i + 1)
                if end >= 0:
                    self._arith(text[i + 3 : end - 2])
                    self._lit("0", True)
                    return end
            return self._subst(i + 2, quoted, "C", "$(")
        if nxt == "{":
            return self._param(i + 2, quoted)
        if nxt == "[":
            j = text.find("]", i + 2) if i < self.ctx.last(text, "]") else -1
            if j >= 0:
                self._arith(text[i + 2 : j])
                self._lit("0", True)
                return j + 1
        m = _NAME.match(text, i + 1)
        if m is not None:
            name, end = m.group(), m.end()
        elif nxt and (nxt.isdigit() or nxt in "@*#?$!-"):
            name, end = nxt, i + 2
        else:
            self._lit("$", quoted)
            return i + 1
        self.parts.append(("V", name, "", None, quoted, "$" + name))
        self.in_word = True
        return end

    def _param(self, i: int, quoted: bool) -> int:
        """``${..}``: name, operator and the word after it (which may hold quotes and substitutions)."""
        text = self.text
        self.in_word = True
        unknown = ("V", "!", "", None, quoted, "")
        c = text[i : i + 1]
        if self.nest >= _MAX_NEST:
            end = self.ctx.braces(text).end(i - 1)
            self.ctx.too_deep(text[i - 2 : end])
            self.parts.append(unknown)
            return end
        if c == "#" and text[i + 1 : i + 2] not in ("}", ""):  # ${#x}: a length
            self._lit("0", True)
            return self.ctx.braces(text).end(i - 1)
        m = _NAME.match(text, i) or _DIGITS.match(text, i)
        if m is not None:
            name, j = m.group(), m.end()
        elif c and c in "@*#?$-":
            name, j = c, i + 1
        else:  # ${!x} and anything unusual: a value the policy does not compute
            end = self.ctx.braces(text).end(i - 1)
            self.parts.append(("V", "!", "", None, quoted, _short(text[i - 2 : end])))
            return end
        if text.startswith("[", j):
            k = text.find("]", j) if j < self.ctx.last(text, "]") else -1
            j = len(text) if k < 0 else k + 1
        if text.startswith("}", j):
            self.parts.append(("V", name, "", None, quoted, "${" + name + "}"))
            return j + 1
        op = next((o for o in (*_PARAM_OPS, *_CASE_OPS, ":") if text.startswith(o, j)), "")
        if not op:
            end = self.ctx.braces(text).end(i - 1)
            self.parts.append(("V", "!", "", None, quoted, _short(text[i - 2 : end])))
            return end
        sub = _Lexer(self.ctx, text, self.depth, j + len(op), nest=self.nest + 1)
        end = sub._param_word(quoted)
        self.body.children.extend(sub.body.children)
        self.parts.append(("V", name, op, sub.parts, quoted, _short(text[i - 2 : end])))
        return end

    def _param_word(self, quoted: bool) -> int:
        """The word after a ``${x:-`` operator, up to the matching ``}``."""
        text, n, i, depth = self.text, len(self.text), self.i, 0
        pattern = _PW_DQ if quoted else _PW
        while i < n:
            m = pattern.search(text, i)
            if m is None:
                self._lit(text[i:], quoted)
                return n
            j = m.start()
            if j > i:
                self._lit(text[i:j], quoted)
            c = text[j]
            i = j + 1
            if c == "}":
                if depth == 0:
                    return i
                depth -= 1
                self._lit(c, quoted)
            elif c == "{":
                depth += 1
                self._lit(c, quoted)
            elif c == "\\":
                self._lit(text[i : i + 1], True)
                i += 1
            elif c == "'":
                k = text.find("'", i)
                k = n if k < 0 else k
                self._lit(text[i:k], True)
                i = k + 1
            elif c == '"':
                i = self._dquote(i)
            elif c == "$":
                i = self._dollar(j, quoted)
            else:
                i = self._backtick(i, quoted)
        return n


# ----------------------------------------------------------------------------------------------------------
# Brace expansion
# ----------------------------------------------------------------------------------------------------------

_PH, _PH_END = "\ue002", "\ue003"  # a non-literal part inside a brace template
_FS = "\ue004"  # a field break inside a value: "$@" and "${a[@]}" make one word per element
_AS = "\ue005"  # between the elements of an array value, until it is recorded
_UNSET = "\ue006"  # the value of a variable that is not set (${X-word} tells it from an empty one)
_BRACE_SPECIAL = re.compile(r"[{},\\\ue002\ue003]")
_TEMPLATE = re.compile(r"\\(.)|\ue002(\d+)\ue003|([^\\\ue002]+)", re.S)
_SEQ = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?|([A-Za-z])\.\.([A-Za-z])(?:\.\.(-?\d+))?")


class TooMany(Exception):
    """An expansion makes more words than the policy checks."""


def _brace_words(word: Word) -> list[Word]:
    if not any(p[0] == "L" and not p[2] and "{" in p[1] for p in word):
        return [word]
    others: list[Part] = []
    chunks: list[str] = []
    for p in word:
        if p[0] == "L":
            chunks.append(p[1] if not p[2] else _BRACE_SPECIAL.sub(lambda m: "\\" + m.group(), p[1]))
        else:
            chunks.append(f"{_PH}{len(others)}{_PH_END}")
            others.append(p)
    out: list[Word] = []
    for text in brace_expand("".join(chunks)):
        parts: Word = []
        for m in _TEMPLATE.finditer(text):
            if m.group(2) is not None:
                parts.append(others[int(m.group(2))])
            else:
                parts.append(
                    ("L", m.group(1) if m.group(1) is not None else m.group(3), m.group(1) is not None)
                )
        out.append(parts or [("L", "", False)])
    return out


_MAX_BRACE_NEST = 32
# A brace tree: a sequence is a list of items, an item a literal string or a group (a list of sequences).
_Seq = list[Any]


def _brace_tree(text: str) -> _Seq:
    """Parse ``text`` into literals and brace groups in one pass; braces that do not form a group (no
    top-level comma, not a sequence like ``1..3``) stay literal, with any groups inside them."""
    top: _Seq = []
    stack: list[tuple[_Seq, list[_Seq]]] = []  # (the sequence the group sits in, its alternatives so far)
    cur = top
    i = 0
    for m in _BRACE_TOKEN.finditer(text):
        if m.start() > i:
            cur.append(text[i : m.start()])
        i = m.end()
        token = m.group()
        if token[0] == "\\":
            cur.append(token)
        elif token == "{":
            if len(stack) >= _MAX_BRACE_NEST:
                raise TooMany(f"{_short(text)} nests braces more than {_MAX_BRACE_NEST} deep")
            stack.append((cur, []))
            cur = []
        elif token == "," and stack:
            stack[-1][1].append(cur)
            cur = []
        elif token == "}" and stack:
            parent, alternatives = stack.pop()
            parent.extend(_close_group(alternatives + [cur]))
            cur = parent
        else:
            cur.append(token)
    if i < len(text):
        cur.append(text[i:])
    while stack:  # unclosed braces are literal text
        parent, alternatives = stack.pop()
        parent.append("{")
        for k, alt in enumerate(alternatives + [cur]):
            parent.extend(([","] if k else []) + alt)
        cur = parent
    return top


_BRACE_TOKEN = re.compile(r"\\.|[{},]", re.S)


def _close_group(alternatives: list[_Seq]) -> _Seq:
    if len(alternatives) > 1:
        return [alternatives]
    body = alternatives[0]
    if len(body) == 1 and isinstance(body[0], str):
        values = _sequence(body[0])
        if values is not None:
            return [[[v] for v in values]]
    return ["{", *body, "}"]


def _sequence(body: str) -> list[str] | None:
    m = _SEQ.fullmatch(body)
    if m is None:
        return None
    if m.group(1) is not None:
        a, b = int(m.group(1)), int(m.group(2))
        step = abs(int(m.group(3) or 1)) or 1
        width = max(len(m.group(1)), len(m.group(2))) if m.group(1).lstrip("-").startswith("0") else 0
        if abs(b - a) // step > _MAX_CANDIDATES:  # a long run of numbers: its ends stand for it
            values = [str(a), str(a + (step if b >= a else -step)), str(b)]
        else:
            values = [str(v) for v in range(a, b + (1 if b >= a else -1), step if b >= a else -step)]
        return [v.zfill(width) if width else v for v in values]
    a2, b2 = ord(m.group(4)), ord(m.group(5))
    step = abs(int(m.group(6) or 1)) or 1
    return [chr(v) for v in range(a2, b2 + (1 if b2 >= a2 else -1), step if b2 >= a2 else -step)]


def _count(seq: _Seq, limit: int) -> int:
    total = 1
    for item in seq:
        if not isinstance(item, str):
            total *= sum(_count(alt, limit) for alt in item)
            if total > limit:
                return limit + 1
    return total


def _expand_seq(seq: _Seq) -> list[list[str]]:
    results: list[list[str]] = [[]]
    for item in seq:
        if isinstance(item, str):
            for r in results:
                r.append(item)
            continue
        options = [piece for alt in item for piece in _expand_seq(alt)]
        if len(options) == 1:
            for r in results:
                r.extend(options[0])
        else:
            results = [r + o for r in results for o in options]
    return results


def brace_expand(text: str, limit: int = _MAX_WORDS) -> list[str]:
    """Bash brace expansion of one word (``a{b,c}d`` -> abd acd, ``{1..3}``); backslash-escaped braces
    and commas are literal (and stay escaped). Long numeric sequences are represented by their ends.
    Raises :class:`TooMany` past ``limit`` words or too deep a nesting."""
    if "{" not in text:
        return [text]
    tree = _brace_tree(text)
    if _count(tree, limit) > limit:
        raise TooMany(f"{_short(text)} makes more than {limit} words")
    return ["".join(pieces) for pieces in _expand_seq(tree)]


# ----------------------------------------------------------------------------------------------------------
# Programs: wrappers, programs that run a command given as text, interpreters
# ----------------------------------------------------------------------------------------------------------

# wrapper -> (options that take a value, positional arguments before the wrapped command)
_WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "sudo": (frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T", "--user", "--group"}), 0),
    "doas": (frozenset({"-u", "-C"}), 0),
    "pkexec": (frozenset({"--user"}), 0),
    "env": (frozenset({"-u", "-C", "--unset", "--chdir"}), 0),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "ionice": (frozenset({"-c", "-n", "--class", "--classdata"}), 0),
    "chrt": (frozenset(), 1),
    "stdbuf": (frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}), 0),
    "time": (frozenset({"-f", "-o", "--format", "--output"}), 0),
    "timeout": (frozenset({"-s", "-k", "--signal", "--kill-after"}), 1),
    "flock": (frozenset({"-w", "-E", "--timeout", "--conflict-exit-code"}), 1),
    "xargs": (frozenset({"-I", "-n", "-P", "-L", "-d", "-a", "-E", "-s", "--max-args", "--max-procs"}), 0),
    "exec": (frozenset({"-a"}), 0),
    "taskset": (frozenset(), 1),
    "chroot": (frozenset({"--userspec", "--groups"}), 1),
    "strace": (
        frozenset({"-o", "-e", "-p", "-s", "-u", "-E", "-a", "-b", "-I", "-O", "-P", "-S", "-X", "--output"}),
        0,
    ),
    "ltrace": (frozenset({"-o", "-e", "-p", "-s", "-u", "-n", "-a", "-A", "-D", "-l", "-L", "-x", "-F"}), 0),
    "valgrind": (frozenset(), 0),
    "unshare": (frozenset({"--map-user", "--map-group", "--propagation", "--setgroups"}), 0),
    "nsenter": (frozenset({"-t", "--target", "-S", "--setuid", "-G", "--setgid", "--wd"}), 0),
    "setpriv": (frozenset({"--reuid", "--regid", "--groups", "--inh-caps", "--bounding-set"}), 0),
    "numactl": (frozenset({"-N", "-m", "-C", "-p", "-i"}), 0),
    "cgexec": (frozenset({"-g"}), 0),
    "prlimit": (frozenset({"--pid"}), 0),
    "setarch": (frozenset(), 1),
    "faketime": (frozenset({"-f"}), 1),
    "gosu": (frozenset(), 1),
    "su-exec": (frozenset(), 1),
    "setuidgid": (frozenset(), 1),
    "fakeroot": (frozenset({"-l", "--lib", "--faked", "-s", "-i"}), 0),
    "proot": (frozenset({"-r", "-b", "-w", "-q", "-k", "-R", "-S"}), 0),
    "firejail": (frozenset(), 0),
    "xvfb-run": (frozenset({"-n", "-s", "-f", "-e", "-p", "-w", "--server-num", "--server-args"}), 0),
    "dbus-run-session": (frozenset(), 0),
    "systemd-run": (frozenset({"-u", "--unit", "-p", "--property", "-E", "--setenv", "-M", "--uid"}), 0),
    "screen": (frozenset({"-S", "-c", "-t", "-p", "-e", "-h", "-T"}), 0),
    "catchsegv": (frozenset(), 0),
    "eatmydata": (frozenset(), 0),
    "torsocks": (frozenset(), 0),
    "proxychains": (frozenset({"-f"}), 0),
    "proxychains4": (frozenset({"-f"}), 0),
    "nohup": (frozenset(), 0),
    "setsid": (frozenset(), 0),
    "command": (frozenset(), 0),
    "builtin": (frozenset(), 0),
    "unbuffer": (frozenset(), 0),
    "chronic": (frozenset(), 0),
    "busybox": (frozenset(), 0),
    "toybox": (frozenset(), 0),
    "coproc": (frozenset(), 0),
    # The dynamic loader runs the program it is given: /lib64/ld-linux-x86-64.so.2 /usr/bin/sudo
    **dict.fromkeys(
        ("ld.so", "ld-linux.so.2", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"),
        (frozenset({"--library-path", "--preload", "--argv0", "--audit", "--inhibit-rpath"}), 0),
    ),
}
# (program, subcommand) -> options that take a value; the command follows
_SUB_WRAPPERS: dict[tuple[str, str], frozenset[str]] = {
    ("uv", "run"): frozenset(
        {"--with", "--with-editable", "--with-requirements", "-p", "--python", "--directory", "--project"}
        | {"--package", "--extra", "--group", "--env-file", "--index", "--index-url", "-C", "--config-file"}
    ),
    ("poetry", "run"): frozenset({"-C", "--directory", "-P", "--project"}),
    ("pipenv", "run"): frozenset(),
    ("pdm", "run"): frozenset({"-p", "--project"}),
    ("hatch", "run"): frozenset(),
    ("conda", "run"): frozenset({"-n", "--name", "-p", "--prefix", "--cwd"}),
    ("mamba", "run"): frozenset({"-n", "--name", "-p", "--prefix", "--cwd"}),
    ("micromamba", "run"): frozenset({"-n", "--name", "-p", "--prefix", "-r", "--root-prefix"}),
    ("pixi", "run"): frozenset({"-e", "--environment", "--manifest-path"}),
    ("rye", "run"): frozenset(),
    ("bundle", "exec"): frozenset(),
    ("pnpm", "exec"): frozenset(),
    ("opam", "exec"): frozenset(),
    ("perf", "stat"): frozenset({"-e", "-o", "-r", "-p", "-t"}),
    ("perf", "record"): frozenset({"-e", "-o", "-p", "-t", "-F", "-c"}),
    ("direnv", "exec"): frozenset(),
}
SHELLS = frozenset({"bash", "sh", "dash", "zsh", "ksh", "ash", "mksh", "fish", "rbash"})
# interpreters -> options whose value is program text
_INLINE_CODE: dict[str, frozenset[str]] = {
    "perl": frozenset({"-e", "-E"}),
    "ruby": frozenset({"-e"}),
    "node": frozenset({"-e", "-p", "--eval", "--print"}),
    "nodejs": frozenset({"-e", "-p", "--eval", "--print"}),
    "php": frozenset({"-r"}),
    "lua": frozenset({"-e"}),
    "Rscript": frozenset({"-e"}),
    "deno": frozenset({"eval"}),
}
_AWKS = frozenset({"awk", "gawk", "mawk", "nawk", "busybox-awk"})
_QUIET = frozenset(
    {"true", "false", ":", "cd", "export", "unset", "set", "shopt", "local", "declare", "exit"}
)
_PYTHON = re.compile(r"^(python|pypy)(\d+(\.\d+)?)?$")
# xargs options: those that take a value; -I/-i/--replace name the placeholder
_XARGS_VALUED = frozenset(
    {"-n", "-P", "-L", "-d", "-a", "-E", "-s", "--max-args", "--max-procs", "--delimiter"}
)


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


def _split_env_string(args: Sequence[str]) -> list[str]:
    """Expand ``env -S 'a b'`` into its words (only options before the command are looked at)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "--":
            out.extend(args[i:])
            break
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


class ShellArgs(NamedTuple):
    """What ``bash ARGS`` runs: a ``-c`` body, a script file, or commands read from stdin."""

    body: str | None  # the -c text
    script: str | None  # the script file argument
    rest: tuple[str, ...]  # arguments after the body or script ($0, $1, ...)
    reads_stdin: bool  # no -c and no script, or -s
    forced_interactive: bool  # -i


def parse_shell_args(args: Sequence[str]) -> ShellArgs:
    has_c = forced_i = has_s = False
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
        elif arg[:1] in ("-", "+") and len(arg) > 1 and not arg.startswith("--"):
            has_c = has_c or "c" in arg[1:]
            forced_i = forced_i or "i" in arg[1:]
            has_s = has_s or "s" in arg[1:]
        elif not arg.startswith("--"):
            break
        i += 1
    rest = tuple(args[i:])
    if has_c:
        return ShellArgs(rest[0] if rest else "", None, rest[1:], False, forced_i)
    if has_s or not rest:
        return ShellArgs(None, None, rest, True, forced_i)
    return ShellArgs(None, rest[0], rest[1:], False, forced_i)


def shell_args(args: Sequence[str]) -> tuple[str | None, bool, bool]:
    """For ``bash ARGS``: (the -c body or None, runs a script/-c, forced interactive with -i)."""
    parsed = parse_shell_args(args)
    return parsed.body, parsed.body is not None or parsed.script is not None, parsed.forced_interactive


def su_body(args: Sequence[str]) -> str | None:
    """For ``su ARGS``: the ``-c`` body, or None when su would start a shell."""
    for i, arg in enumerate(args):
        if arg in ("-c", "--command") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--command="):
            return arg.split("=", 1)[1]
    return None


def _option_value(args: Sequence[str], short: str, long: str) -> str | None:
    """The value of ``-c BODY``, ``-qc BODY``, ``-cBODY`` or ``--command[=]BODY`` style options."""
    for i, arg in enumerate(args):
        if arg == long and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(long + "="):
            return arg.split("=", 1)[1]
        if len(arg) > 1 and arg[0] == "-" and arg[1] != "-" and short in arg[1:]:
            after = arg[arg.index(short, 1) + 1 :]
            if after:
                return after
            return args[i + 1] if i + 1 < len(args) else ""
    return None


def _echo_text(args: Sequence[str]) -> str:
    escapes = False
    i = 0
    while i < len(args) and re.fullmatch(r"-[neE]+", args[i]):
        escapes = "e" in args[i] if "e" in args[i] or "E" in args[i] else escapes
        i += 1
    text = " ".join(args[i:])
    return decode_escapes(text, echo=True)[0] if escapes else text


_PRINTF_SPEC = re.compile(r"%(%|[-+ #0]*\d*(?:\.\d+)?([sbqdiouxXcfeEgG]))")


def _printf_text(args: Sequence[str]) -> str | None:
    """What ``printf FORMAT ARGS`` prints, for %s/%b/%% formats; None for anything else."""
    if not args:
        return ""
    fmt, values = decode_escapes(args[0])[0], list(args[1:])
    specs = [m.group(2) for m in _PRINTF_SPEC.finditer(fmt) if m.group(1) != "%"]
    if any(s not in ("s", "b") for s in specs):
        return None
    out: list[str] = []
    while True:

        def one(m: re.Match[str]) -> str:
            if m.group(1) == "%":
                return "%"
            value = values.pop(0) if values else ""
            return decode_escapes(value, echo=True)[0] if m.group(2) == "b" else value

        out.append(_PRINTF_SPEC.sub(one, fmt))
        if not values or not specs:
            return "".join(out)


_GLOB_TOKEN = re.compile(r"\\(.)|(\*)|(\?)|(\[!?\]?[^\]]*\])|([^\\*?\[]+|\[)", re.S)


def _glob_to_rx(pattern: str) -> str:
    """A shell glob as a regular expression (no anchors)."""
    out: list[str] = []
    for m in _GLOB_TOKEN.finditer(pattern):
        if m.group(2):
            out.append(".*")
        elif m.group(3):
            out.append(".")
        elif m.group(4):
            body = m.group(4)[1:-1]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
        else:
            out.append(re.escape(m.group(1) if m.group(1) is not None else m.group(5)))
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(_glob_to_rx(pattern), re.S)


# ----------------------------------------------------------------------------------------------------------
# Evaluation: simple commands -> invocations
# ----------------------------------------------------------------------------------------------------------


class _Ctx:
    """What one check shares across its passes: the stage env, lexed bodies, the text of unknown parts."""

    def __init__(self, cmd: str, env: Mapping[str, str] | None, names: frozenset[str]) -> None:
        self.env = env
        self.names = names
        self.info: list[tuple[str, _Body | None]] = []
        self._info_index: dict[tuple[str, str, int], int] = {}
        self.hard: list[str] = []
        self.budget = 8 * len(cmd) + (1 << 20)
        self.cache: dict[tuple[str, int], _Body] = {}
        self._matches: dict[tuple[int, str], _Matches] = {}
        self._last: dict[tuple[int, str], tuple[str, int]] = {}

    def parens(self, text: str) -> _Matches:
        return self._matcher(text, _PARENS, "(", ")")

    def braces(self, text: str) -> _Matches:
        return self._matcher(text, _CURLY, "{", "}")

    def _matcher(self, text: str, pattern: re.Pattern[str], open_: str, close: str) -> _Matches:
        key = (id(text), open_)
        found = self._matches.get(key)
        if found is None or found.text is not text:
            found = self._matches[key] = _Matches(text, pattern, open_, close)
        return found

    def last(self, text: str, char: str) -> int:
        """The last index of ``char`` in ``text`` (-1): a search that starts after it need not run."""
        key = (id(text), char)
        found = self._last.get(key)
        if found is None or found[0] is not text:
            found = self._last[key] = (text, text.rfind(char))
        return found[1]

    def span(self, kind: str, display: str, quoted: bool, body: _Body | None = None) -> str:
        key = (kind, display, id(body) if body is not None else 0)
        idx = self._info_index.get(key)
        if idx is None:
            idx = self._info_index[key] = len(self.info)
            self.info.append((display, body))
        return f"{_S}{kind.upper() if quoted else kind}{idx}{_E}"

    def shown(self, text: str) -> str:
        if _S not in text:
            return text
        return _SPAN.sub(lambda m: self.info[int(m.group(2))][0], text)

    def procsub(self, text: str) -> _Body | None:
        m = _SPAN.fullmatch(text)
        return self.info[int(m.group(2))][1] if m and m.group(1).lower() == PROCSUB else None

    def too_deep(self, text: str) -> None:
        if not self.hard:
            self.hard.append(
                f"nested more than {MAX_DEPTH} levels deep ({_short(text)}): the policy cannot read what "
                "runs there; write the inner commands directly or put them in a script file"
            )

    def too_many(self, why: str) -> None:
        if not self.hard:
            self.hard.append(f"{why}: the policy cannot check them all; write the words out")

    def lex(self, text: str, depth: int) -> _Body:
        key = (text, depth)
        body = self.cache.get(key)
        if body is None:
            self.budget -= len(text)
            if self.budget < 0:
                self.too_many("it expands to more text than the policy reads")
                return _Body(depth)
            body = self.cache[key] = _Lexer(self, text, depth).run()
        return body


class _Known(NamedTuple):
    """What an earlier pass found that changes how words read: values variables are given in the command,
    functions it defines and the arguments they are called with."""

    assigned: dict[str, list[str]]
    functions: frozenset[str] = frozenset()
    calls: tuple[tuple[str, ...], ...] = ()  # the arguments of each call of a function, and of set --
    aliases: dict[str, str] = {}  # alias name -> its text; ``hash -p PATH name`` -> PATH (never mutated)


def _array_values(value: str) -> list[str]:
    if _AS not in value:
        return [value]
    elements = value.split(_AS)
    return [_FS.join(elements), *elements]


def _union(alternatives: list[list[str]]) -> list[str]:
    """Every field of every alternative, once each (how arguments with several possible values are read)."""
    return list(dict.fromkeys(f for alt in alternatives for f in alt))[:_MAX_WORDS]


def _add(values: list[str], new: Iterable[str], limit: int = _MAX_CANDIDATES) -> None:
    for value in new:
        if value not in values and len(values) < limit:
            values.append(value)


def _product(options: list[list[Any]]) -> list[list[Any]]:
    """Every combination when there are few; else the first of each, varying one position at a time.
    No combination when a position has no option (an expansion that stops the command)."""
    if all(len(opts) == 1 for opts in options):
        return [[opts[0] for opts in options]]
    if not all(options):
        return []
    total = 1
    for opts in options:
        total *= max(1, len(opts))
    if total <= _MAX_CANDIDATES:
        combos: list[list[Any]] = [[]]
        for opts in options:
            combos = [c + [o] for c in combos for o in opts]
        return combos
    base = [opts[0] for opts in options]
    out = [base]
    for k, opts in enumerate(options):
        for o in opts[1:]:
            out.append(base[:k] + [o] + base[k + 1 :])
    return out


_ASSIGN_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]]*\])?\+?=(.*)", re.S)
_DYNAMIC = frozenset({"RANDOM", "SRANDOM", "SECONDS", "LINENO", "BASHPID", "PPID", "UID", "EUID"})
_SELF_TEXT = frozenset({"BASH_COMMAND", "BASH_EXECUTION_STRING"})  # the shell's own command text
#: Variables whose value is a command some program runs (git, less, man, ssh, an interactive bash).
_COMMAND_VARIABLES = frozenset(
    {"PROMPT_COMMAND", "GIT_SSH_COMMAND", "GIT_SSH", "GIT_EDITOR", "GIT_PAGER", "GIT_SEQUENCE_EDITOR"}
    | {"GIT_EXTERNAL_DIFF", "GIT_ASKPASS", "SSH_ASKPASS", "SUDO_ASKPASS", "EDITOR", "VISUAL", "PAGER"}
    | {"MANPAGER", "LESSOPEN", "LESSCLOSE", "BROWSER"}
)
#: Prompt strings: command substitutions in them run each time the prompt (or ``set -x`` trace) is shown.
_PROMPTS = frozenset({"PS0", "PS1", "PS2", "PS3", "PS4"})
_DECLARE = frozenset({"export", "declare", "typeset", "local", "readonly", "let"})
_READ_VALUED = frozenset({"-p", "-d", "-n", "-N", "-t", "-u", "-i"})


class _Pass:
    """One reading of every level of the command with what is known so far."""

    def __init__(self, ctx: _Ctx, known: _Known) -> None:
        self.ctx, self.env, self.known = ctx, ctx.env, known
        self.assigned: dict[str, list[str]] = {}
        self.functions: set[str] = set(known.functions)
        self.calls: list[tuple[str, ...]] = []
        self.referenced: set[str] = set()
        self.positional_used = False
        self.invocations: list[Invocation] = []
        self.unreadable: list[str] = []
        self.normalised: list[str] = []
        self.done: set[tuple[int, tuple[str, ...]]] = set()
        self.outputs: dict[int, str] = {}
        self.final: dict[int, tuple[str, ...]] = {}
        self.used: list[tuple[str, str | None]] = []
        self.aliases: dict[str, str] = {}
        self.where: tuple[_Seg, Sequence[str], int] | None = None  # the simple command being read
        self.deferring = 0
        ifs = "".join(c for v in known.assigned.get("IFS", ()) for c in v if c not in " \t\n" and c != _S)
        self.split = re.compile("[ \t\n" + re.escape(ifs) + "]+")

    # -- bodies and simple commands ---------------------------------------------------------------------

    def body(self, body: _Body | None, pos: Sequence[str], redirected: bool = False) -> None:
        if body is None:
            return
        key = (id(body), tuple(pos))
        if key in self.done:
            return
        self.done.add(key)
        for seg in body.segments:
            self.segment(seg, pos, body.depth, redirected)
            if seg.op in ("|", "|&"):
                self.produces(seg, pos)
        for child in body.children:
            self.body(child, pos)

    def segment(self, seg: _Seg, pos: Sequence[str], depth: int, redirected: bool) -> None:
        saved, self.used = self.used, []
        where, self.where = self.where, (seg, pos, depth)
        try:
            self._segment(seg, pos, depth, redirected)
        finally:
            self.used, self.where = saved, where

    def _segment(self, seg: _Seg, pos: Sequence[str], depth: int, redirected: bool) -> None:
        if seg.kind == "fundef":
            name = _plain(seg.words[-1])
            if name:
                self.functions.add(name)
            return
        if seg.kind == "syntax":
            return
        if seg.plain is not None:  # plain words: they are the fields
            self.command(list(seg.plain), seg, pos, depth, (False, redirected or seg.stdin is not None), ())
            if depth == 0:
                self.normalised.append(" ".join(seg.plain) + " " + seg.op)
            return
        words, i, loop = seg.words, 0, False
        while i < len(words):
            plain = _plain(words[i])
            if plain in _KEYWORDS or plain == "coproc":
                loop = loop or plain in ("while", "until")
                i += 2 if plain == "coproc" and i + 2 < len(words) and _plain(words[i + 2]) == "{" else 1
            elif plain == "function" and i + 1 < len(words):
                self.functions.add(_plain(words[i + 1]) or "")
                i += 2
            elif plain in ("for", "select"):
                self._for(words[i + 1 :], pos)
                return
            elif plain == "case":
                return
            elif self._assignment(words[i], pos):
                i += 1
            else:
                break
        try:
            redirects = tuple((op, "".join(self.flat(w, pos)[:1])) for op, w in seg.redirects)
            first = self.expand(words[i], pos) if i < len(words) else [[]]
            rest = [self.expand(w, pos) for w in words[i + 1 :]]
        except TooMany as exc:
            self.ctx.too_many(str(exc))
            return
        if not first or not all(rest):
            return  # an expansion such as ${X:?} stops the command before it runs
        tail = [f for alts in rest for f in (alts[0] if len(alts) == 1 else _union(alts))]
        stdin = redirected or seg.stdin is not None
        for alt in first:
            fields = alt + tail
            if fields or redirects:
                self.command(fields, seg, pos, depth, (loop, stdin), redirects)
        if depth == 0:
            self.normalised.append(" ".join(self.ctx.shown(f) for f in first[0] + tail) + " " + seg.op)

    def _for(self, words: list[Word], pos: Sequence[str]) -> None:
        name = _plain(words[0]) if words else None
        if not name:
            return
        if len(words) > 1 and _plain(words[1]) == "in":
            values = [f for w in words[2:] for f in self.flat(w, pos)]
        else:
            values = self.positional(pos, "@")
        self.record(name, values)

    def _assignment(self, word: Word, pos: Sequence[str]) -> bool:
        first = word[0]
        if first[0] != "L" or first[2]:
            return False
        m = _ASSIGN.match(first[1])
        if m is None:
            return False
        value: Word = ([("L", first[1][m.end() :], False)] if m.end() < len(first[1]) else []) + word[1:]
        values = [v for alt in self.expand(value, pos, split=False) for v in alt] or [""]
        if m.group(3):  # X+=value
            values += [old.replace(_UNSET, "") + v for old in self.var(m.group(1), True) for v in values]
        self.record(m.group(1), values)
        return True

    def record(self, name: str, values: Iterable[str]) -> None:
        """Another value ``name`` may have. An array gives each element and, for ``${a[@]}``, all of them."""
        values = [v for value in values for v in _array_values(value)]
        _add(self.assigned.setdefault(name, []), values)
        if (name in _COMMAND_VARIABLES or name in _PROMPTS) and self.where is not None:
            seg, pos, depth = self.where
            for value in values:
                self.later(value, seg, pos, depth, name, prompt=name in _PROMPTS)

    def later(
        self, text: str, seg: _Seg, pos: Sequence[str], depth: int, what: str, prompt: bool = False
    ) -> None:
        """A command held for later (a variable, a setting): read like one that runs now, marked deferred."""
        self.deferring += 1
        try:
            if not prompt:
                self.script(text, seg, pos, what, depth)
            elif depth + 1 > MAX_DEPTH:
                self.ctx.too_deep(text)
            else:
                lexer = _Lexer(self.ctx, text, depth + 1)
                lexer._dquote(0, doc=True)
                for child in lexer.body.children:
                    self.body(child, pos)
        finally:
            self.deferring -= 1

    # -- expansion ----------------------------------------------------------------------------------------

    def expand(self, word: Word, pos: Sequence[str], split: bool = True) -> list[list[str]]:
        """The alternatives of one word: each the list of fields it makes with one choice of values."""
        if len(word) == 1 and word[0][0] == "L" and (word[0][2] or "{" not in word[0][1]):
            text = word[0][1]
            return [[text]] if text or word[0][2] else [[]]
        pieces = _brace_words(word) if split else [word]
        per_word = [self._fields(w, pos, split) for w in pieces]
        return [[f for fields in combo for f in fields] for combo in _product(per_word)]

    def flat(self, word: Word, pos: Sequence[str]) -> list[str]:
        alts = self.expand(word, pos)
        return alts[0] if len(alts) == 1 else _union(alts)

    def _fields(self, word: Word, pos: Sequence[str], split: bool) -> list[list[str]]:
        quoted = any(p[0] == "L" and p[2] for p in word)
        options = [self._part(p, pos) for p in word]
        out: list[list[str]] = []
        for combo in _product(options):
            if not split:
                out.append(["".join(text for text, _ in combo).replace(_FS, " ")])
                continue
            out.append(self._split(combo, quoted))
        return out

    def _split(self, pieces: list[tuple[str, bool]], keep: bool) -> list[str]:
        fields: list[str] = []
        cur: list[str] = []
        for whole, splittable in pieces:
            for k, text in enumerate(whole.split(_FS) if _FS in whole else (whole,)):
                if k:  # a field break: the next element starts a word of its own
                    fields.append("".join(cur))
                    cur, keep = [], False
                if not splittable or not text:
                    cur.append(text)
                    continue
                chunks = self.split.split(text)
                cur.append(chunks[0])
                for chunk in chunks[1:]:
                    joined = "".join(cur)
                    if joined or keep:
                        fields.append(joined)
                    cur, keep = [chunk], False
        joined = "".join(cur)
        if joined or keep:
            fields.append(joined)
        return fields

    def _part(self, part: Part, pos: Sequence[str]) -> list[tuple[str, bool]]:
        kind = part[0]
        if kind == "L":
            return [(part[1], False)]
        if kind == "V":
            return [(v, not part[4]) for v in self.param(part, pos)]
        if kind == "C":
            if part[1] is None:
                return [(self.ctx.span(VALUE, part[3], part[2]), False)]
            out = self.output(part[1], pos).rstrip("\n")
            m = _SPAN.fullmatch(out)
            if m is not None:  # name the whole substitution in messages, not its last command
                out = self.ctx.span(m.group(1).lower(), part[3], part[2])
            return [(out, not part[2])]
        if kind == "P":
            return [(self.ctx.span(PROCSUB, part[3], part[2], part[1]), False)]
        values = [f for w in part[1] for f in self.flat(w, pos)]
        return [(_AS.join(values), False)]

    def var(self, name: str, quoted: bool) -> list[str]:
        self.referenced.add(name)
        values: list[str]
        if name == "HOME":
            values = [self.ctx.span(HOME, "~", quoted)]
        elif name in ("PWD", "OLDPWD"):
            values = [self.ctx.span(EXTERNAL, "$" + name, quoted)]
        elif name == "IFS":
            values = [" \t\n"]
        elif name in _DYNAMIC:
            values = ["0"]
        elif name == "BASH":
            values = ["/bin/bash"]
        elif name in _SELF_TEXT or self.env is None:
            values = [self.ctx.span(VALUE, "$" + name, quoted)]
        else:
            value = self.env.get(name)
            values = [value if value is not None else _UNSET]
            if name not in self.known.assigned:  # its value is the stage env's, not the command's own
                self.used.append((name, value))
        extra = self.known.assigned.get(name)
        if extra:
            values = values + [e for e in extra if e not in values]
        return values

    def positional(self, pos: Sequence[str], name: str) -> list[str]:
        """``$1``, ``$@``, ...: from the arguments of this level (``bash -c BODY $0 $1``) and of every call of
        a function the command defines (or ``set --``), one alternative per call."""
        self.positional_used = True
        if name == "0":
            return ["bash", *pos[:1]]
        calls = [tuple(pos[1:]), *self.known.calls]
        if name in ("@", "*"):
            values = [_FS.join(call) if name == "@" else " ".join(call) for call in calls]
        else:
            k = int(name)
            values = [call[k - 1] if len(call) >= k else _UNSET for call in calls]
        return list(dict.fromkeys(values))

    def param(self, part: Part, pos: Sequence[str]) -> list[str]:
        _, name, op, arg, quoted, display = part
        if name == "!":
            return [self.ctx.span(VALUE, display, quoted)]
        if name.isdigit() or name in ("@", "*"):
            base = self.positional(pos, name)
        elif name in ("#", "?", "$"):
            base = ["0"]
        elif name == "-":
            base = ["hB"]
        else:
            base = self.var(name, quoted)
        if not op:
            return [v.replace(_UNSET, "") for v in base]
        out: list[str] = []
        for value in base:
            out.extend(self._operator(name, op, value, arg or [], pos, (display, quoted)))
        return list(dict.fromkeys(v.replace(_UNSET, "") for v in out))[: _MAX_CANDIDATES * 2]

    def _arg(self, arg: Word, pos: Sequence[str]) -> list[str]:
        return [v for alt in self.expand(arg, pos, split=False) for v in alt] or [""]

    def _operator(
        self, name: str, op: str, value: str, arg: Word, pos: Sequence[str], shown: tuple[str, bool]
    ) -> list[str]:
        unknown = _S in value
        # without a colon the operators only test whether the variable is set: an empty value counts
        absent = value == _UNSET or (op.startswith(":") and value == "")
        if op in (":-", "-", ":=", "="):
            if op in (":=", "="):
                self.record(name, self._arg(arg, pos))
            if not absent and not unknown:
                return [value]
            return ([value] if unknown else []) + self._arg(arg, pos)
        if op in (":?", "?"):
            if absent:
                return []  # the shell stops the command here
            kinds = span_kinds(value)
            return [self.ctx.span(NONEMPTY, shown[0], shown[1])] if kinds & {"v", "V"} else [value]
        if op in (":+", "+"):
            if not absent and not unknown:
                return self._arg(arg, pos)
            return ([""] + self._arg(arg, pos)) if unknown else [""]
        return [self._transform(op, value.replace(_UNSET, ""), arg, pos, shown)]

    def _transform(self, op: str, value: str, arg: Word, pos: Sequence[str], shown: tuple[str, bool]) -> str:
        """``${x#p}``, ``${x%p}``, ``${x/p/r}``, ``${x^^}``, ``${x:1:2}`` of a known value."""
        args = self._arg(arg, pos)
        if _S in value or len(args) != 1 or _S in args[0] or len(value) > 256:
            return self.ctx.span(VALUE, shown[0], shown[1])
        pattern = args[0]
        try:
            if op in ("#", "##", "%", "%%"):
                return _trim(value, op, pattern)
            if op in ("/", "//", "/#", "/%"):
                pat, _, repl = pattern.partition("/")
                rx = {"/#": "^"}.get(op, "") + f"(?:{_glob_to_rx(pat)})" + ("$" if op == "/%" else "")
                return re.sub(rx, lambda _: repl, value, count=0 if op == "//" else 1) if pat else value
            if op in _CASE_OPS:
                return value.upper() if op[0] == "^" else value.lower()
            if op == ":":
                numbers = [int(x) for x in pattern.split(":")]
                start = numbers[0] if numbers[0] >= 0 else len(value) + numbers[0]
                return value[start : start + numbers[1]] if len(numbers) > 1 else value[start:]
        except (ValueError, re.error):
            pass
        return self.ctx.span(VALUE, shown[0], shown[1])

    # -- what a command prints ----------------------------------------------------------------------------

    def output(self, body: _Body, pos: Sequence[str]) -> str:
        """What ``$(body)`` expands to: the text when it prints text written in the command (echo, printf,
        cat of a here-document), else an unknown part of the right kind."""
        key = id(body)
        if key in self.outputs:
            return self.outputs[key]
        self.outputs[key] = ""
        self.body(body, pos)
        texts = [
            self.produces(seg, pos) for seg in body.segments if not seg.kind and seg.op not in ("|", "|&")
        ]
        out = self.outputs[key] = "\n".join(t for t in texts if t)
        return out

    def produces(self, seg: _Seg, pos: Sequence[str]) -> str:
        key = -id(seg)
        if key in self.outputs:
            return self.outputs[key]
        self.outputs[key] = ""
        argv = self.final.get(id(seg))
        text = "" if argv is None else self._produces(seg, argv, pos)
        self.outputs[key] = text
        return text

    def _produces(self, seg: _Seg, argv: tuple[str, ...], pos: Sequence[str]) -> str:
        if not argv or any(op.lstrip("1") in (">", ">>", ">|", "&>", "&>>") for op, _ in seg.redirects):
            return ""
        name, args = argv[0], argv[1:]
        if name == "echo":
            return _echo_text(args)
        if name == "printf":
            printed = _printf_text(args)
            if printed is not None:
                return printed
        elif name in ("cat", "tee") and (name == "tee" or all(a == "-" or a.startswith("-") for a in args)):
            return self.stdin_text(seg, pos)
        elif name in _QUIET:
            return ""
        if self.stdin_in_command(seg, pos) or _inline_code(argv):
            return self.ctx.span(COMPUTED, "$(" + _short(seg.source) + ")", False)
        return self.ctx.span(EXTERNAL, "$(" + _short(seg.source) + ")", False)

    def stdin_text(self, seg: _Seg, pos: Sequence[str]) -> str:
        """The text a command reads on stdin: a here-document, the output of the command piped into it, the
        output of a process substitution, or (a file, the terminal) text from outside the command."""
        stdin = seg.stdin
        if stdin is not None and stdin[0] == "doc":
            return "\n".join(v for w in stdin[1] for alt in self.expand(w, pos, split=False) for v in alt)
        if stdin is not None and stdin[0] == "pipe":
            return self.produces(stdin[1], pos)
        if stdin is not None and stdin[0] == "file":
            target = self.flat(stdin[1], pos)
            body = self.ctx.procsub(target[0]) if target else None
            if body is not None:
                return self.output(body, pos)
        return self.ctx.span(EXTERNAL, "stdin", False)

    def stdin_in_command(self, seg: _Seg, pos: Sequence[str]) -> bool:
        """Whether a command's stdin is text written in the command (so what it prints derives from it)."""
        if (
            seg.stdin is None
            or seg.stdin[0] == "file"
            and not self.ctx.procsub("".join(self.flat(seg.stdin[1], pos)))
        ):
            return False
        text = self.stdin_text(seg, pos)
        return bool(re.sub(r"\ue000[xX]\d+\ue001|\s", "", text))

    # -- commands -----------------------------------------------------------------------------------------

    def command(
        self,
        fields: list[str],
        seg: _Seg,
        pos: Sequence[str],
        depth: int,
        flags: tuple[bool, bool],
        redirects: tuple[tuple[str, str], ...],
        chain: tuple[str, ...] = (),
    ) -> None:
        """Unwrap one simple command, record it, then read what it runs in turn."""
        used = tuple(self.used)
        words, names = list(fields), list(chain)
        alias = self._alias(words[0]) if words else None
        if alias is not None and "/" not in words[0]:
            if alias.startswith("/"):  # hash -p PATH name: the name runs PATH
                words = [alias, *words[1:]]
            else:
                self.script(" ".join([alias, *map(_quote, words[1:])]), seg, pos, f"alias {words[0]}", depth)
        while words:
            m = _ASSIGN_FIELD.fullmatch(words[0]) if names else None
            if m is not None:
                self.record(m.group(1), [m.group(2)])
                words.pop(0)
                continue
            self._check_name(words, seg, pos, depth, flags, names)
            unwrapped = self._unwrap(words, seg, pos, names, depth)
            if unwrapped is None:
                break
            words = unwrapped
        argv: tuple[str, ...] = ()
        if words:
            argv = (basename(words[0]), *words[1:])
            names.append(argv[0])
        if any(_S in f for f in fields):
            shown = tuple(self.ctx.shown(f) for f in argv)
            text = " ".join(self.ctx.shown(f) for f in fields)
        else:
            shown, text = argv, " ".join(fields)
        deferred = self.deferring > 0
        defined = self.functions | self.known.functions
        function = len(names) == 1 and bool(argv) and argv[0] in defined
        self.invocations.append(
            Invocation(
                tuple(names),
                argv,
                redirects,
                flags[1],
                flags[0],
                text,
                seg.source,
                shown,
                deferred,
                function,
                used,
            )
        )
        self.final.setdefault(id(seg), argv)
        if argv:
            self.program(argv, seg, pos, depth, flags[1])

    def _alias(self, word: str) -> str | None:
        return self.aliases.get(word) or self.known.aliases.get(word)

    def _check_name(
        self,
        words: list[str],
        seg: _Seg,
        pos: Sequence[str],
        depth: int,
        flags: tuple[bool, bool],
        names: list[str],
    ) -> None:
        """A program name the policy cannot read: computed at run time, or a glob pattern."""
        base = basename(words[0])
        shown = self.ctx.shown(words[0])
        if span_kinds(base) & OPAQUE:
            self.unreadable.append(
                f"the program name {shown} is computed at run time: write the program name itself "
                "(or set the variable in the stage env)"
            )
        elif _GLOB_CHARS.search(base) and base not in ("[", "[["):
            self.unreadable.append(f"the program name {shown} is a pattern: write the program name itself")
            literal = len(_GLOB_CHARS.sub("", base).replace("]", ""))
            matches = [n for n in sorted(self.ctx.names) if fnmatchcase(n, base)] if literal else []
            for name in matches[:8]:
                self.command([name, *words[1:]], seg, pos, depth, flags, (), tuple(names))

    def _unwrap(
        self, words: list[str], seg: _Seg, pos: Sequence[str], names: list[str], depth: int
    ) -> list[str] | None:
        """The words of the wrapped command when ``words`` starts with a wrapper, else None."""
        name = basename(words[0])
        sub = _SUB_WRAPPERS.get((name, words[1])) if len(words) > 1 else None
        spec = _WRAPPERS.get(name)
        if sub is not None:
            spec = (sub, 0)
            args = words[2:]
        elif spec is None or (name == "flock" and _option_value(words[1:], "c", "--command") is not None):
            return None
        else:
            args = _split_env_string(words[1:]) if name == "env" else words[1:]
        names.append(name)
        if name == "xargs":
            return self._xargs(args, seg, pos)
        consumed, flags = _skip_options(args, spec[0])
        if name == "command" and any(f in ("-v", "-V") for f in flags):
            return []  # `command -v x` looks x up, it does not run it
        rest = list(args[consumed:])
        if name == "env":
            for i, arg in enumerate(rest):
                if "=" not in arg or arg.startswith("="):
                    rest = rest[i:]
                    break
                key, _, value = arg.partition("=")
                if value.startswith("()"):  # an exported function: BASH_FUNC_f%%=() { ..; }
                    self.script(value[2:], seg, pos, "an exported function", depth)
                self.record(key, [value])
            else:
                rest = []
        return rest[spec[1] :]

    def _xargs(self, args: list[str], seg: _Seg, pos: Sequence[str]) -> list[str]:
        """``xargs CMD``: CMD with the words read from stdin appended (or put in place of ``-I`` REPL)."""
        replace: str | None = None
        text: str | None = None  # the input, when it comes from -a <(..)
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                i += 1
                break
            if not arg.startswith("-") or arg == "-":
                break
            if arg == "-I" and i + 1 < len(args):
                replace, i = args[i + 1], i + 2
                continue
            if arg in ("-a", "--arg-file") and i + 1 < len(args):
                source = self.ctx.procsub(args[i + 1])
                text = self.output(source, pos) if source is not None else None
            if arg.startswith(("-I", "-i", "--replace")):
                replace = arg.split("=", 1)[1] if "=" in arg else arg[2:] or "{}"
            i += 2 if arg in _XARGS_VALUED else 1
        command = args[i:] or ["echo"]
        if text is None:
            text = self.stdin_text(seg, pos)
        if span_kinds(text) & OPAQUE:
            if replace is not None or basename(command[0]) in SHELLS:
                self.unreadable.append(f"xargs runs words computed at run time ({self.ctx.shown(text)[:60]})")
            return command
        if _S in text:
            return command
        if replace is not None:
            return [w.replace(replace, text.strip()) for w in command]
        return command + text.split()

    # -- programs that run more commands ------------------------------------------------------------------

    def program(
        self, argv: tuple[str, ...], seg: _Seg, pos: Sequence[str], depth: int, redirected: bool
    ) -> None:
        name, args = argv[0], argv[1:]
        handler = _PROGRAMS.get(name)
        if handler is not None:
            handler(self, args, seg, pos, depth)
        elif name in SHELLS:
            self._shell(args, seg, pos, depth)
        if name in self.functions or name in self.known.functions:
            self.call(args)

    def call(self, args: Sequence[str]) -> None:
        if len(self.calls) < _MAX_FN_ARGS and tuple(args) not in self.calls:
            self.calls.append(tuple(args))

    def script(
        self, text: str, seg: _Seg, pos: Sequence[str], what: str, depth: int, redirected: bool = False
    ) -> None:
        """Read ``text`` as commands one level down (a ``bash -c`` body, what ``eval`` or ``trap`` runs)."""
        if span_kinds(text) & OPAQUE:
            self.unreadable.append(
                f"{what} runs text computed at run time ({_short(self.ctx.shown(text), 60)}): "
                "write the commands themselves"
            )
        if depth + 1 > MAX_DEPTH:
            self.ctx.too_deep(text)
            return
        if text.strip():
            self.body(self.ctx.lex(text, depth + 1), pos, redirected)

    def _shell(self, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
        parsed = parse_shell_args(args)
        if parsed.body is not None:
            self.script(parsed.body, seg, list(parsed.rest), "bash -c", depth)
        elif parsed.script is not None and self.ctx.procsub(parsed.script) is not None:
            body = self.ctx.procsub(parsed.script)
            assert body is not None
            self.script(self.output(body, pos), seg, [parsed.script, *parsed.rest], "bash <(..)", depth)
        elif (parsed.reads_stdin or parsed.script in ("/dev/stdin", "-")) and seg.stdin is not None:
            text = self.stdin_text(seg, pos)
            self.script(text, seg, list(parsed.rest), "a shell reading stdin", depth, True)


def _trim(value: str, op: str, pattern: str) -> str:
    rx = _glob_regex(pattern)
    n = len(value)
    if op in ("#", "##"):
        order = range(n + 1) if op == "#" else range(n, -1, -1)
        for k in order:
            if rx.fullmatch(value[:k]):
                return value[k:]
        return value
    order = range(n, -1, -1) if op == "%" else range(n + 1)
    for k in order:
        if rx.fullmatch(value[k:]):
            return value[:k]
    return value


def _inline_code(argv: Sequence[str]) -> bool:
    """Whether a program's output derives from program text written in the command (python -c, awk '..')."""
    name, args = argv[0], argv[1:]
    if name in _AWKS:
        return "-f" not in args
    if _PYTHON.match(name):
        return "-c" in args
    flags = _INLINE_CODE.get(name)
    return bool(flags and any(a in flags for a in args))


# -- handlers of programs that run a command given as text -------------------------------------------------


def _h_su(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    body = su_body(args)
    if body is not None:
        p.script(body, seg, pos, "su -c", depth)


def _h_runuser(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    body = su_body(args)
    if body is not None:
        p.script(body, seg, pos, "runuser -c", depth)
        return
    consumed, _ = _skip_options(args, _WRAPPERS["sudo"][0] | {"-s", "--shell", "-w"})
    if args[consumed:]:
        p.command(list(args[consumed:]), seg, pos, depth, (False, False), (), ("runuser",))


def _h_sg(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    body = su_body(args)
    if body is None and len(args) > 1:
        body = " ".join(args[1:])
    if body:
        p.script(body, seg, pos, "sg", depth)


def _h_eval(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    p.script(" ".join(args), seg, pos, "eval", depth)


def _h_option_body(short: str, long: str, what: str) -> Any:
    def handler(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
        body = _option_value(args, short, long)
        if body is not None:
            p.script(body, seg, pos, what, depth)

    return handler


def _h_watch(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    consumed, _ = _skip_options(args, frozenset({"-n", "--interval", "-d", "-g", "-q", "--chgexit"}))
    if args[consumed:]:
        p.script(" ".join(args[consumed:]), seg, pos, "watch", depth)


_TMUX_VALUED = frozenset({"-s", "-n", "-c", "-t", "-x", "-y", "-F", "-e", "-l"})


def _h_tmux(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    commands = {"new", "new-session", "new-window", "neww", "split-window", "splitw", "run-shell", "run"}
    for i, arg in enumerate(args):
        if arg in commands:
            consumed, _ = _skip_options(args[i + 1 :], _TMUX_VALUED)
            rest = args[i + 1 + consumed :]
            if rest:
                p.script(" ".join(rest), seg, pos, "tmux", depth)
            return


def _h_trap(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    args = list(args[1:] if args[:1] == ["--"] else args)
    if len(args) >= 2 and args[0] not in ("-", "-p", "-l"):
        p.script(args[0], seg, pos, "trap", depth)


def _h_alias(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    for arg in args:
        if "=" in arg and not arg.startswith("-"):
            name, _, body = arg.partition("=")
            p.aliases[name] = body
            p.script(body, seg, pos, "alias", depth)


def _h_hash(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    """``hash -p PATH name``: from now on ``name`` runs PATH."""
    path = _option_value(args, "p", "--path-never-used")
    if path is None:
        return
    names = [a for a in args[args.index(path) + 1 :] if not a.startswith("-")] if path in args else []
    for name in names:
        p.aliases[name] = path if path.startswith("/") else "/" + path
    p.command([path], seg, pos, depth, (False, False), (), ("hash",))


def _h_at(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    """``at``/``batch`` run the commands they read on stdin (``-f FILE``: a script file)."""
    if seg.stdin is not None and "-f" not in args:
        p.script(p.stdin_text(seg, pos), seg, pos, "at", depth, True)


def _h_parallel(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    """GNU parallel runs its command (or, with none, each input) through a shell."""
    consumed, _ = _skip_options(args, _PARALLEL_VALUED)
    rest = list(args[consumed:])
    cut = next((i for i, a in enumerate(rest) if a in (":::", "::::", ":::+", "::::+")), len(rest))
    command, inputs = rest[:cut], [a for a in rest[cut + 1 :] if a not in (":::", ":::+")]
    if rest[cut : cut + 1] == ["::::"]:
        inputs = []  # inputs from files
    first = inputs[0] if inputs else ""
    if command:
        p.script(
            " ".join(w.replace("{}", first) for w in command)
            + ("" if "{}" in " ".join(command) else " " + first),
            seg,
            pos,
            "parallel",
            depth,
        )
    for text in inputs[:_MAX_CANDIDATES] if not command else ():
        p.script(text, seg, pos, "parallel", depth)


_PARALLEL_VALUED = frozenset({"-j", "--jobs", "-S", "--sshlogin", "--joblog", "-a", "--arg-file", "--delay"})
_PARALLEL_VALUED |= frozenset({"--timeout", "-n", "--max-args", "--results", "--tmpdir", "-I", "--colsep"})
_GIT_COMMAND_KEY = re.compile(
    r"(alias\..+|core\.(pager|editor|sshcommand|fsmonitor|askpass|hookspath)|diff\.external"
    r"|diff\..+\.(command|textconv)|sequence\.editor|gpg\.program|gpg\..+\.program|pager\..+|filter\..+\.(clean|smudge|process)"
    r"|merge\..+\.driver|credential\.(.+\.)?helper|uploadpack\.packobjectshook)",
    re.IGNORECASE,
)


def _h_git(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    """Settings whose value is a command git runs: ``git -c alias.x=!cmd x``, ``core.pager``, ..."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-c" and i + 1 < len(args):
            key, _, value = args[i + 1].partition("=")
            pairs.append((key, value))
        elif arg == "config":
            rest = [a for a in args[i + 1 :] if not a.startswith("-")]
            pairs.extend([(rest[0], rest[1])] if len(rest) >= 2 else [])
            break
        elif not arg.startswith("-"):
            break
        i += 2 if arg in ("-c", "-C", "--git-dir", "--work-tree", "--namespace") else 1
    for key, value in pairs:
        needs_bang = key.lower().startswith(("alias.", "credential."))
        if _GIT_COMMAND_KEY.fullmatch(key) and (value.startswith("!") or not needs_bang):
            p.later(value.removeprefix("!"), seg, pos, depth, f"git {key}")


def _h_source(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    if not args:
        return
    body = p.ctx.procsub(args[0])
    if body is not None:
        p.script(p.output(body, pos), seg, list(args), "source <(..)", depth)
    elif args[0] in ("/dev/stdin", "/proc/self/fd/0", "/dev/fd/0") and seg.stdin is not None:
        p.script(p.stdin_text(seg, pos), seg, list(args), "source /dev/stdin", depth, True)


_FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})


def find_starts(args: Sequence[str]) -> list[str]:
    """The starting points of ``find ARGS``."""
    starts: list[str] = []
    for arg in args:
        if arg in ("-H", "-L", "-P") or (arg.startswith("-O") and len(arg) <= 3):
            continue
        if arg.startswith("-") or arg in ("(", "!", ")"):
            break
        starts.append(arg)
    return starts


def _h_find(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    """``find .. -exec CMD {} ;``: CMD runs on what find finds, so read it with the starting points."""
    starts = find_starts(args) or ["."]
    i = 0
    while i < len(args):
        if args[i] not in _FIND_EXEC:
            i += 1
            continue
        j = i + 1
        while j < len(args) and args[j] not in (";", "+"):
            j += 1
        words: list[str] = []
        for w in args[i + 1 : j]:
            words.extend(starts if w == "{}" else [w.replace("{}", starts[0])])
        if words:
            p.command(words, seg, pos, depth, (False, False), (), ("find",))
        i = j + 1


def _h_declare(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    nameref = any(a.startswith("-") and "n" in a[1:] for a in args)
    for arg in args:
        m = _ASSIGN_FIELD.fullmatch(arg)
        if m is not None:
            p.record(m.group(1), [m.group(2)])
            if nameref:
                p.record(m.group(2), [p.ctx.span(VALUE, "$" + m.group(2), False)])


def _h_read(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    """``read`` gives its variables what it reads: a here-string's words are known, a file's are not."""
    value = p.stdin_text(seg, pos) if seg.stdin is not None else p.ctx.span(EXTERNAL, "read", False)
    read = [value, *value.split()] if _S not in value else [value]
    array = [_AS.join(value.split())] if _S not in value else [value]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _READ_VALUED:
            i += 2
            continue
        if arg == "-a" and i + 1 < len(args):
            p.record(args[i + 1], array)
            i += 2
            continue
        if not arg.startswith("-"):
            p.record(arg, read)
        i += 1


def _h_mapfile(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    names = [a for a in args if _NAME.fullmatch(a)]
    p.record(names[-1] if names else "MAPFILE", [p.ctx.span(EXTERNAL, "mapfile", False)])


def _h_getopts(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    if len(args) > 1:
        p.record(args[1], [p.ctx.span(EXTERNAL, "getopts", False)])


def _h_printf(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    if len(args) > 2 and args[0] == "-v":
        printed = _printf_text(args[2:])
        p.record(args[1], [printed if printed is not None else p.ctx.span(VALUE, "printf -v", False)])


def _h_unset(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    for arg in args:
        if not arg.startswith("-"):
            p.record(arg, [""])


def _h_set(p: _Pass, args: Sequence[str], seg: _Seg, pos: Sequence[str], depth: int) -> None:
    if "--" in args:
        p.call(args[args.index("--") + 1 :])
    elif args and not args[0].startswith(("-", "+")):
        p.call(args)


_PROGRAMS: dict[str, Any] = {
    "su": _h_su,
    "runuser": _h_runuser,
    "sg": _h_sg,
    "eval": _h_eval,
    "script": _h_option_body("c", "--command", "script -c"),
    "flock": _h_option_body("c", "--command", "flock -c"),
    "nix-shell": _h_option_body("\0", "--run", "nix-shell --run"),
    "watch": _h_watch,
    "tmux": _h_tmux,
    "trap": _h_trap,
    "alias": _h_alias,
    "source": _h_source,
    ".": _h_source,
    "find": _h_find,
    "hash": _h_hash,
    "at": _h_at,
    "batch": _h_at,
    "parallel": _h_parallel,
    "git": _h_git,
    "read": _h_read,
    "mapfile": _h_mapfile,
    "readarray": _h_mapfile,
    "getopts": _h_getopts,
    "printf": _h_printf,
    "unset": _h_unset,
    "set": _h_set,
    **{name: _h_declare for name in _DECLARE},
}
#: Every program name the reader itself gives meaning to (a glob command name is matched against these too).
READER_NAMES = frozenset(_WRAPPERS) | SHELLS | frozenset(_PROGRAMS)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

_MAX_PASSES = 4


def analyse(cmd: str, env: Mapping[str, str] | None = None, names: Iterable[str] = ()) -> Analysis:
    """Read ``cmd`` as bash would run it under ``env`` (None: variable values unknown). ``names`` are extra
    program names a glob command name is matched against."""
    ctx = _Ctx(cmd, env, frozenset(names) | READER_NAMES)
    cmd = re.sub("[\ue000-\ue006]", "", cmd)
    top = _Lexer(ctx, cmd, 0).run()
    known = _Known({})
    for _ in range(_MAX_PASSES):
        p = _Pass(ctx, known)
        p.body(top, [])
        nxt = _merge(known, p)
        if nxt == known:
            break
        known = nxt
    return Analysis(
        tuple(p.invocations),
        " ".join(p.normalised).strip(),
        tuple(dict.fromkeys(p.unreadable)),
        tuple(ctx.hard),
    )


def _merge(known: _Known, p: _Pass) -> _Known:
    """What the next pass should know; equal to ``known`` when another pass would read the same."""
    assigned = {k: list(v) for k, v in known.assigned.items()}
    for name in p.referenced | {"IFS"}:
        if name in p.assigned:
            _add(assigned.setdefault(name, []), p.assigned[name])
    calls = list(known.calls)
    if p.positional_used:
        calls += [c for c in p.calls if c not in calls][: _MAX_FN_ARGS - len(calls)]
    aliases = {**known.aliases, **p.aliases}
    return _Known(assigned, frozenset(p.functions), tuple(calls), aliases)


def collect(cmd: str, env: Mapping[str, str] | None = None) -> tuple[list[Invocation], list[str]]:
    """All invocations in ``cmd`` (nested ones included) and the normalised words of the top level."""
    analysis = analyse(cmd, env)
    return list(analysis.invocations), analysis.normalised.split()
