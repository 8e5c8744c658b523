"""A line-grammar check of Mermaid ``stateDiagram-v2`` text, so generated diagrams are known to parse.

There is no Mermaid parser offline, so this follows Mermaid's state-diagram lexer for the statements
fsm-runner emits and the common ones around them; tests run it over every diagram fsm-runner produces.
"""

from __future__ import annotations

import re

_ID = r"[A-Za-z_][A-Za-z0-9_]*"
_NODE = rf"(?:\[\*\]|{_ID})"
_TRANSITION = re.compile(rf"(?P<src>{_NODE})\s*-->\s*(?P<dst>{_NODE})(?:\s*:(?P<text>.*))?\Z")
_DESCRIPTION = re.compile(rf"(?P<id>{_ID})\s*:(?P<text>.*)\Z")
_CLASSDEF = re.compile(r"classDef\s+(?P<name>\w+)\s+(?P<styles>\S.*)\Z")
_CLASS = re.compile(r"class\s+(?P<ids>\w+(?:\s*,\s*\w+)*)\s+(?P<name>\w+)\Z")
_NOTE = re.compile(rf"note\s+(?:left|right)\s+of\s+(?P<id>{_ID})\s*:(?P<text>.*)\Z")
_STATE_ALIAS = re.compile(rf'state\s+"(?P<text>[^"]*)"\s+as\s+(?P<id>{_ID})\Z')
_STATE_BLOCK = re.compile(rf"state\s+(?P<id>{_ID})\s*\{{\Z")
_STATE_DECL = re.compile(rf"state\s+(?P<id>{_ID})\Z")
_DIRECTION = re.compile(r"direction\s+(?:TB|BT|RL|LR)\Z")
_DIRECTION_ANYWHERE = re.compile(r"direction\s+(?:tb|bt|rl|lr)", re.IGNORECASE)
_STYLE = re.compile(r"[a-z-]+\s*:\s*[^,:;]+\Z")
_HEADERS = ("stateDiagram-v2", "stateDiagram")
#: Words Mermaid's state lexer reads as keywords, so they cannot name a state.
_KEYWORDS = frozenset(
    {"state", "note", "class", "classdef", "scale", "default", "direction", "hide", "style"}
)


def _text_problem(text: str, what: str) -> str | None:
    if not text.strip():
        return f"empty {what} after ':'"
    for char in (":", ";"):
        if char in text:
            return f"{what} contains {char!r}, which ends a Mermaid state label"
    return None


def check_mermaid(text: str) -> list[str]:
    """Problems with a Mermaid ``stateDiagram-v2`` (empty list: it parses), one ``line N: ...`` each.

    A line grammar for the statements fsm-runner emits and the common ones around them, written after
    Mermaid's state-diagram lexer (there is no Mermaid parser offline); anything else is reported.
    """
    problems: list[str] = []
    header_seen = False
    depth = 0
    states: set[str] = set()
    classdefs: set[str] = set()
    applied: list[tuple[int, str, tuple[str, ...]]] = []
    statements = 0
    blocks: list[str] = []
    #: state -> (line, composite) of the first composite block that named it
    placed: dict[str, tuple[int, str]] = {}
    bare_declaration: tuple[int, str] | None = None

    def use(number: int, *names: str) -> None:
        for name in names:
            if name == "[*]":
                continue
            if name.lower() in _KEYWORDS:
                problems.append(f"line {number}: {name!r} is a Mermaid keyword and cannot name a state")
            states.add(name)
            if not blocks:
                continue
            first = placed.setdefault(name, (number, blocks[-1]))
            if first[1] != blocks[-1]:  # Mermaid moves a state into the last composite that names it
                problems.append(
                    f"line {number}: {name!r} is named in composite {blocks[-1]!r} and in {first[1]!r} "
                    f"(line {first[0]}); Mermaid draws it in the last one, name it in one composite only"
                )

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("%%"):
            if line.startswith("%%{"):
                problems.append(f"line {number}: directives (%%{{...}}%%) are not checked, remove them")
            elif _DIRECTION_ANYWHERE.search(line):
                problems.append(
                    f"line {number}: Mermaid reads any line containing 'direction XX' as a direction"
                )
            continue
        if not header_seen:
            if line not in _HEADERS:
                problems.append(f"line {number}: expected the header 'stateDiagram-v2', got {line!r}")
                return problems
            header_seen = True
            continue
        if line in _HEADERS:
            problems.append(f"line {number}: a second diagram header")
            continue
        problem = _check_statement(number, line)
        if problem:
            problems.append(problem)
            continue
        if bare_declaration and _STATE_BLOCK.match(line):
            problems.append(
                f"line {bare_declaration[0]}: Mermaid reads 'state {bare_declaration[1]}' and the "
                f"'state ... {{' after it as one state name; write 'state \"{bare_declaration[1]}\" as "
                f"{bare_declaration[1]}'"
            )
        bare_declaration = None
        if (match := _STATE_DECL.match(line)) and blocks:
            problems.append(
                f"line {number}: a bare 'state {match['id']}' does not put it in composite {blocks[-1]!r}; "
                f"write 'state \"{match['id']}\" as {match['id']}'"
            )
        if match := _STATE_DECL.match(line):
            bare_declaration = (number, match["id"])
        statements += 1
        if _DIRECTION.match(line) or line == "hide empty description":
            continue
        if line == "}":
            depth -= 1
            if depth < 0:
                problems.append(f"line {number}: '}}' without a matching 'state X {{'")
                depth = 0
            else:
                blocks.pop()
        elif match := _STATE_BLOCK.match(line):
            depth += 1
            use(number, match["id"])
            blocks.append(match["id"])
        elif match := _CLASSDEF.match(line):
            classdefs.add(match["name"])
        elif match := _CLASS.match(line):
            applied.append((number, match["name"], tuple(i.strip() for i in match["ids"].split(","))))
        elif match := _TRANSITION.match(line):
            if match["src"] == "[*]" and match["dst"] == "[*]":
                problems.append(f"line {number}: '[*] --> [*]' connects nothing")
            use(number, match["src"], match["dst"])
        elif (
            (match := _NOTE.match(line))
            or (match := _STATE_ALIAS.match(line))
            or (match := _STATE_DECL.match(line))
            or (match := _DESCRIPTION.match(line))
        ):
            use(number, match["id"])
    if not header_seen:
        return [*problems, "line 1: the diagram is empty (expected the header 'stateDiagram-v2')"]
    if depth:
        problems.append(f"end of text: {depth} 'state X {{' block(s) not closed with '}}'")
    if not statements:
        problems.append("end of text: the diagram has no statements")
    for number, name, ids in applied:
        if name not in classdefs:
            problems.append(f"line {number}: class {name!r} is not defined by a classDef")
        for state in ids:
            if state not in states:
                problems.append(f"line {number}: class {name!r} applied to {state!r}, which is not a state")
    return problems


def _check_statement(number: int, line: str) -> str | None:
    """A problem with one statement line, or ``None`` when it is one of the known forms."""
    if _DIRECTION.match(line) or line in ("}", "hide empty description"):
        return None
    if _DIRECTION_ANYWHERE.search(line):
        return f"line {number}: Mermaid reads any line containing 'direction XX' as a direction: {line!r}"
    if match := _CLASSDEF.match(line):
        bad = [part for part in match["styles"].split(",") if not _STYLE.match(part.strip())]
        return f"line {number}: classDef style {bad[0].strip()!r} is not 'property:value'" if bad else None
    if line.startswith(("classDef", "class ")):
        if _CLASS.match(line):
            return None
        return f"line {number}: expected 'classDef NAME prop:value,...' or 'class ID[,ID...] NAME': {line!r}"
    for pattern, what in ((_TRANSITION, "transition label"), (_NOTE, "note"), (_DESCRIPTION, "description")):
        if match := pattern.match(line):
            text = match["text"]
            if text is None:
                return None
            problem = _text_problem(text, what)
            return f"line {number}: {problem}: {line!r}" if problem else None
    if _STATE_ALIAS.match(line) or _STATE_BLOCK.match(line) or _STATE_DECL.match(line):
        return None
    return f"line {number}: not a stateDiagram-v2 statement: {line!r}"
