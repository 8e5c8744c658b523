"""Read a contract file into YAML nodes that still know their line numbers.

Contract files are repo content, so reading them is defensive: a size cap, strict UTF-8, no aliases (a
billion-laughs document stops at its first ``*alias``), a nesting cap, and every PyYAML error turned into one
:class:`~fsm_runner.errors.ContractError` naming the file and the line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import attrs
import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fsm_runner.errors import ContractError

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
YAML_TAG = "tag:yaml.org,2002:"
MAP_TAG = YAML_TAG + "map"
SEQ_TAG = YAML_TAG + "seq"
MERGE_TAG = YAML_TAG + "merge"
_TAGS = {YAML_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp", "map", "seq", "merge")}


@attrs.frozen
class RawFile:
    """The bytes of a contract file and where they came from."""

    path: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class _Refused(Exception):
    def __init__(self, problem: str, node_line: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = node_line


def _line(event: yaml.Event) -> int:
    return 1 if event.start_mark is None else int(event.start_mark.line) + 1


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and caps nesting while composing (before any expansion happens)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                f"YAML aliases are not allowed (found *{event.anchor}); write the value out in full",
                _line(event),
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nesting is deeper than {MAX_DEPTH} levels", _line(event))
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and node.tag not in _TAGS:
            raise _Refused(f"YAML tag {short_tag(node.tag)} is not allowed here", _line(event))
        return node


def present(path: Path) -> bool:
    """Whether a contract file exists; a directory the runner may not look into is a ContractError."""
    try:
        return path.exists()
    except OSError as exc:
        raise ContractError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None


def read_file(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> RawFile:
    """Read at most ``max_bytes`` + 1 bytes (enough to see an oversized file); the caller checks existence."""
    shown = str(path)
    try:
        if path.is_dir():
            raise ContractError("is a directory, expected a YAML file", path=shown)
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ContractError(f"cannot read: {exc.strerror or exc}", path=shown) from exc
    return RawFile(shown, data)


#: YAML treats these as line breaks but editors show them inline: every later line number would be wrong.
_HIDDEN_BREAKS = {
    "\u0085": "next-line character",
    "\u2028": "line separator",
    "\u2029": "paragraph separator",
}


def compose(raw: RawFile, *, max_bytes: int = MAX_FILE_BYTES) -> MappingNode:
    """Parse ``raw`` into its root mapping node; raise ContractError for anything that is not one."""
    shown = raw.path
    if len(raw.data) > max_bytes:
        limit = (
            f"{max_bytes // (1024 * 1024)} MiB" if max_bytes % (1024 * 1024) == 0 else f"{max_bytes} bytes"
        )
        raise ContractError(f"file is larger than the {limit} limit for contract files", path=shown)
    try:
        text = raw.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.data[: exc.start].count(b"\n") + 1
        bad = raw.data[exc.start : exc.start + 1].hex()
        raise ContractError(
            f"file is not valid UTF-8 (byte 0x{bad}); save it as UTF-8", path=shown, line=line
        ) from exc
    for char, name in _HIDDEN_BREAKS.items():
        at = text.find(char)
        if at != -1:
            raise ContractError(
                f"{name} (U+{ord(char):04X}) found: YAML reads it as a line break, editors do not; remove it",
                path=shown,
                line=text.count("\n", 0, at) + 1,
            )
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
    except _Refused as exc:
        raise ContractError(exc.problem, path=shown, line=exc.line) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "unreadable YAML"
        if exc.problem and exc.context and not exc.context.startswith("while"):
            problem = f"{exc.context}, {exc.problem}"
        raise ContractError(
            f"invalid YAML: {problem}", path=shown, line=None if mark is None else mark.line + 1
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise ContractError(
            f"invalid YAML: control character U+{exc.character:04X} is not allowed", path=shown, line=line
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error above is marked or a ReaderError
        raise ContractError(f"invalid YAML: {exc}", path=shown) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null") and not node.value):
        raise ContractError("file is empty; expected a mapping that starts with `version: 1`", path=shown)
    if not isinstance(node, MappingNode):
        raise ContractError(
            f"expected a mapping at the top level, got {node_type(node)}",
            path=shown,
            line=line_of(node),
        )
    return node


def short_tag(tag: str) -> str:
    return "!!" + tag[len(YAML_TAG) :] if tag.startswith(YAML_TAG) else tag


def line_of(node: Node) -> int:
    return int(node.start_mark.line) + 1


def scalar_value(node: ScalarNode) -> Any:
    """The Python value of a scalar node, as SafeLoader would build it; ValueError for a bad scalar."""
    try:
        return SafeConstructor().construct_object(node)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"cannot read value: {problem}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"cannot read value {node.value!r}: {exc}") from None


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def node_type(node: Node) -> str:
    """A short type name for messages: str, int, float, bool, null, list, mapping, date..."""
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    try:
        value = scalar_value(node)  # type: ignore[arg-type]
    except ValueError:
        return str(node.tag).rsplit(":", 1)[-1]
    return value_type(value)


def value_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__
