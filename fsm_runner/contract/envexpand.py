"""Expansion of contract ``env`` maps (bootstrap and stages) against the running environment."""

from __future__ import annotations

import os
import re
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path

_REF = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand_value(text: str, lookup: Mapping[str, str]) -> str:
    """``$$`` -> ``$``; ``${VAR}``/``$VAR`` -> its value or ""; any other ``$`` stays as written."""

    def sub(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        return lookup.get(match.group(2) or match.group(3), "")

    return _REF.sub(sub, text)


def absolute_path_list(value: str, repo_root: Path) -> str:
    """Make each relative ``:``-separated entry absolute against ``repo_root``; empty entries are dropped.

    An empty PATH entry means "the current directory", which changes with the stage workdir; dropping it keeps
    command lookup independent of where a stage runs.
    """
    root = str(Path(repo_root).resolve())
    parts = [
        p if os.path.isabs(p) else os.path.normpath(os.path.join(root, p)) for p in value.split(":") if p
    ]
    return ":".join(parts)


def expand_env(spec_env: Mapping[str, str], base_env: Mapping[str, str], repo_root: Path) -> dict[str, str]:
    """Expand ``spec_env`` in order, shell-like: a reference sees ``base_env`` updated with the entries
    expanded before it, so ``B: $A/x`` after ``A: ...`` uses the new A and ``PATH: bin:$PATH`` the old PATH.

    Returns only the spec's keys.
    """
    out: dict[str, str] = {}
    lookup = ChainMap(out, dict(base_env))
    for key, raw in spec_env.items():
        value = expand_value(str(raw), lookup)
        if key == "PATH":
            value = absolute_path_list(value, repo_root)
        out[key] = value
    return out
