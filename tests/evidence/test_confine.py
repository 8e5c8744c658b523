"""Files inside a tree, checked when they are used: symlinks inside are followed, symlinks out are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.confine import (
    ConfinementError,
    move_out,
    open_inside,
    require_inside,
    resolve_inside,
    write_inside,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """repo/ with sub/m.json, links inside (li -> sub, abs -> /abs/path/of/sub) and out (lo, absout, chain)."""
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    (repo / "sub").mkdir(parents=True)
    outside.mkdir()
    (repo / "sub" / "m.json").write_text("inside\n")
    (outside / "m.json").write_text("outside\n")
    (repo / "li").symlink_to("sub")
    (repo / "abs").symlink_to(repo / "sub")
    (repo / "lo").symlink_to("../outside")
    (repo / "absout").symlink_to(outside)
    (repo / "sub" / "up").symlink_to("../../outside")
    (repo / "loop").symlink_to("loop")
    return repo


def _read(root: Path, rel: str) -> str:
    fd = open_inside(root, rel)
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode()


@pytest.mark.parametrize("rel", ["sub/m.json", "li/m.json", "abs/m.json", "li/../sub/m.json", "./sub//m.json"])
def test_paths_that_stay_inside_are_read(tree: Path, rel: str) -> None:
    assert _read(tree, rel) == "inside\n"
    assert resolve_inside(tree, rel) == tree.resolve() / "sub" / "m.json"


@pytest.mark.parametrize(
    "rel, words",
    [
        ("lo/m.json", "the symbolic link lo -> ../outside leads outside"),
        ("absout/m.json", "leads outside"),
        ("sub/up/m.json", "the symbolic link sub/up -> ../../outside leads outside"),
        ("../outside/m.json", "climbs out via '..'"),
        ("sub/../../outside/m.json", "climbs out via '..'"),
        ("/etc/passwd", "an absolute path"),
        ("loop/x", "too many symbolic links"),
    ],
)
def test_paths_that_leave_are_refused_with_the_path_named(tree: Path, rel: str, words: str) -> None:
    with pytest.raises(ConfinementError) as caught:
        open_inside(tree, rel)
    assert str(caught.value).startswith(f"{rel}: ") and words in str(caught.value)
    assert isinstance(caught.value, EvidenceError)


def test_missing_files_are_file_not_found(tree: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_inside(tree, "sub/none.json")
    with pytest.raises(FileNotFoundError):
        open_inside(tree, "none/m.json")


def test_write_makes_directories_and_refuses_any_symlink(tree: Path, tmp_path: Path) -> None:
    write_inside(tree, "new/deeper/f.txt", b"x")
    assert (tree / "new" / "deeper" / "f.txt").read_bytes() == b"x"
    (tree / "sub" / "to-outside.txt").symlink_to(tmp_path / "outside" / "m.json")
    for rel, link in (("li/f.txt", "li"), ("lo/f.txt", "lo"), ("sub/to-outside.txt", "sub/to-outside.txt")):
        with pytest.raises(ConfinementError, match=f"{link} is a symbolic link"):
            write_inside(tree, rel, b"y")
    assert (tmp_path / "outside" / "m.json").read_text() == "outside\n"
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == ["m.json"]


def test_move_out_moves_a_file_and_refuses_links(tree: Path, tmp_path: Path) -> None:
    dest = tmp_path / "moved"
    with pytest.raises(ConfinementError, match="leads outside"):
        move_out(tree, "lo/m.json", dest)
    (tree / "sub" / "link.json").symlink_to("m.json")
    with pytest.raises(ConfinementError, match="sub/link.json is a symbolic link"):
        move_out(tree, "sub/link.json", dest)
    assert not dest.exists() and (tmp_path / "outside" / "m.json").exists()
    assert move_out(tree, "li/m.json", dest) and dest.read_text() == "inside\n"
    assert not (tree / "sub" / "m.json").exists()
    assert move_out(tree, "sub/m.json", dest) is False
    assert move_out(tree, "none/m.json", dest) is False


def test_require_inside(tree: Path, tmp_path: Path) -> None:
    assert require_inside(tree / "li", tree, "the dir", "fix it") == tree.resolve() / "sub"
    with pytest.raises(ConfinementError) as caught:
        require_inside(tree / "lo", tree, "the dir", "fix it")
    assert str(caught.value) == (
        f"the dir {tree / 'lo'} leads to {(tmp_path / 'outside').resolve()}, outside {tree.resolve()} "
        "(through a symbolic link); fix it"
    )
