"""Small helpers shared by the arith_bench scripts: paths, the runner's env (with defaults), JSON, HTTP.

Every script works when run by hand: each AIDER_* variable the runner sets has a default here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_COUNTS = {"smoke": 8, "full": 64}


class BenchError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


def cli(main: Callable[[], int]) -> None:
    """Run a script's main(): exit with its code, or print a BenchError and exit 2."""
    try:
        code = main()
    except BenchError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


def repo_path(path: str | Path) -> Path:
    """Resolve `path` against the repo root (the runner's cwd too, but scripts may be run from anywhere)."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def runtime_env_path() -> Path:
    return repo_path(os.environ.get("AIDER_RUNTIME_ENV_PATH") or ".aider_fsm/runtime_env.json")


def port_number(text: str) -> int:
    """A --port value; empty means 0 (so `--port "$AIDER_FSM_PORT"` also works by hand, with it unset)."""
    if not text:
        return 0
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port number, got {text!r}")
    return int(text)


def run_port() -> int:
    """AIDER_FSM_PORT: the TCP port the runner picked for this run, free when the run started.

    By hand (unset) it is 0: the server then lets the OS pick a free port, and the other scripts find the
    server through runtime_env.json instead.
    """
    raw = os.environ.get("AIDER_FSM_PORT", "")
    try:
        return port_number(raw)
    except argparse.ArgumentTypeError:
        raise BenchError(f"AIDER_FSM_PORT={raw!r}: expected a TCP port number") from None


def run_id() -> str:
    return os.environ.get("AIDER_FSM_RUN_ID") or "manual"


def eval_mode() -> str:
    mode = os.environ.get("AIDER_EVAL_MODE") or "smoke"
    if mode not in DEFAULT_COUNTS:
        raise BenchError(f"AIDER_EVAL_MODE={mode!r}: expected one of {sorted(DEFAULT_COUNTS)}")
    return mode


def sample_count() -> int:
    """AIDER_EVAL_LIMIT when given, else the mode's default (smoke 8, full 64)."""
    raw = os.environ.get("AIDER_EVAL_LIMIT") or ""
    if not raw.strip():
        return DEFAULT_COUNTS[eval_mode()]
    try:
        limit = int(raw)
    except ValueError:
        raise BenchError(f"AIDER_EVAL_LIMIT={raw!r}: expected a positive integer") from None
    if limit < 1:
        raise BenchError(f"AIDER_EVAL_LIMIT={raw!r}: expected a positive integer")
    return limit


def seed() -> int:
    raw = os.environ.get("ARITH_BENCH_SEED") or "7"
    try:
        return int(raw)
    except ValueError:
        raise BenchError(f"ARITH_BENCH_SEED={raw!r}: expected an integer") from None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def read_runtime_env() -> dict[str, Any]:
    """The connection facts deploy wrote; a clear error when deploy has not run."""
    path = runtime_env_path()
    if not path.is_file():
        raise BenchError(
            f"{path}: missing; start the server first (python3 server.py &) or run the deploy stage"
        )
    data = read_json(path)
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a JSON object")
    return data


def http_json(url: str, payload: Any = None, *, api_key: str = "", timeout: float = 10.0) -> Any:
    """GET (payload None) or POST JSON; returns the decoded body, raises RuntimeError on HTTP errors."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        raise RuntimeError(f"HTTP {exc.code} from {url}: {body}") from None


def chat(base_url: str, model: str, prompt: str, *, api_key: str = "", timeout: float = 10.0) -> str:
    """One OpenAI chat-completions call; returns the assistant's text."""
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "Reply with the answer only."},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0,
    }
    reply = http_json(base_url.rstrip("/") + "/chat/completions", body, api_key=api_key, timeout=timeout)
    return str(reply["choices"][0]["message"]["content"] or "")
