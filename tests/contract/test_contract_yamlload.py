"""The defensive YAML layer: size, encoding, aliases, nesting, tags, syntax errors, each with its message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fsm_runner.contract import load_bootstrap, load_pipeline
from fsm_runner.contract.yamlload import MAX_FILE_BYTES
from fsm_runner.errors import ContractError


def message_for(root: Path, data: bytes) -> str:
    path = root / "pipeline.yml"
    path.write_bytes(data)
    with pytest.raises(ContractError) as info:
        load_pipeline(root)
    shown = str(path.resolve())
    assert str(info.value).startswith(shown)
    return str(info.value)[len(shown) :]


BILLION_LAUGHS = b"""version: 1
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""

CASES = [
    (b"", ": file is empty; expected a mapping that starts with `version: 1`"),
    (b"# only a comment\n\n", ": file is empty; expected a mapping that starts with `version: 1`"),
    (b"- a\n- b\n", ":1: expected a mapping at the top level, got list"),
    (b"just text\n", ":1: expected a mapping at the top level, got str"),
    (b"\n\n42\n", ":3: expected a mapping at the top level, got int"),
    (b"version: 1\ntests:\n  cmds: [a, b\n", ":4: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    (b"version: 1\n tests: x\n", ":2: invalid YAML: mapping values are not allowed here"),
    (b"version: 1\ntests: 'open\n", ":3: invalid YAML: found unexpected end of stream"),
    (
        b"version: 1\n---\nversion: 1\n",
        ":2: invalid YAML: expected a single document in the stream, but found another document",
    ),
    (b"version: 1\ntests:\n  cmds: [\xff]\n", ":3: file is not valid UTF-8 (byte 0xff); save it as UTF-8"),
    (b"version: 1\ntests:\n  cmds: \x07\n", ":3: invalid YAML: control character U+0007 is not allowed"),
    (
        b"version: 1\ntests: &t {cmds: a}\nrollout: *t\n",
        ":3: YAML aliases are not allowed (found *t); write the value out in full",
    ),
    (BILLION_LAUGHS, ":3: YAML aliases are not allowed (found *a); write the value out in full"),
    (b"version: 1\nx: " + b"[" * 100 + b"]" * 100 + b"\n", ":2: nesting is deeper than 64 levels"),
    (
        b"version: 1\ntests: !!python/object:os.system {}\n",
        ":2: YAML tag !!python/object:os.system is not allowed here",
    ),
    (b"version: 1\ntests: !!set {a}\n", ":2: YAML tag !!set is not allowed here"),
    (b"version: 1\ntests:\n  cmds: !shell ls\n", ":3: YAML tag !shell is not allowed here"),
    (b"version: 1\ntests:\n  cmds: !!binary aGk=\n", ":3: YAML tag !!binary is not allowed here"),
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_bad_yaml_has_an_exact_message(tmp_path: Path, data: bytes, expected: str) -> None:
    assert message_for(tmp_path, data) == expected


def test_billion_laughs_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    message_for(tmp_path, BILLION_LAUGHS)
    assert time.monotonic() - started < 0.5


def test_file_over_the_size_cap(tmp_path: Path) -> None:
    data = b"version: 1\n" + b"#" * MAX_FILE_BYTES
    assert message_for(tmp_path, data) == ": file is larger than the 1 MiB limit for contract files"


def test_file_just_under_the_cap_loads(tmp_path: Path) -> None:
    head = b"version: 1\n"
    (tmp_path / "pipeline.yml").write_bytes(head + b"#" * (MAX_FILE_BYTES - len(head) - 1) + b"\n")
    assert load_pipeline(tmp_path).version == 1


def test_anchor_without_alias_and_bom_are_fine(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yml").write_bytes(b"\xef\xbb\xbfversion: 1\ntests: &t {cmds: a}\n")
    spec = load_pipeline(tmp_path)
    assert spec.tests is not None and spec.tests.cmds == ("a",)


def test_a_directory_in_place_of_the_file(tmp_path: Path) -> None:
    (tmp_path / ".aider_fsm" / "bootstrap.yml").mkdir(parents=True)
    with pytest.raises(ContractError) as info:
        load_bootstrap(tmp_path)
    assert (
        str(info.value)
        == f"{tmp_path.resolve()}/.aider_fsm/bootstrap.yml: is a directory, expected a YAML file"
    )
