"""Guardrails fail closed: entries nobody can read neither stop a repair nor hide the agent's edits, and an edit
the runner cannot undo stops the repair with a RepairError instead of staying silently.

The tests run as root, which reads and chmods anything. So each repair runs in a child process without the
capabilities that allow it (``setpriv``): file permissions then apply to it, and to its agent, as they do to
any user. "Another user's" directory is one owned by uid 65534.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.repair.conftest import MAIN, PIPELINE, RUN_ID

OTHER_UID = 65534
#: Without these, root is held to file permissions like any user (and cannot chmod what it does not own).
DROP = "--bounding-set=-dac_override,-dac_read_search,-fowner"

pytestmark = pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv to drop root's file rights"
)

#: One repair in the child: the agent is the script given, the result is printed as JSON.
CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from fsm_runner.errors import RepairError
    from fsm_runner.repair.agents import CommandAgent, RepairRequest
    from fsm_runner.repair.step import run_repair
    repo, script, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    request = RepairRequest(
        repo=repo, phase="tests", error_kind="command_failed", error_message="exit 1", evidence_paths=(),
        attempt=1, max_attempts=1, allowed_globs=(".aider_fsm/**",), run_id="r", prompt="fix it", work_dir=work,
    )
    try:
        reply, _ = run_repair(CommandAgent([sys.executable, script]), request)
        print(json.dumps({"ok": reply.ok, "summary": reply.summary, "error": None}))
    except RepairError as exc:
        print(json.dumps({"ok": False, "summary": "", "error": str(exc)}))
    """
)


def unprivileged(argv: list[str]) -> list[str]:
    return ["setpriv", DROP, *argv] if os.geteuid() == 0 else argv


def repair_as_a_user(tmp_path: Path, repo: Path, agent_body: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one repair with ``agent_body`` as the agent, without root's file rights; (result, provenance)."""
    script = tmp_path / "agent.py"
    script.write_text("import os, pathlib, sys\np = pathlib.Path\n" + textwrap.dedent(agent_body))
    work = repo / f".aider_fsm/artifacts/{RUN_ID}/repair_01"
    done = subprocess.run(
        unprivileged([sys.executable, "-c", CHILD, str(repo), str(script), str(work)]),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), json.loads((work / "provenance.json").read_text())


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("making a directory another user's needs root")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize(
    ("case", "agent"),
    [
        ("new dir", "p('evil').mkdir()\np('evil/cheat.py').write_text('ok = True')\nos.chmod('evil', 0)\n"),
        ("nested new dirs", "p('a/b').mkdir(parents=True)\np('a/b/x.py').write_text('x')\n"
                            "os.chmod('a/b', 0)\nos.chmod('a', 0)\n"),
        ("existing dir", "p('src/main.py').write_text('cheat')\nos.chmod('src', 0)\n"),
        ("the allowed area", "p('pipeline.yml').write_text('version: 1\\n')\nos.chmod('.aider_fsm', 0)\n"),
        ("a file", "p('README.md').write_text('cheat')\nos.chmod('README.md', 0)\n"),
    ],
)
def test_what_the_agent_makes_unreadable_is_opened_and_reverted(
    tmp_path: Path, repo: Path, case: str, agent: str
) -> None:
    modes = {p: mode(repo / p) for p in ("src", ".aider_fsm", "README.md")}
    result, prov = repair_as_a_user(tmp_path, repo, agent)
    assert result["error"] is None and result["ok"], result
    assert not (repo / "evil").exists() and not (repo / "a").exists()
    assert (repo / "src/main.py").read_bytes() == MAIN
    assert (repo / "pipeline.yml").read_bytes() == PIPELINE
    assert (repo / "README.md").read_bytes() == b"readme\n"
    assert {p: mode(repo / p) for p in modes} == modes
    assert prov["reverted"] and prov["unreverted"] == [] and prov["reverted"] == prov["changed"]
    if case != "a file":
        assert any("left it unreadable" in note for note in prov["notes"]), prov["notes"]


def test_an_unreadable_directory_of_another_user_does_not_stop_the_repair(tmp_path: Path, repo: Path) -> None:
    needs_root()
    pgdata = repo / "pgdata"
    pgdata.mkdir(mode=0o700)
    (pgdata / "PG_VERSION").write_text("16\n")
    os.chown(pgdata / "PG_VERSION", OTHER_UID, OTHER_UID)
    os.chown(pgdata, OTHER_UID, OTHER_UID)
    result, prov = repair_as_a_user(
        tmp_path, repo, "p('src/main.py').write_text('cheat')\np('.aider_fsm/fix.txt').write_text('fixed')\n"
    )
    assert result["error"] is None and result["ok"], result
    assert (repo / "src/main.py").read_bytes() == MAIN
    assert (repo / ".aider_fsm/fix.txt").read_text() == "fixed"
    assert "pgdata" in prov["unreadable"] and "Permission denied" in prov["unreadable"]["pgdata"]
    assert [c["path"] for c in prov["reverted"]] == ["src/main.py"] and prov["kept"] == [".aider_fsm/fix.txt"]
    assert mode(pgdata) == 0o700 and pgdata.stat().st_uid == OTHER_UID  # never touched


@pytest.mark.parametrize(
    ("agent", "named"),
    [
        # src/ handed to another user, read-only: the runner can see main.py but not put it back
        ("p('src/main.py').write_text('cheat')\nos.chown('src', 65534, 65534)\nos.chmod('src', 0o555)\n",
         "src/main.py (modified)"),
        # a directory of another user's the runner cannot open: nothing in it can be checked
        ("p('evil').mkdir()\np('evil/cheat.py').write_text('x')\nos.chmod('evil', 0)\n"
         "os.chown('evil', 65534, 65534)\n", "evil (added)"),
        # the repository root handed to another user: the runner cannot put the protected pipeline back
        ("p('pipeline.yml').write_text('version: 1\\n')\nos.chown('.', 65534, 65534)\nos.chmod('.', 0o555)\n",
         "pipeline.yml (modified)"),
    ],
)
def test_a_change_the_runner_cannot_undo_is_a_repair_error(
    tmp_path: Path, repo: Path, agent: str, named: str
) -> None:
    needs_root()
    result, prov = repair_as_a_user(tmp_path, repo, agent)
    assert result["error"] is not None, result
    assert "could not undo it" in result["error"] and named in result["error"]
    assert "provenance.json" in result["error"]
    assert [f"{c['path']} ({c['kind']})" for c in prov["unreverted"]] == [named]
    assert prov["notes"]


def test_a_tree_that_cannot_be_read_at_all_stops_before_the_agent(tmp_path: Path, repo: Path) -> None:
    os.chmod(repo, 0)
    try:
        script = tmp_path / "agent.py"
        script.write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
        done = subprocess.run(
            unprivileged([sys.executable, "-c", CHILD, str(repo), str(script), str(tmp_path / "work")]),
            capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        os.chmod(repo, 0o755)
    assert done.returncode == 0, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error.startswith(f"cannot look at {repo} before the repair agent runs (Permission denied)")
    assert "the agent was not started" in error and not (tmp_path / "ran").exists()
