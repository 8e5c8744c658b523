"""Model and loader for ``.aider_fsm/actions.yml`` version 1: a one-shot list of file writes and commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from attrs import define, field, validators

from fsm_runner.contract.bootstrap import VERSION_DOC, VERSION_MISSING
from fsm_runner.contract.fields import meta
from fsm_runner.contract.reader import parse_model
from fsm_runner.contract.yamlload import RawFile, present, read_file
from fsm_runner.errors import ContractError
from fsm_runner.evidence.layout import ACTIONS_REL

ACTION_KINDS = ("write_file", "run_cmd")
_FOR_KIND = {"write_file": ("path", "content"), "run_cmd": ("cmd",)}


@define(frozen=True)
class Action:
    """One step; which of ``path``/``content``/``cmd`` it needs depends on ``kind``."""

    SCHEMA_RULES: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        {
            "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": {
                "required": list(names),
                "properties": {n: {"type": "null"} for k, ns in _FOR_KIND.items() if k != kind for n in ns},
            },
        }
        for kind, names in _FOR_KIND.items()
    )

    id: str = field(metadata=meta("str", "Unique name of the action, used in evidence."))
    kind: str = field(
        validator=validators.in_(ACTION_KINDS),
        metadata=meta("enum", "`write_file` or `run_cmd`.", choices=ACTION_KINDS),
    )
    path: str | None = field(
        default=None, metadata=meta("relpath", "write_file: file to write, relative to the repo root.")
    )
    content: str | None = field(default=None, metadata=meta("text", "write_file: the file's full text."))
    cmd: str | None = field(default=None, metadata=meta("str", "run_cmd: the command to run."))
    timeout_seconds: float | None = field(
        default=None,
        validator=validators.optional(validators.gt(0)),
        metadata=meta("seconds", "run_cmd: timeout of the command."),
    )
    retries: int = field(
        default=0, validator=validators.ge(0), metadata=meta("count", "run_cmd: extra attempts on failure.")
    )
    risk_level: str | None = field(default=None, metadata=meta("str", "Free-form risk note (low, high...)."))
    rationale: str | None = field(default=None, metadata=meta("str", "Why the action is needed."))

    def __attrs_post_init__(self) -> None:
        needed = _FOR_KIND.get(self.kind, ())
        for name in needed:
            if getattr(self, name) is None:
                raise ValueError(f"action {self.id!r}: kind {self.kind} needs `{name}`")
        for other, names in _FOR_KIND.items():
            for name in names:
                if other != self.kind and name not in needed and getattr(self, name) is not None:
                    raise ValueError(f"action {self.id!r}: `{name}` is only for {other} actions")


def _unique_ids(_: object, __: object, actions: tuple[Action, ...]) -> None:
    seen: set[str] = set()
    for action in actions:
        if action.id in seen:
            raise ValueError(f"duplicate action id {action.id!r}; ids must be unique")
        seen.add(action.id)


@define(frozen=True)
class ActionsSpec:
    actions: tuple[Action, ...] = field(
        factory=tuple,
        converter=tuple,
        validator=_unique_ids,
        metadata=meta("sections", "Actions, executed in order.", model=Action),
    )
    path: str = ""
    version: int = field(
        default=1,
        validator=validators.in_((1,)),
        metadata=meta("version", VERSION_DOC, missing=VERSION_MISSING, required=True),
    )


def parse_actions(raw: RawFile, repo_root: Path) -> tuple[ActionsSpec | None, list[ContractError]]:
    spec, errors = parse_model(ActionsSpec, raw, repo_root)
    if spec is None:
        return None, errors
    return ActionsSpec(spec.actions, raw.path), []


def load_actions(repo_root: Path) -> ActionsSpec | None:
    """The pending actions, or None when the repo has no ``.aider_fsm/actions.yml``."""
    root = Path(repo_root).resolve()
    path = root / ACTIONS_REL
    if not present(path):
        return None
    spec, errors = parse_actions(read_file(path), root)
    if spec is None:
        raise errors[0]
    return spec
