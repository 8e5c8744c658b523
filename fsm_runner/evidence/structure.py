"""JSON in and out of attrs records, checked against the field annotations on the way in.

:func:`structure` knows exactly the forms the evidence records use (str, int, float, bool, optional,
tuple/list/dict of those, nested records, ``Any`` for free-form JSON) and builds one small converter per
type, once. A value of the wrong shape raises :class:`EvidenceError` naming where and the key path; unknown
keys are ignored, so a newer runner's files stay readable. :func:`unstructure` is the way back.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from fsm_runner.errors import EvidenceError

T = TypeVar("T")


#: Deeper JSON than any record the runner writes; refused before anything recurses into it.
MAX_DEPTH = 64


def structure(cls: type[T], data: Any, where: str) -> T:
    """Build ``cls`` from a JSON value, or raise :class:`EvidenceError` saying where and what is wrong."""
    try:
        convert = _converter(typing.cast(Any, cls))
        return typing.cast(T, convert(data, ""))
    except _Invalid as exc:
        key, problem = exc.args
        raise EvidenceError(f"{where}: {key + ': ' if key else ''}{problem}") from None


_JSON_SCALARS = (str, int, float, bool, type(None))


def _depth(value: Any) -> int:
    """How deeply a JSON value nests, measured without recursion (stops counting past the limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)) and level <= MAX_DEPTH + 1:
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _free(value: Any, key: str) -> Any:
    """Free-form JSON (phase outputs, metrics) is taken as it is, unless it nests deeper than any record."""
    if _depth(value) > MAX_DEPTH:
        raise _Invalid(key, f"nested deeper than {MAX_DEPTH} levels")
    return dict(value) if type(value) is dict else value


def unstructure(obj: Any) -> Any:
    """The JSON form of a record: attrs classes become objects, tuples lists, paths strings."""
    cls = type(obj)
    if cls in _JSON_SCALARS:
        return obj
    if cls is dict or isinstance(obj, Mapping):
        return {k: unstructure(v) for k, v in obj.items()}
    if cls in (list, tuple):
        return [unstructure(v) for v in obj]
    names = _field_names(cls)
    if names:
        return {name: unstructure(getattr(obj, name)) for name in names}
    return str(obj) if isinstance(obj, Path) else obj


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    """The fields an attrs class is written with (none for any other type); looked up once per class."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = (
            tuple(a.name for a in attrs.fields(cls) if a.init) if attrs.has(cls) else ()
        )
    return names


class _Invalid(Exception):
    """(key path, problem): turned into one :class:`EvidenceError` by :func:`structure`."""


Convert = typing.Callable[[Any, str], Any]
_NAMES = {str: "a string", int: "a whole number", bool: "true or false", float: "a number"}
#: Field types whose values are taken as they are once their type matches exactly (a float must still be
#: checked: JSON readers accept NaN and Infinity).
_SCALARS: dict[Any, type] = {str: str, int: int, bool: bool}
_ABSENT = object()


def _expected(key: str, what: str, value: Any) -> _Invalid:
    shown = repr(value)
    return _Invalid(key, f"expected {what}, got {shown if len(shown) <= 60 else shown[:57] + '...'}")


def _join(key: str, name: object) -> str:
    return f"{key}.{name}" if key else str(name)


@functools.cache
def _converter(tp: Any) -> Convert:  # noqa: C901 - one small closure per supported type form
    """A function that checks and converts a JSON value to ``tp``; built once per type, then reused."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return _free
    if origin in (typing.Union, types.UnionType):
        inner = _converter(next(o for o in typing.get_args(tp) if o is not type(None)))
        return lambda value, key: None if value is None else inner(value, key)
    if origin in (tuple, list):
        item = _converter(typing.get_args(tp)[0])
        make = tuple if origin is tuple else list

        def sequence(value: Any, key: str) -> Any:
            if not isinstance(value, list):
                raise _expected(key, "a list", value)
            return make(item(v, f"{key}[{i}]") for i, v in enumerate(value))

        return sequence
    if origin is dict:
        item_type = typing.get_args(tp)[1]
        item = _converter(item_type)
        plain = _plain(item_type)

        def mapping(value: Any, key: str) -> Any:
            if not isinstance(value, dict):
                raise _expected(key, "an object", value)
            if item_type is Any:
                return _free(value, key)
            if all(type(v) in plain for v in value.values()):
                return dict(value)
            return {k: item(v, _join(key, k)) for k, v in value.items()}

        return mapping
    if attrs.has(tp):
        return _record_converter(tp)
    if tp is Path:
        return lambda value, key: Path(_converter(str)(value, key))
    if tp is float:

        def number(value: Any, key: str) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise _expected(key, "a finite number", value)
            return float(value)

        return number

    def scalar(value: Any, key: str) -> Any:
        if type(value) is not tp:
            raise _expected(key, _NAMES.get(tp, str(tp)), value)
        return value

    return scalar


def _plain(tp: Any) -> tuple[type, ...]:
    """The value types a field takes as they are: its scalar type, and ``None`` when it is optional."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    if any(o not in _SCALARS and o is not type(None) for o in options):
        return (type(None),) if type(None) in options else ()
    return tuple(options)


def _record_converter(cls: type[Any]) -> Convert:
    hints = typing.get_type_hints(cls)
    fields = [
        (a.name, _plain(hints[a.name]), _converter(hints[a.name]), a.default is attrs.NOTHING)
        for a in attrs.fields(cls)
        if a.init
    ]

    def record(value: Any, key: str) -> Any:
        if not isinstance(value, dict):
            raise _expected(key, "an object", value)
        kwargs: dict[str, Any] = {}
        get = value.get
        for name, plain, convert, required in fields:
            item = get(name, _ABSENT)
            if type(item) in plain:  # the common case: a scalar of the right type, taken as it is
                kwargs[name] = item
            elif item is not _ABSENT:
                kwargs[name] = convert(item, _join(key, name))
            elif required:
                raise _Invalid(key, f"missing key {name!r}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:  # a validator's message is its first argument
            raise _Invalid(key, str(exc.args[0] if exc.args else exc)) from None

    return record
