"""One declarative description per contract model, read by both the loader and the JSON Schema.

Each contract attribute of an attrs model carries ``metadata=meta(kind, doc, ...)``; the attribute name is the
YAML key, ``aliases`` are accepted spellings, and the attrs default is the contract default. The reader
(:mod:`fsm_runner.contract.reader`) turns YAML nodes into models from that metadata and
:mod:`fsm_runner.contract.schema` turns the same metadata into JSON Schema, so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import attrs

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The run's TCP port. The runner picks it per run, so a contract may read it but never set it: a value fixed
#: in a file every run shares would put two runs on one port.
PORT_ENV = "AIDER_FSM_PORT"
#: The runtime limits a caller may set for one run (process env or --env): a contract sets its own limits in
#: `security`, so a stage or bootstrap `env:` that names them is refused (the runner would not read it there).
LIMIT_ENVS = {
    "AIDER_FSM_MAX_CMD_SECONDS": "security.max_cmd_seconds",
    "AIDER_FSM_MAX_TOTAL_SECONDS": "security.max_total_seconds",
}
#: Largest time limit anywhere (7 days): beyond it a limit is a typo, and huge values overflow the clocks.
MAX_SECONDS = 7 * 24 * 3600
#: Most extra attempts of one command: more is a typo, and each attempt may take a full time limit.
MAX_RETRIES = 100
#: Default cap of one command output file (stdout or stderr of one attempt): 64 MiB, half head, half tail.
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
#: Smallest cap other than 0 (no cap): each half must hold the tail errors quote.
MIN_OUTPUT_BYTES = 4096
#: Most processes, tasks or CPUs a setting may ask for at once: more is a typo.
MAX_WORKERS = 1024
#: The JSON types a `required_keys` entry may demand of its metrics value.
METRIC_TYPES = ("number", "integer", "string", "boolean", "object", "array")
_META = "fsm_runner.contract"


@attrs.frozen
class FieldInfo:
    """How one YAML key is read: ``kind`` picks the converter and the schema fragment."""

    kind: str
    doc: str
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    model: Any = None
    missing: str = "missing required key"
    required: bool = False


def workers_problem(value: object) -> str | None:
    """Why ``value`` is not a number of cells at once (the file's, the command line's and the API's rule)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        return f"must be a whole number from 1 to {MAX_WORKERS}, got {value!r}"
    return None


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be a command, an argument or an environment value, or None when it can.

    A NUL byte ends a C string (no command line or environment can hold one) and a lone surrogate (from a
    ``\\ud800`` escape, or bytes that were not UTF-8) cannot be encoded at all: both would fail the run
    later, far from where they were written.
    """
    if "\x00" in value:
        return "contains a NUL byte (\\0), which no command line or environment can hold; remove it"
    surrogate = _SURROGATE.search(value)
    if surrogate is not None:
        return (
            f"contains {surrogate.group()!r}, a lone surrogate that is not valid Unicode text; write the "
            "character itself, in UTF-8"
        )
    return None


def meta(kind: str, doc: str, **extra: Any) -> dict[str, FieldInfo]:
    return {_META: FieldInfo(kind, doc, **extra)}


def contract_fields(cls: Any) -> Iterator[tuple[attrs.Attribute[Any], FieldInfo]]:
    for attr in attrs.fields(cls):
        info = attr.metadata.get(_META)
        if info is not None:
            yield attr, info


def to_str_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    """attrs converter: the string-or-list rule, so ``TestsSpec(cmds="make")`` means one command."""
    return (value,) if isinstance(value, str) else tuple(value)


def to_env(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(value).items()}


def metric_type_problem(kind: object, key: str) -> str | None:
    """Why ``kind`` (the type demanded of metrics key ``key``) is not one of :data:`METRIC_TYPES`, or None."""
    if isinstance(kind, str) and kind in METRIC_TYPES:
        return None
    close = difflib.get_close_matches(kind, METRIC_TYPES, n=1) if isinstance(kind, str) else []
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown type {kind!r} for {key}{hint}; the types are {', '.join(METRIC_TYPES)}"


def _check_type(instance: Any, _attribute: Any, value: str | None) -> None:
    problem = None if value is None else metric_type_problem(value, instance.name)
    if problem:
        raise ValueError(f"required_keys: {problem}")


@attrs.frozen
class RequiredKey:
    """One `required_keys` entry: a key the metrics object must have (a dotted key looks inside objects)
    and, when given, the JSON type of its value. Written `score` or `{score: number}`."""

    name: str
    type: str | None = attrs.field(default=None, validator=_check_type)

    def __str__(self) -> str:
        return self.name if self.type is None else f"{{{self.name}: {self.type}}}"


def to_required_keys(value: Any) -> tuple[RequiredKey, ...]:
    """attrs converter: a name, a ``{name: type}`` mapping, or a list of those (the string-or-list rule)."""
    if isinstance(value, (str, RequiredKey, Mapping)):
        value = (value,)
    keys: list[RequiredKey] = []
    for item in value:
        if isinstance(item, RequiredKey):
            keys.append(item)
        elif isinstance(item, Mapping):
            keys.extend(RequiredKey(str(name), kind) for name, kind in item.items())
        else:
            keys.append(RequiredKey(str(item)))
    return tuple(keys)
