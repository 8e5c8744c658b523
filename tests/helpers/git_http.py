"""A git repository served over HTTP on 127.0.0.1 (git's "dumb" protocol: static files), so a test can use
a real ``http://user:token@host/...`` URL."""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "init.defaultBranch=main"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def commit_all(work: Path) -> None:
    """Make ``work`` a git repository with everything in it committed."""
    subprocess.run([*_GIT, "init", "-q"], cwd=work, check=True)
    subprocess.run([*_GIT, "add", "-A"], cwd=work, check=True)
    subprocess.run([*_GIT, "commit", "-qm", "target"], cwd=work, check=True)


@contextmanager
def served(work: Path, root: Path) -> Iterator[str]:
    """Serve a bare copy of the committed repository ``work`` from ``root``; yields ``http://127.0.0.1:PORT/
    repo.git`` (add credentials to taste: the server accepts any)."""
    bare = root / "repo.git"
    subprocess.run([*_GIT, "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "update-server-info"], cwd=bare, check=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/repo.git"
    finally:
        server.shutdown()
        server.server_close()
