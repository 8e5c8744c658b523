"""JSON Schema (draft 2020-12) of the contract files, generated from the models' field metadata.

The loader reads the same metadata (see :mod:`fsm_runner.contract.fields`), so the schema is not a second
description that could drift; it is what ``fsm-runner schema`` prints for editors and CI linters.
"""

from __future__ import annotations

from typing import Any

import attrs

from fsm_runner.contract.actions import ActionsSpec
from fsm_runner.contract.bootstrap import BootstrapSpec
from fsm_runner.contract.fields import (
    ENV_NAME,
    MAX_RETRIES,
    MAX_SECONDS,
    MAX_WORKERS,
    METRIC_TYPES,
    MIN_OUTPUT_BYTES,
    PORT_ENV,
    FieldInfo,
    contract_fields,
)
from fsm_runner.contract.pipeline import PipelineSpec

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_NONBLANK = {"type": "string", "pattern": r"\S"}


def _one_or_many(item: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [item, {"type": "array", "items": item}]}


def _kind_schema(info: FieldInfo, defs: dict[str, Any]) -> dict[str, Any]:
    kind = info.kind
    if kind in ("section", "sections"):
        ref = {"$ref": f"#/$defs/{_define(info.model, defs)}"}
        return ref if kind == "section" else {"type": "array", "items": ref}
    simple: dict[str, dict[str, Any]] = {
        "version": {"const": 1},
        "str": dict(_NONBLANK),
        "text": {"type": "string"},
        "bool": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES},
        "seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS},
        "bytes": {"anyOf": [{"const": 0}, {"type": "integer", "minimum": MIN_OUTPUT_BYTES}]},
        "workers": {"type": "integer", "minimum": 1, "maximum": MAX_WORKERS},
        "cpus": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WORKERS},
        "relpath": {"type": "string", "pattern": r"\S", "not": {"pattern": r"^(/|\.\.(/|$))"}},
        "enum": {"enum": list(info.choices)},
        "cmds": _one_or_many(dict(_NONBLANK)),
        "strs": _one_or_many(dict(_NONBLANK)),
        "keys": _one_or_many(
            {
                "anyOf": [
                    dict(_NONBLANK),
                    {
                        "type": "object",
                        "minProperties": 1,
                        "maxProperties": 1,
                        "propertyNames": dict(_NONBLANK),
                        "additionalProperties": {"enum": list(METRIC_TYPES)},
                    },
                ]
            }
        ),
        "regexes": _one_or_many({**_NONBLANK, "format": "regex"}),
        "env": {
            "type": "object",
            "propertyNames": {
                "pattern": "^" + ENV_NAME.pattern.removesuffix(r"\Z") + "$",
                "not": {"const": PORT_ENV},
            },
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
    }
    return simple[kind]


def _default(attr: attrs.Attribute[Any]) -> Any:
    """The default as JSON, or None when there is none to show (a section defaults to its own defaults)."""
    default = attr.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()  # type: ignore[union-attr]
    if attrs.has(type(default)):
        return None
    return list(default) if isinstance(default, tuple) else default


def _define(cls: Any, defs: dict[str, Any]) -> str:
    name = str(cls.__name__)
    if name not in defs:
        defs[name] = {}  # placeholder first: a model may refer to itself
        defs[name] = model_schema(cls, defs)
    return name


def model_schema(cls: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """Schema of one model; nested models are added to ``defs``. Null means "use the default"."""
    props: dict[str, Any] = {}
    required: list[str] = []
    rules: list[dict[str, Any]] = []
    for attr, info in contract_fields(cls):
        frag: dict[str, Any] = {"description": info.doc, **_kind_schema(info, defs)}
        if info.required or attr.default is attrs.NOTHING:
            required.append(attr.name)
        else:
            frag = {"description": info.doc, "anyOf": [_strip(frag), {"type": "null"}]}
            default = _default(attr)
            if default is not None:
                frag["default"] = default
        props[attr.name] = frag
        for alias in info.aliases:
            props[alias] = {**frag, "description": f"Alias of `{attr.name}`."}
            rules.append({"not": {"required": [attr.name, alias]}})
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if cls.__doc__:
        schema["description"] = " ".join(cls.__doc__.split())
    if required:
        schema["required"] = required
    rules.extend(getattr(cls, "SCHEMA_RULES", ()))
    if rules:
        schema["allOf"] = rules
    return schema


def _strip(frag: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in frag.items() if k != "description"}


def document_schema(cls: Any, title: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    body = model_schema(cls, defs)
    return {"$schema": DRAFT, "title": title, **body, **({"$defs": defs} if defs else {})}


def pipeline_json_schema() -> dict[str, Any]:
    return document_schema(PipelineSpec, "fsm-runner pipeline.yml v1")


def bootstrap_json_schema() -> dict[str, Any]:
    return document_schema(BootstrapSpec, "fsm-runner .aider_fsm/bootstrap.yml v1")


def actions_json_schema() -> dict[str, Any]:
    return document_schema(ActionsSpec, "fsm-runner .aider_fsm/actions.yml v1")
