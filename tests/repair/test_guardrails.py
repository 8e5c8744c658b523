from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from fsm_runner.errors import UsageError
from fsm_runner.repair.guardrails import FileChange, enforce_guardrails, match_glob, snapshot_repo


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        (".aider_fsm/fix.sh", ".aider_fsm/**", True),
        (".aider_fsm/a/b/c.txt", ".aider_fsm/**", True),
        (".aider_fsm", ".aider_fsm/**", False),
        (".aider_fsmx/fix.sh", ".aider_fsm/**", False),
        ("pipeline.yml", "pipeline.yml", True),
        ("sub/pipeline.yml", "pipeline.yml", False),
        ("sub/pipeline.yml", "**/pipeline.yml", True),
        ("pipeline.yml", "**/pipeline.yml", True),
        ("a.py", "*.py", True),
        ("src/a.py", "*.py", False),
        ("src/a.py", "src/*.py", True),
        ("src/pkg/a.py", "src/*.py", False),
        ("src/a/b", "src/**/b", True),
        ("src/b", "src/**/b", True),
        ("src/x/y/b", "src/**/b", True),
        ("src/x/y/c", "src/**/b", False),
        ("anything/at/all", "**", True),
        ("a1.txt", "a?.txt", True),
        ("a/.txt", "a?.txt", False),
        ("b.txt", "[ab].txt", True),
        ("c.txt", "[!ab].txt", True),
        ("a.txt", "[!ab].txt", False),
        ("src/a.py", "./src/*.py", True),
        ("a+b(1).txt", "a+b(1).txt", True),
    ],
)
def test_glob_matcher(path: str, pattern: str, expected: bool) -> None:
    assert match_glob(path, pattern) is expected


@pytest.mark.parametrize("pattern", ["", "  ", "/etc/**", "../outside/**", "a/../../b"])
def test_bad_globs_are_usage_errors(pattern: str) -> None:
    with pytest.raises(UsageError, match="glob"):
        match_glob("a", pattern)


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_snapshot_records_content_mode_links_and_skips_excluded(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "run.sh": b"#!/bin/sh\n",
            "src/a.py": b"x = 1\n",
            ".git/HEAD": b"ref\n",
            "pkg/__pycache__/a.pyc": b"\0",
            ".aider_fsm/artifacts/r1/run.json": b"{}",
            ".aider_fsm/bootstrap.yml": b"version: 1\n",
            "big.bin": b"z" * 100,
        },
    )
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "link").symlink_to("src/a.py")
    snap = snapshot_repo(tmp_path, max_file_bytes=50)
    assert set(snap) == {"run.sh", "src/a.py", ".aider_fsm/bootstrap.yml", "big.bin", "link"}
    assert snap["src/a.py"].content == b"x = 1\n"
    assert stat.S_IMODE(snap["run.sh"].mode) == 0o755
    assert stat.S_ISLNK(snap["link"].mode) and snap["link"].content == b"src/a.py"
    assert snap["big.bin"].content is None and len(snap["big.bin"].sha256) == 64
    assert {"src", ".aider_fsm"} <= snap.dirs


def test_snapshot_of_2000_files_is_fast(tmp_path: Path) -> None:
    _tree(tmp_path, {f"d{i % 40}/f{i}.txt": f"line {i}\n".encode() * 20 for i in range(2000)})
    start = time.process_time()
    snap = snapshot_repo(tmp_path)
    assert len(snap) == 2000
    assert time.process_time() - start < 1.5


def _kinds(changes: tuple[FileChange, ...]) -> dict[str, str]:
    return {c.path: c.kind for c in changes}


def test_enforce_reverts_outside_keeps_inside_restores_protected(tmp_path: Path) -> None:
    original = {
        "pipeline.yml": b"version: 1\ntests:\n  cmds: [pytest]\n",
        "src/main.py": b"print('hi')\n",
        "src/keep/gone.txt": b"deleted by agent\n",
        "tool.sh": b"#!/bin/sh\n",
        ".aider_fsm/fix.sh": b"old\n",
    }
    _tree(tmp_path, original)
    (tmp_path / "tool.sh").chmod(0o755)
    before = snapshot_repo(tmp_path)

    (tmp_path / "pipeline.yml").write_bytes(b"version: 1\n")
    (tmp_path / "src/main.py").write_bytes(b"hacked\n")
    (tmp_path / "src/keep/gone.txt").unlink()
    (tmp_path / "tool.sh").chmod(0o644)
    (tmp_path / "new/deep").mkdir(parents=True)
    (tmp_path / "new/deep/evil.py").write_bytes(b"evil\n")
    (tmp_path / ".aider_fsm/fix.sh").write_bytes(b"new\n")
    (tmp_path / ".aider_fsm/notes.md").write_bytes(b"notes\n")

    prov = enforce_guardrails(tmp_path, before)

    for rel, data in original.items():
        if rel != ".aider_fsm/fix.sh":
            assert (tmp_path / rel).read_bytes() == data, rel
    assert stat.S_IMODE((tmp_path / "tool.sh").stat().st_mode) == 0o755
    assert not (tmp_path / "new").exists()
    assert (tmp_path / ".aider_fsm/fix.sh").read_bytes() == b"new\n"
    assert (tmp_path / ".aider_fsm/notes.md").exists()
    assert _kinds(prov.changed) == {
        "pipeline.yml": "modified",
        "src/main.py": "modified",
        "src/keep/gone.txt": "deleted",
        "tool.sh": "modified",
        "new/deep/evil.py": "added",
        ".aider_fsm/fix.sh": "modified",
        ".aider_fsm/notes.md": "added",
    }
    assert set(_kinds(prov.reverted)) == {
        "pipeline.yml",
        "src/main.py",
        "src/keep/gone.txt",
        "tool.sh",
        "new/deep/evil.py",
    }
    assert [c.path for c in prov.kept] == [".aider_fsm/fix.sh", ".aider_fsm/notes.md"]
    assert prov.pipeline_restored
    record = {c["path"]: c for c in prov.to_json()["reverted"]}
    assert record["pipeline.yml"]["before_sha"] == before["pipeline.yml"].sha256
    assert record["new/deep/evil.py"]["before_sha"] is None


def test_protected_wins_over_allowed_and_added_protected_is_removed(tmp_path: Path) -> None:
    _tree(tmp_path, {"pipeline.yml": b"v1\n", "a.txt": b"a\n"})
    before = snapshot_repo(tmp_path)
    (tmp_path / "pipeline.yml").write_bytes(b"v2\n")
    (tmp_path / "a.txt").write_bytes(b"b\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/pipeline.yml").write_bytes(b"x\n")
    prov = enforce_guardrails(tmp_path, before, allowed_globs=("**",), protected=("**/pipeline.yml",))
    assert (tmp_path / "pipeline.yml").read_bytes() == b"v1\n"
    assert not (tmp_path / "sub").exists()
    assert (tmp_path / "a.txt").read_bytes() == b"b\n"
    assert prov.pipeline_restored
    assert [c.path for c in prov.kept] == ["a.txt"]


def test_file_replaced_by_directory_and_symlink_are_restored(tmp_path: Path) -> None:
    _tree(tmp_path, {"conf": b"conf\n", "src/x.py": b"x\n"})
    (tmp_path / "ln").symlink_to("conf")
    before = snapshot_repo(tmp_path)
    (tmp_path / "conf").unlink()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/inner").write_bytes(b"i\n")
    (tmp_path / "ln").unlink()
    (tmp_path / "ln").symlink_to("/etc/passwd")
    os.remove(tmp_path / "src/x.py")
    (tmp_path / "src").rmdir()
    (tmp_path / "src").symlink_to("/tmp")
    prov = enforce_guardrails(tmp_path, before)
    assert (tmp_path / "conf").read_bytes() == b"conf\n"
    assert os.readlink(tmp_path / "ln") == "conf"
    assert not (tmp_path / "src").is_symlink() and (tmp_path / "src/x.py").read_bytes() == b"x\n"
    assert not prov.notes or all("human-owned" in n for n in prov.notes)


def test_change_to_file_too_big_to_keep_is_reported_not_reverted(tmp_path: Path) -> None:
    _tree(tmp_path, {"data.bin": b"0" * 64})
    before = snapshot_repo(tmp_path, max_file_bytes=16)
    (tmp_path / "data.bin").write_bytes(b"1" * 64)
    prov = enforce_guardrails(tmp_path, before)
    assert prov.reverted == ()
    assert [c.path for c in prov.changed] == ["data.bin"]
    assert any("data.bin" in n and "not restorable" in n for n in prov.notes)


def test_a_lone_string_glob_is_one_pattern(tmp_path: Path) -> None:
    _tree(tmp_path, {"a/x": b"1\n", "b": b"2\n"})
    before = snapshot_repo(tmp_path)
    (tmp_path / "a/x").write_bytes(b"changed\n")
    (tmp_path / "b").write_bytes(b"changed\n")
    prov = enforce_guardrails(tmp_path, before, allowed_globs="a/**", protected="nothing")
    assert [c.path for c in prov.kept] == ["a/x"] and [c.path for c in prov.reverted] == ["b"]

