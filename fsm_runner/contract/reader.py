"""Turn YAML nodes into contract models, collecting every problem with its file, line and key path."""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any

import attrs
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fsm_runner.contract.fields import (
    ENV_NAME,
    LIMIT_ENVS,
    MAX_RETRIES,
    MAX_SECONDS,
    MAX_WORKERS,
    METRIC_TYPES,
    MIN_OUTPUT_BYTES,
    PORT_ENV,
    FieldInfo,
    RequiredKey,
    contract_fields,
    metric_type_problem,
    text_problem,
)
from fsm_runner.contract.yamlload import (
    MAP_TAG,
    MERGE_TAG,
    SEQ_TAG,
    RawFile,
    compose,
    is_null,
    line_of,
    node_type,
    scalar_value,
)
from fsm_runner.errors import ContractError

MAX_ERRORS = 100


class _Bad(Exception):
    def __init__(self, node: Node, problem: str, key: str | None = None) -> None:
        super().__init__(problem)
        self.node, self.problem, self.key = node, problem, key


class _Skip(Exception):
    """A nested part already recorded its errors."""


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _quote_hint(node: Node) -> str:
    return " (quote it to make it a string)" if isinstance(node, ScalarNode) and node.style is None else ""


def _number_hint(value: Any, *, whole: bool = False) -> str:
    """YAML 1.1 reads `1e3` (no dot in the mantissa) as a string; say how to write the number (only as a
    whole number when ``whole``: a byte cap, a count, a number of workers)."""
    if not isinstance(value, str):
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    integer = f"{number:.0f}" if number.is_integer() and abs(number) < 1e16 else None
    if whole:
        return f" ({value!r} is text to YAML; write {integer})" if integer else ""
    return f" ({value!r} is text to YAML; write {integer or repr(number)} or {float(number)!r})"


def parse_model(cls: Any, raw: RawFile, repo_root: Path) -> tuple[Any, list[ContractError]]:
    """(model, []) when ``raw`` is a valid ``cls`` document, else (None, every problem found)."""
    try:
        node = compose(raw)
    except ContractError as exc:
        return None, [exc]
    reader = Reader(raw.path, repo_root)
    model = reader.read(cls, node)
    if model is not None:
        return model, []
    errors = sorted(reader.errors, key=lambda e: e.line or 0)
    if reader.found > len(errors):
        errors.append(ContractError(f"{reader.found - len(errors)} more problems not shown", path=raw.path))
    return None, errors


class Reader:
    """Builds models from YAML nodes and collects every problem instead of stopping at the first."""

    def __init__(self, path: str, repo_root: Path) -> None:
        self.path = path
        self.root = repo_root
        self.errors: list[ContractError] = []
        self.found = 0  # every problem, including those beyond MAX_ERRORS that are not kept

    def error(self, node: Node | None, key: str | None, problem: str) -> None:
        self.found += 1
        if len(self.errors) >= MAX_ERRORS:
            return
        line = None if node is None else line_of(node)
        self.errors.append(ContractError(problem, path=self.path, line=line, key=key or None))

    def read(self, cls: Any, node: MappingNode, prefix: str = "") -> Any:
        """The model, or None when anything was wrong (the problems are in ``self.errors``)."""
        try:
            return self._model(cls, node, prefix)
        except _Bad as bad:
            self.error(bad.node, bad.key or prefix, bad.problem)
        except _Skip:
            pass
        return None

    def _pairs(self, node: MappingNode, prefix: str, valid: list[str]) -> dict[str, tuple[Node, Node]]:
        pairs: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            try:
                key = scalar_value(knode) if isinstance(knode, ScalarNode) else None
            except ValueError:
                key = None
            if knode.tag == MERGE_TAG:
                self.error(knode, prefix, "YAML merge keys (<<) are not supported; write the keys out")
            elif not isinstance(key, str):
                self.error(knode, prefix, f"keys must be strings, got {node_type(knode)}")
            elif key in pairs:
                self.error(
                    knode, _join(prefix, key), f"duplicate key (first at line {line_of(pairs[key][0])})"
                )
            elif key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f", did you mean {close[0]}?" if close else f"; valid keys: {', '.join(valid)}"
                self.error(knode, _join(prefix, key), "unknown key" + hint)
            else:
                pairs[key] = (knode, vnode)
        return pairs

    def _model(self, cls: Any, node: Node, prefix: str) -> Any:
        if not isinstance(node, MappingNode) or node.tag != MAP_TAG:
            raise _Bad(node, f"expected a mapping, got {node_type(node)}")
        before = self.found
        fields = list(contract_fields(cls))
        valid = [name for attr, info in fields for name in (attr.name, *info.aliases)]
        pairs = self._pairs(node, prefix, valid)
        values: dict[str, Any] = {}
        for attr, info in fields:
            found = [name for name in (attr.name, *info.aliases) if name in pairs]
            if len(found) > 1:
                self.error(
                    pairs[found[1]][0],
                    _join(prefix, found[1]),
                    f"`{found[0]}` and `{found[1]}` are aliases of the same setting; keep only one",
                )
                continue
            required = info.required or attr.default is attrs.NOTHING
            if not found:
                if required:
                    self.error(node, _join(prefix, attr.name), info.missing)
                continue
            key = found[0]
            vnode = pairs[key][1]
            if is_null(vnode) and not required:
                continue  # `key:` with no value means "use the default"
            try:
                values[attr.name] = self._convert(info, vnode, _join(prefix, key))
            except _Bad as bad:
                self.error(bad.node, bad.key or _join(prefix, key), bad.problem)
            except _Skip:
                pass
        if self.found > before:
            raise _Skip
        try:
            return cls(**values)
        except (ValueError, TypeError) as exc:
            raise _Bad(node, str(exc)) from None

    def _scalar(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            return node  # callers type-check; a collection never passes a scalar check
        try:
            return scalar_value(node)
        except ValueError as exc:
            raise _Bad(node, str(exc)) from None

    def _convert(self, info: FieldInfo, node: Node, key: str) -> Any:
        kind = info.kind
        if kind == "section":
            return self._model(info.model, node, key)
        if kind == "sections":
            return self._sections(info, node, key)
        if kind in ("cmds", "strs", "regexes"):
            return self._strings(kind, node, key)
        if kind == "env":
            return self._env(node, key)
        if kind == "keys":
            return self._required_keys(node, key)
        value = self._scalar(node)
        got = node_type(node)
        if kind == "version":
            if type(value) is not int:
                raise _Bad(node, f"expected the integer 1, got {got}")
            if value != 1:
                raise _Bad(node, f"unsupported version {value}; this fsm-runner reads version 1 only")
            return value
        if kind == "bool":
            if type(value) is not bool:
                raise _Bad(node, f"expected true or false, got {got}")
            return value
        if kind in ("count", "seconds", "bytes", "workers", "cpus"):
            return _number(kind, node, value)
        if not isinstance(value, str):
            raise _Bad(node, f"expected a string, got {got}{_quote_hint(node)}")
        problem = text_problem(value)
        if problem:
            raise _Bad(node, problem)
        if kind == "enum" and value not in info.choices:
            close = difflib.get_close_matches(value, info.choices, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise _Bad(node, f"must be one of {', '.join(info.choices)}, got {value!r}{hint}")
        if kind == "relpath":
            problem = path_problem(value, self.root)
            if problem:
                raise _Bad(node, problem)
        if kind == "str" and not value.strip():
            raise _Bad(node, "must not be empty")
        return value

    def _strings(self, kind: str, node: Node, key: str) -> tuple[str, ...]:
        what = "a command" if kind == "cmds" else "a regex" if kind == "regexes" else "a string"
        if isinstance(node, SequenceNode) and node.tag == SEQ_TAG:
            items = [(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, ScalarNode):
            items = [(node, key)]
        else:
            raise _Bad(node, f"expected {what} or a list of them, got {node_type(node)}")
        out: list[str] = []
        bad = False
        for item, ikey in items:
            value = self._scalar(item)
            problem = None
            if not isinstance(value, str):
                shown = what if what == "a string" else f"{what} (a string)"
                problem = f"expected {shown}, got {node_type(item)}{_quote_hint(item)}"
                if isinstance(item, MappingNode):
                    problem += " (a command containing ': ' must be quoted)"
            elif not value.strip():
                problem = f"empty {what[2:]}"
            elif text_problem(value):
                problem = text_problem(value)
            elif kind == "strs" and item is node and "," in value:
                names = [part.strip() for part in value.split(",") if part.strip()]
                problem = (
                    f"{value!r} is one key whose name contains a comma; for a list of keys write "
                    f"`[{', '.join(names)}]`"
                )
            elif kind == "regexes":
                try:
                    re.compile(value)
                except re.error as exc:
                    problem = f"invalid regex {value!r}: {exc}"
            if problem:
                self.error(item, ikey, problem)
                bad = True
            else:
                out.append(value)
        if bad:
            raise _Skip
        return tuple(out)

    def _required_keys(self, node: Node, key: str) -> tuple[RequiredKey, ...]:
        """A key name, a one-key mapping ``{name: type}``, or a list of those."""
        if isinstance(node, SequenceNode) and node.tag == SEQ_TAG:
            items = [(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, ScalarNode) or (isinstance(node, MappingNode) and node.tag == MAP_TAG):
            items = [(node, key)]
        else:
            raise _Bad(
                node,
                f"expected a key name, a {{name: type}} mapping or a list of them, got {node_type(node)}",
            )
        out: list[RequiredKey] = []
        bad = False
        for item, ikey in items:
            try:
                out.append(self._required_key(item, single=item is node))
            except _Bad as problem:
                self.error(problem.node, ikey, problem.problem)
                bad = True
        if bad:
            raise _Skip
        return tuple(out)

    def _required_key(self, item: Node, *, single: bool) -> RequiredKey:
        types = ", ".join(METRIC_TYPES)
        if isinstance(item, MappingNode) and item.tag == MAP_TAG:
            if len(item.value) != 1 or item.value[0][0].tag == MERGE_TAG:
                raise _Bad(
                    item,
                    f"a typed key is a mapping of one key name to its type, like {{score: number}}; this "
                    f"one has {len(item.value)} keys: write one list entry per key",
                )
            knode, vnode = item.value[0]
            name = self._scalar(knode)
            if not isinstance(name, str) or not name.strip():
                raise _Bad(
                    knode, f"expected a key name (a string), got {node_type(knode)}{_quote_hint(knode)}"
                )
            kind = self._scalar(vnode)
            if not isinstance(kind, str):
                raise _Bad(vnode, f"expected the type of {name}, one of {types}, got {node_type(vnode)}")
            problem = metric_type_problem(kind, name)
            if problem:
                raise _Bad(vnode, problem)
            return RequiredKey(name, kind)
        value = self._scalar(item)
        if not isinstance(value, str):
            raise _Bad(
                item, f"expected a key name or {{name: type}}, got {node_type(item)}{_quote_hint(item)}"
            )
        if not value.strip():
            raise _Bad(item, "empty key name")
        if single and "," in value:
            names = [part.strip() for part in value.split(",") if part.strip()]
            raise _Bad(
                item,
                f"{value!r} is one key whose name contains a comma; for a list of keys write "
                f"`[{', '.join(names)}]`",
            )
        return RequiredKey(value)

    def _env(self, node: Node, key: str) -> dict[str, str]:
        if not isinstance(node, MappingNode) or node.tag != MAP_TAG:
            raise _Bad(node, f"expected a mapping of NAME: value, got {node_type(node)}")
        out: dict[str, str] = {}
        bad = False
        for knode, vnode in node.value:
            name = self._scalar(knode)
            problem, where = None, (knode, key)
            if not isinstance(name, str) or not ENV_NAME.match(name):
                problem = (
                    f"invalid variable name {getattr(knode, 'value', '?')!r} (use letters, digits and _)"
                )
            elif name in out:
                problem, where = "duplicate variable", (knode, f"{key}.{name}")
            elif name == PORT_ENV:
                problem = (
                    f"{PORT_ENV} is chosen by the runner (a free port per run); remove it here and read "
                    f"${PORT_ENV} in your commands (to pin a port for one run: --env {PORT_ENV}=N)"
                )
                where = (knode, f"{key}.{name}")
            elif name in LIMIT_ENVS:
                problem = (
                    f"{name} is not read from a contract's env; set {LIMIT_ENVS[name]} in pipeline.yml "
                    f"(or, for one run, export {name} or pass --env {name}=N)"
                )
                where = (knode, f"{key}.{name}")
            elif not isinstance(vnode, ScalarNode) or self._scalar(vnode) is None:
                problem = (
                    f"expected a string, number or bool, got {node_type(vnode)}; write '' for an empty value"
                )
                where = (vnode, f"{key}.{name}")
            elif text_problem(str(vnode.value)):
                problem, where = text_problem(str(vnode.value)), (vnode, f"{key}.{name}")
            if problem:
                self.error(where[0], where[1], problem)
                bad = True
            else:
                out[name] = str(vnode.value)  # the text as written: `1.10` stays "1.10", `true` stays "true"
        if bad:
            raise _Skip
        return out

    def _sections(self, info: FieldInfo, node: Node, key: str) -> tuple[Any, ...]:
        if not isinstance(node, SequenceNode) or node.tag != SEQ_TAG:
            raise _Bad(node, f"expected a list, got {node_type(node)}")
        out = [self.read(info.model, item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        if any(item is None for item in out):
            raise _Skip
        return tuple(out)


def _number(kind: str, node: Node, value: Any) -> Any:
    """A `count` (whole, 0..MAX_RETRIES), a `bytes` cap (0 or at least MIN_OUTPUT_BYTES), a `seconds` value
    (positive, at most MAX_SECONDS), a number of `workers` (whole, 1..MAX_WORKERS) or of `cpus` (positive,
    at most MAX_WORKERS)."""
    got = node_type(node)
    if kind == "workers":
        if type(value) is not int:
            raise _Bad(node, f"expected a whole number, got {got}{_number_hint(value, whole=True)}")
        if not 1 <= value <= MAX_WORKERS:
            raise _Bad(node, f"must be between 1 and {MAX_WORKERS}, got {value}")
        return value
    if kind == "cpus":
        if type(value) not in (int, float) or not (math.isfinite(value) and 0 < value <= MAX_WORKERS):
            raise _Bad(node, f"expected a positive number of CPUs (at most {MAX_WORKERS}), got {value!r}")
        return float(value)
    if kind == "count":
        if type(value) is not int:
            raise _Bad(node, f"expected a whole number, got {got}{_number_hint(value, whole=True)}")
        if value < 0:
            raise _Bad(node, f"must be 0 or more, got {value}")
        if value > MAX_RETRIES:
            raise _Bad(node, f"must be at most {MAX_RETRIES}, got {value}")
        return value
    if kind == "bytes":
        if type(value) is not int:
            raise _Bad(node, f"expected a whole number of bytes, got {got}{_number_hint(value, whole=True)}")
        if value != 0 and value < MIN_OUTPUT_BYTES:
            raise _Bad(node, f"must be 0 (no cap) or at least {MIN_OUTPUT_BYTES} bytes, got {value}")
        return value
    if type(value) not in (int, float):
        raise _Bad(node, f"expected a number of seconds, got {got}{_number_hint(value)}")
    if not (math.isfinite(value) and value > 0):
        raise _Bad(node, f"must be a positive number of seconds, got {value}")
    if value > MAX_SECONDS:
        raise _Bad(node, f"must be at most {MAX_SECONDS} seconds (7 days), got {value:g}")
    return float(value)


def path_problem(value: str, repo_root: Path) -> str | None:
    """Why ``value`` is not a path inside ``repo_root`` (after resolving symlinks), or None when it is."""
    if not value.strip():
        return "must not be empty"
    if "\x00" in value:
        return "must not contain a NUL byte"
    if os.path.isabs(value):
        return f"must be relative to the repository root, got absolute path {value!r}"
    if os.path.normpath(value).split(os.sep)[0] == "..":
        return f"{value!r} escapes the repository through '..'"
    root = repo_root.resolve()
    try:
        resolved = (root / value).resolve()
    except (OSError, RuntimeError) as exc:
        return f"cannot resolve {value!r}: {exc}"
    if not resolved.is_relative_to(root):
        return f"{value!r} resolves outside the repository through a symlink ({resolved})"
    return None
