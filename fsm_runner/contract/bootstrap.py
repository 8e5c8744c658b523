"""Model and loader for ``.aider_fsm/bootstrap.yml`` version 1: preparing the environment of every stage."""

from __future__ import annotations

from pathlib import Path

from attrs import define, evolve, field, validators

from fsm_runner.contract.fields import meta, to_env, to_str_tuple
from fsm_runner.contract.reader import parse_model
from fsm_runner.contract.yamlload import RawFile, present, read_file
from fsm_runner.errors import ContractError
from fsm_runner.evidence.layout import BOOTSTRAP_REL

VERSION_DOC = "Format version; must be 1."
VERSION_MISSING = "missing; add `version: 1` at the top"


@define(frozen=True)
class BootstrapSpec:
    """Commands run once after clone; ``env`` is also applied to every later stage."""

    cmds: tuple[str, ...] = field(
        factory=tuple,
        converter=to_str_tuple,
        metadata=meta("cmds", "Setup commands, run in order.", aliases=("steps",)),
    )
    env: dict[str, str] = field(
        factory=dict,
        converter=to_env,
        metadata=meta(
            "env", "Variables for bootstrap and every later stage; `$VAR`/`${VAR}` expand, `$$` is `$`."
        ),
    )
    workdir: str | None = field(
        default=None, metadata=meta("relpath", "Directory the commands run in, relative to the repo root.")
    )
    timeout_seconds: float | None = field(
        default=None,
        validator=validators.optional(validators.gt(0)),
        metadata=meta("seconds", "Timeout of each command."),
    )
    retries: int = field(
        default=0, validator=validators.ge(0), metadata=meta("count", "Extra attempts per failing command.")
    )
    path: str = ""
    sha256: str = ""
    version: int = field(
        default=1,
        validator=validators.in_((1,)),
        metadata=meta("version", VERSION_DOC, missing=VERSION_MISSING, required=True),
    )


def parse_bootstrap(raw: RawFile, repo_root: Path) -> tuple[BootstrapSpec | None, list[ContractError]]:
    spec, errors = parse_model(BootstrapSpec, raw, repo_root)
    if spec is None:
        return None, errors
    return evolve(spec, path=raw.path, sha256=raw.sha256), []


def load_bootstrap(repo_root: Path) -> BootstrapSpec | None:
    """The repo's bootstrap spec, or None when it has no ``.aider_fsm/bootstrap.yml``."""
    root = Path(repo_root).resolve()
    path = root / BOOTSTRAP_REL
    if not present(path):
        return None
    spec, errors = parse_bootstrap(read_file(path), root)
    if spec is None:
        raise errors[0]
    return spec
