"""Named shapes used across the package, so signatures say what they take instead of ``Any``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

#: Anything :func:`os.fspath` accepts: a path given by a user.
StrPath: TypeAlias = str | os.PathLike[str]
#: A JSON object as :func:`json.loads` returns it.
JSONObject: TypeAlias = dict[str, Any]
#: Called after every transition with the journal record as JSON (secrets masked).
TransitionHook: TypeAlias = Callable[[JSONObject], None]


class EventLogger(Protocol):
    """The bound structlog logger a run writes ``events.jsonl`` through (``run_id``, ``phase`` bound)."""

    def bind(self, **values: Any) -> EventLogger: ...

    def info(self, event: str, **values: Any) -> Any: ...

    def warning(self, event: str, **values: Any) -> Any: ...

    def exception(self, event: str, **values: Any) -> Any: ...


__all__ = ["EventLogger", "JSONObject", "StrPath", "TransitionHook"]
