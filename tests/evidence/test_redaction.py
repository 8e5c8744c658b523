"""Secret detection, env redaction, masking of text, JSON-like values and files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.redaction import MASK, Redactor, is_secret_key


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("HF_TOKEN", True),
        ("GITHUB_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True),
        ("MYSQL_PASSWD", True),
        ("DB_PASS", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("BASIC_AUTH", True),
        ("OAUTH", True),
        ("apiKey", True),
        ("accessToken", True),
        ("openai-api-key", True),
        ("session.cookie", True),
        ("ssh_passphrase", True),
        ("GITHUB_PAT", True),
        ("APIKEY", True),
        ("KEYBOARD", False),
        ("GIT_AUTHOR_NAME", False),
        ("TOKENIZERS_PARALLELISM", False),
        ("MAX_TOKENS", False),
        ("maxNewTokens", False),
        ("KEYFILE_PATH", False),
        ("PATH", False),
        ("PWD", False),
        ("HOME", False),
        ("BYPASS_CACHE", False),
        ("AIDER_FSM_RUN_ID", False),
    ],
)
def test_is_secret_key(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret


def test_from_env_collects_secret_values_only() -> None:
    env = {
        "OPENAI_API_KEY": "sk-live-123456",
        "HF_TOKEN": "abc",  # shorter than min_len: masking "abc" everywhere would wreck logs
        "NO_AUTH": "true",  # flag-like
        "PATH": "/usr/bin",
        "GH_TOKEN": "ghp_zzzzzzzz",
    }
    redactor = Redactor.from_env(env)
    assert set(redactor.values) == {"sk-live-123456", "ghp_zzzzzzzz"}
    assert redactor.active
    assert Redactor.from_env(env, min_len=3).values.count("abc") == 1
    assert Redactor.from_env({}, extra=["extra-secret"]).values == ("extra-secret",)
    assert not Redactor().active


def test_mask_prefers_the_longest_secret() -> None:
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.mask("x abcdefgh y abcd z") == f"x {MASK} y {MASK} z"
    assert Redactor().mask("abcdefgh") == "abcdefgh"


def test_redact_env_hides_secret_keys_and_embedded_values() -> None:
    env = {"API_KEY": "k-123456", "DATABASE_URL": "postgres://u:k-123456@h/db", "PATH": "/bin"}
    redactor = Redactor.from_env(env)
    assert redactor.redact_env(env) == {
        "API_KEY": MASK,
        "DATABASE_URL": f"postgres://u:{MASK}@h/db",
        "PATH": "/bin",
    }


def test_scrub_recurses_and_keeps_sections_named_like_secrets() -> None:
    redactor = Redactor(["hunter2-secret"])
    doc = {
        "cmd": "curl -H 'Authorization: hunter2-secret'",
        "env": {"MY_TOKEN": "other-value", "PLAIN": "x hunter2-secret y"},
        "auth": {"steps": ["login --password hunter2-secret"], "interactive": False},
        "api_key": True,
        "argv": ("bash", "-c", "echo hunter2-secret"),
        "items": [{"password": "p"}, 3, None],
        "hunter2-secret": 1,
    }
    assert redactor.scrub(doc) == {
        "cmd": f"curl -H 'Authorization: {MASK}'",
        "env": {"MY_TOKEN": MASK, "PLAIN": f"x {MASK} y"},
        "auth": {"steps": [f"login --password {MASK}"], "interactive": False},
        "api_key": True,
        "argv": ("bash", "-c", f"echo {MASK}"),
        "items": [{"password": MASK}, 3, None],
        MASK: 1,
    }


def test_mask_file_masks_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    path.write_bytes(b"start s3cret-value middle s3cret-value\xff\xfe binary end\n")
    path.chmod(0o640)
    count = Redactor(["s3cret-value"]).mask_file(path)
    assert count == 2
    assert path.read_bytes() == b"start *** middle ***\xff\xfe binary end\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.log"]


def test_mask_file_without_hits_keeps_the_inode(tmp_path: Path) -> None:
    """A background process may still be writing: an untouched file must stay the same file."""
    path = tmp_path / "out.log"
    path.write_text("nothing to hide\n")
    inode = path.stat().st_ino
    assert Redactor(["s3cret-value"]).mask_file(path) == 0
    assert Redactor().mask_file(path) == 0
    assert path.stat().st_ino == inode
    assert path.read_text() == "nothing to hide\n"


@pytest.mark.parametrize("offset", [0, 1, 5, 6, 7, 11, 12, 13])
def test_mask_file_finds_secrets_across_chunk_boundaries(tmp_path: Path, offset: int) -> None:
    secret = b"SECRET-abcdef"
    data = b"." * (1 << 20) * 2
    pos = (1 << 20) - offset
    data = data[:pos] + secret + data[pos + len(secret) :]
    path = tmp_path / "big.out"
    path.write_bytes(data)
    assert Redactor([secret.decode()]).mask_file(path) == 1
    masked = path.read_bytes()
    assert secret not in masked
    assert masked == data.replace(secret, b"***")


@settings(max_examples=150, deadline=None)
@given(
    secrets=st.lists(st.text(alphabet="abc", min_size=1, max_size=6), min_size=1, max_size=3),
    content=st.text(alphabet="abcx", max_size=300),
    chunk=st.integers(min_value=1, max_value=17),
)
def test_mask_file_matches_in_memory_masking(
    tmp_path_factory: pytest.TempPathFactory, secrets: list[str], content: str, chunk: int
) -> None:
    redactor = Redactor(secrets)
    path = tmp_path_factory.mktemp("mask") / "f"
    path.write_text(content)
    redactor.mask_file(path, chunk_size=chunk)
    assert path.read_text() == redactor.mask(content)


def test_mask_file_missing_file_is_an_evidence_error(tmp_path: Path) -> None:
    with pytest.raises(EvidenceError, match="cannot mask secrets"):
        Redactor(["abcdef"]).mask_file(tmp_path / "missing")


def test_secret_values_from_the_process_env_are_never_flag_words() -> None:
    redactor = Redactor.from_env({**os.environ, "ENABLE_AUTH": "False", "X_TOKEN": "none"})
    assert "False" not in redactor.values and "none" not in redactor.values


def test_mask_file_leaves_symlinks_and_what_they_point_to(tmp_path: Path) -> None:
    redactor = Redactor(["hunter2-secret"])
    target = tmp_path / "elsewhere.txt"
    target.write_text("hunter2-secret\n")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    assert redactor.mask_file(link) == 0
    assert link.is_symlink() and target.read_text() == "hunter2-secret\n"


def test_mask_tree_masks_every_regular_file_below_but_skipped_ones(tmp_path: Path) -> None:
    redactor = Redactor(["hunter2-secret"])
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("top.txt", "a/one.log", "a/b/two.json", "kept.jsonl"):
        (tmp_path / rel).write_text("x hunter2-secret y\n")
    os.mkfifo(tmp_path / "a" / "fifo")  # opened non-blocking and skipped: it cannot hang the runner
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "s.txt").write_text("hunter2-secret\n")
    (tmp_path / "a" / "out").symlink_to(outside)
    assert redactor.mask_tree(tmp_path, skip=["kept.jsonl"]) == 3
    for rel in ("top.txt", "a/one.log", "a/b/two.json"):
        assert (tmp_path / rel).read_text() == f"x {MASK} y\n"
    assert (tmp_path / "kept.jsonl").read_text() == "x hunter2-secret y\n"
    assert (outside / "s.txt").read_text() == "hunter2-secret\n"
    assert Redactor().mask_tree(tmp_path) == 0


def test_mask_bytes_and_longest() -> None:
    redactor = Redactor(["hunter2-secret", "pässwört-1"])
    assert redactor.longest == len("hunter2-secret") and Redactor().longest == 0
    assert redactor.mask_bytes("a pässwört-1 b hunter2-secret".encode()) == f"a {MASK} b {MASK}".encode()
    assert Redactor().mask_bytes(b"hunter2-secret") == b"hunter2-secret"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: nothing is unreadable to it")
def test_mask_tree_masks_what_a_command_made_unreadable(tmp_path: Path) -> None:
    redactor = Redactor(["hunter2-secret"])
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "inner.txt").write_text("hunter2-secret\n")
    (tmp_path / "closed.txt").write_text("hunter2-secret\n")
    (tmp_path / "closed.txt").chmod(0)
    (tmp_path / "locked").chmod(0)
    assert redactor.mask_tree(tmp_path) == 2
    assert (tmp_path / "closed.txt").read_text() == f"{MASK}\n"
    assert (tmp_path / "locked" / "inner.txt").read_text() == f"{MASK}\n"
