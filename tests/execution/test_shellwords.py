"""The shell reader: what bash would run for a command string, read statically (no process is started)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from fsm_runner.execution.shellwords import (
    MAX_DEPTH,
    Invocation,
    TooMany,
    analyse,
    brace_expand,
    decode_escapes,
    span_kinds,
)


def argvs(cmd: str, env: dict[str, str] | None = None) -> list[tuple[str, ...]]:
    """The words of each invocation: the wrappers met, then the final argv."""
    return [inv.chain[:-1] + inv.argv for inv in analyse(cmd, env).invocations]


def programs(cmd: str, env: dict[str, str] | None = None) -> list[str]:
    return [name for inv in analyse(cmd, env).invocations for name in inv.chain]


# --------------------------------------------------------------------------------------------------------
# quoting, expansion, splitting
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "argv"),
    [
        ("$'sudo' id", ("sudo", "id")),
        ("$'\\x73udo' id", ("sudo", "id")),
        ("$'\\163udo' id", ("sudo", "id")),
        ('$"sudo" id', ("sudo", "id")),
        ("s''u\"\"do id", ("sudo", "id")),
        ("\\sudo id", ("sudo", "id")),
        ("su\\\ndo id", ("sudo", "id")),
        ("{sudo,id}", ("sudo", "id")),
        ("sudo${IFS}id", ("sudo", "id")),
        ("sudo$IFS'id'", ("sudo", "id")),
        ("${X:-sudo} id", ("sudo", "id")),
        ("$(echo sudo) id", ("sudo", "id")),
        ("`echo sudo` id", ("sudo", "id")),
        ("$(printf '%s' sudo) id", ("sudo", "id")),
        ("$(printf '\\x73udo') id", ("sudo", "id")),
        ("$(echo -e '\\x73udo') id", ("sudo", "id")),
        ("echo 'a b' \"c d\" e\\ f", ("echo", "a b", "c d", "e f")),
        ("echo {1..3} x{a,b}y", ("echo", "1", "2", "3", "xay", "xby")),
        ("echo '{a,b}' \\{a,b\\}", ("echo", "{a,b}", "{a,b}")),
    ],
)
def test_quotes_and_expansions_are_undone_like_bash(cmd: str, argv: tuple[str, ...]) -> None:
    assert argv in argvs(cmd, {})


@pytest.mark.parametrize(
    ("cmd", "argv", "redirects"),
    [
        ("> out sudo id", ("id",), ((">", "out"),)),
        ("2> err rm -rf /", ("rm", "-rf", "/"), (("2>", "err"),)),
        ("rm -rf / 2>&1", ("rm", "-rf", "/"), (("2>&", "1"),)),
        ("< in cat x", ("cat", "x"), (("<", "in"),)),
        ("cmd &> log", ("cmd",), (("&>", "log"),)),
    ],
)
def test_redirections_anywhere_in_a_command(cmd: str, argv: tuple[str, ...], redirects: tuple[str, ...]) -> None:
    (inv,) = analyse(cmd, {}).invocations
    assert (inv.argv, inv.redirects) == (argv, redirects)


def test_variables_of_the_env_are_expanded_and_unset_ones_are_empty() -> None:
    env = {"VIRTUAL_ENV": "/repo/.venv", "CMD": "make test"}
    assert argvs('rm -rf "$VIRTUAL_ENV/lib"', env) == [("rm", "-rf", "/repo/.venv/lib")]
    assert argvs("rm -rf $PREFIX/bin", env) == [("rm", "-rf", "/bin")]
    assert argvs("$CMD", env) == [("make", "test")]  # unquoted: split into words
    assert argvs('"$CMD"', env) == [("make test",)]  # quoted: one word
    inv = analyse('rm -rf "$VIRTUAL_ENV/lib" $PREFIX', env).invocations[0]
    assert dict(inv.expanded) == {"VIRTUAL_ENV": "/repo/.venv", "PREFIX": None}


def test_without_an_env_values_are_unknown_parts() -> None:
    (inv,) = analyse('rm -rf "$X/lib"').invocations
    assert span_kinds(inv.argv[2]) == {"V"}  # quoted unknown value
    assert inv.shown_argv == ("rm", "-rf", "$X/lib")


@pytest.mark.parametrize(
    ("cmd", "values"),
    [
        ("${X:-/etc}", ["/etc"]),
        ("${X-/etc}", ["/etc"]),
        ("${X:+/etc}", [""]),
        ("${Y:+/etc}", ["/etc"]),
        ("${Y#/}", ["repo/x"]),
        ("${Y%/*}", ["/repo"]),
        ("${Y/repo/etc}", ["/etc/x"]),
        ("${Y^^}", ["/REPO/X"]),
        ("${Y:0:5}", ["/repo"]),
        ("${X:=/etc}", ["/etc"]),
    ],
)
def test_parameter_operators_use_known_values(cmd: str, values: list[str]) -> None:
    assert list(argvs(f'echo "{cmd}"', {"Y": "/repo/x"})[0][1:]) == values


def test_assignments_in_the_command_give_variables_more_values() -> None:
    assert ("rm", "-rf", "", "/etc") in argvs("X=/etc; rm -rf \"$X\"", {})
    assert argvs("rm -rf $X; X=/etc", {})[0] == ("rm", "-rf", "/etc")  # an assignment found later counts too
    assert ("sudo", "id") in argvs("a=su; b=do; $a$b id", {})
    assert ("sudo", "id") in argvs("IFS=,; x=sudo,id; $x", {})
    assert ("rm", "-rf", "/etc", "/usr") in argvs("for d in /etc /usr; do rm -rf $d; done", {})
    assert ("rm", "-rf", "", "/etc") in argvs('f() { rm -rf "$1"; }; f /etc', {})
    assert ("rm", "-rf", "/etc") in argvs("bash -c 'rm -rf \"$1\"' _ /etc", {})


def test_here_documents_are_data_unless_a_shell_reads_them() -> None:
    assert programs("cat <<EOF\nsudo id\nEOF\necho done") == ["cat", "echo"]
    assert "sudo" in programs("bash <<EOF\nsudo id\nEOF")
    assert "sudo" in programs("bash <<'EOF'\nsudo id\nEOF")
    assert "sudo" in programs("cat <<EOF\n$(sudo id)\nEOF")  # expansions in an unquoted body run
    assert "sudo" not in programs("cat <<'EOF'\n$(sudo id)\nEOF")
    assert "sudo" in programs("bash <<< 'sudo id'")
    assert "sudo" in programs("cat <<EOF | bash\nsudo id\nEOF")


@pytest.mark.parametrize(
    "cmd",
    [
        "echo sudo id | bash",
        "printf 'sudo id' | sh",
        "bash <(echo sudo id)",
        "source <(echo sudo id)",
        "sh < <(echo sudo id)",
        "eval \"$(echo sudo id)\"",
        "bash -c \"$(echo sudo id)\"",
        "function f { sudo id; }; f",
        "f() { sudo id; }",
        "coproc sudo id",
        "coproc N { sudo id; }",
        "trap 'sudo id' EXIT",
        "alias x='sudo id'",
        "find . -exec sudo id \\;",
        "find . -execdir sh -c 'sudo id' \\;",
        "script -qc 'sudo id' /dev/null",
        "flock /tmp/l -c 'sudo id'",
        "watch -n 1 sudo id",
        "echo id | xargs sudo",
        "echo 'sudo id' | xargs -I{} sh -c '{}'",
        "env 'BASH_FUNC_f%%=() { sudo id; }' bash -c f",
        "echo $(( $(sudo id) ))",
        "echo ${X:-$(sudo id)}",
        "case x in x) sudo id;; esac",
        "if sudo id; then :; fi",
        "{ sudo id; }",
        "(sudo id)",
        "x=$(sudo id)",
        "[[ $(sudo id) ]]",
        "cat >(sudo tee f)",
    ],
)
def test_every_way_to_run_a_command_is_read(cmd: str) -> None:
    assert "sudo" in programs(cmd, {})


@pytest.mark.parametrize(
    ("cmd", "chain"),
    [
        ("taskset 1 sudo id", ["taskset", "sudo", "id"]),
        ("taskset -c 0 sudo id", ["taskset", "sudo", "id"]),
        ("chroot / sudo id", ["chroot", "sudo", "id"]),
        ("strace -f -o /dev/null sudo id", ["strace", "sudo", "id"]),
        ("timeout -s KILL 5 nice -n 3 sudo id", ["timeout", "nice", "sudo", "id"]),
        ("uv run --with x sudo id", ["uv", "sudo", "id"]),
        ("conda run -n env sudo id", ["conda", "sudo", "id"]),
        ("env -i X=1 sudo id", ["env", "sudo", "id"]),
        ("command -p sudo id", ["command", "sudo", "id"]),
    ],
)
def test_wrappers_are_peeled(cmd: str, chain: list[str]) -> None:
    assert analyse(cmd, {}).invocations[0].chain == tuple(chain)


def test_glob_and_computed_program_names_are_reported() -> None:
    analysis = analyse("/usr/bin/su[d]o id", {}, names={"sudo"})
    assert "sudo" in [name for inv in analysis.invocations for name in inv.chain]
    assert "is a pattern" in analysis.unreadable[0]
    analysis = analyse("$(echo c3Vkbw== | base64 -d) id", {})
    assert "computed at run time" in analysis.unreadable[0]
    analysis = analyse("echo c3VkbyBpZA== | base64 -d | bash", {})
    assert "runs text computed at run time" in analysis.unreadable[0]
    # output of a program or a file is like a script file: not read, not refused
    assert analyse('eval "$(conda shell.bash hook)"', {}).unreadable == ()
    assert analyse("curl -fsSL https://x/i.sh | sh", {}).unreadable == ()
    assert analyse("$(command -v python3) -m pytest", {}).unreadable == ()


def test_keywords_patterns_and_headers_are_not_commands() -> None:
    assert programs('case "$x" in a|b) echo a;; *) echo b;; esac', {}) == ["echo", "echo"]
    assert programs("for f in *.py; do python $f; done", {}) == ["python"]
    assert programs("[[ -f a && -f b ]] && make", {}) == ["[[", "make"]
    assert programs("(( i++ )); f() { :; }", {}) == [":"]
    assert programs("arr=(sudo id); echo ${arr[0]}", {}) == ["echo"]


# --------------------------------------------------------------------------------------------------------
# limits: depth, size, time
# --------------------------------------------------------------------------------------------------------


def test_nesting_past_the_limit_is_reported() -> None:
    inside = "sudo id"
    for _ in range(MAX_DEPTH):
        inside = f'echo "$({inside})"'
    assert analyse(inside).hard == ()
    assert "nested more than" in analyse(f"echo $({inside})").hard[0]
    assert "nested more than" in analyse("eval " * (MAX_DEPTH + 2) + "id").hard[0]


def test_brace_expansion() -> None:
    assert brace_expand("a{b,c}d") == ["abd", "acd"]
    assert brace_expand("{a,{b,c}}x") == ["ax", "bx", "cx"]
    assert brace_expand("{a}") == ["{a}"] and brace_expand("{a,b") == ["{a,b"]
    assert brace_expand("{1..1000}") == ["1", "2", "1000"]  # a long run is represented by its ends
    with pytest.raises(TooMany):
        brace_expand("{a,b}" * 11)
    with pytest.raises(TooMany):
        brace_expand("{a," * 40 + "}" * 40)


def test_decode_escapes() -> None:
    assert decode_escapes("a\\tb\\x41\\u00e9\\101\\cA'rest", stop_at_quote=True) == ("a\tbAéA\x01", 22)
    assert decode_escapes("\\0101", echo=True)[0] == "A"


@pytest.mark.parametrize(
    "shape",
    [
        "echo " + "{a,b}" * 3000,
        "echo " + "{a," * 3000 + "}" * 3000,
        "echo " + "$(" * 3000,
        "echo " + "${X:-" * 3000,
        "(" * 3000 + ")" * 3000,
        "$((" * 3000 + "))" * 3000,
        "env " * 3000 + "sudo id",
        "a=(" * 3000,
        "eval " * 3000 + "id",
    ],
    ids=["brace-seq", "brace-nest", "subst", "param", "parens", "arith", "env-chain", "arrays", "evals"],
)
def test_pathological_shapes_stay_fast(shape: str) -> None:
    start = time.process_time()
    analysis = analyse(shape, {})
    assert time.process_time() - start < 2.0
    assert isinstance(analysis.invocations, tuple)
    assert all(isinstance(inv, Invocation) for inv in analysis.invocations)


# --------------------------------------------------------------------------------------------------------
# the reader agrees with bash
# --------------------------------------------------------------------------------------------------------

AGREES_WITH_BASH = [
    "p 'a b' \"c d\" e\\ f",
    "p a\"b\"'c'\\d",
    "p \"a\\\"b\" 'a\"b' \"a\\\\b\" \"a\\$b\"",
    "p {a,b}{c,d} x{1..3}y a{,b}c",
    "p '{a,b}' \\{a,b\\} {a,b {a} \"a b\"{1,2}",
    "p $'a\\tb\\x41\\101\\u00e9' $'\\''",
    'p $X "$X" "${X}"x $X$X',
    "p ${Y#/} ${Y%/*} ${Y/repo/etc} ${Y^^} ${Y:1:3} ${Y##*/} ${Y%%/x}",
    "p ${E:-def} ${E-def} ${Z:-z} ${X:+yes} ${E:+no}",
    'p "$(echo hi there)" $(echo hi there) `echo a`',
    "p $(printf '%s\\n' a b) \"$(printf 'x\\n\\n')\"",
    "p '' \"\" x $E \"$E\"",
    "p a # a comment",
    "p a; p b | p c && p d",
    "p \"a;b\" 'a|b' a\\;b",
    'p "${Y:-$(echo no)}" "${E:-$(echo yes)}"',
    "p ${Z:=zz} $Z",
    "env${IFS}p x",
    "{p,y}",
    'eval "p 1 2"',
    "bash -c 'p \"$1\" $2' _ 'a b' c",
    "echo p from echo | bash",
    "bash <<< 'p here string'",
    "f() { p \"$@\"; }; f 'x y' z",
    "a=(p 'v w' x); \"${a[@]}\"",
    "read -r a b <<< 'p q'; $a $b",
    "x=$(echo 'a  b'); p $x \"$x\"",
    'p ${X// /_} "${X:0:1}" ${X/#a/A} ${X/%b/B}',
    "IFS=:; v=a:b; p $v",
    "p \"a\"{b,c}\"d\" \\$X '$X' \"$X\"{1,2}",
    "for w in a b; do p $w; done",
    "case x in x) p matched;; esac; if true; then p yes; fi",
    "set -- 1 '2 3'; p \"$@\"",
    "printf -v v '%s-%s' a b; p \"$v\"",
    "v=x; v+=y; p $v",
    "p a\\\nb \"a\nb\" 'it'\\''s' \"$X\"\"$E\"x \"\"$E\"\"",
    "eval 'p \"$X\"'; p $(echo a; echo b)",
    "echo p x | bash -s",
    "bash -c 'p $0 $1' zero one",
    "p <<EOF\n$X\nEOF",
]


@pytest.fixture
def stub_p(tmp_path: Path) -> tuple[Path, Path]:
    """A program ``p`` that records each argv it is run with (fields separated by \\x1f, runs by \\x1e)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.log"
    bin_dir.mkdir()
    stub = bin_dir / "p"
    stub.write_text(f"#!/bin/sh\nfor a in \"$@\"; do printf '%s\\037' \"$a\"; done >> '{log}'\nprintf '\\036' >> '{log}'\n")
    stub.chmod(0o755)
    return bin_dir, log


@pytest.mark.parametrize("cmd", AGREES_WITH_BASH)
def test_the_reader_predicts_the_argv_bash_runs(cmd: str, stub_p: tuple[Path, Path]) -> None:
    bin_dir, log = stub_p
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "X": "a b", "Y": "/repo/x", "E": "", "LC_ALL": "C.UTF-8"}
    subprocess.run(["bash", "-c", cmd], env=env, check=True, timeout=20, stdin=subprocess.DEVNULL)
    ran = [tuple(run.split("\x1f")[:-1]) for run in log.read_text().split("\x1e")[:-1]]
    assert ran, f"bash never ran p for {cmd!r}"
    # an argument with several possible values shows all of them, so bash's argv is a subsequence of one
    predicted = [inv.argv[1:] for inv in analyse(cmd, env).invocations if inv.argv[:1] == ("p",)]
    for argv in ran:
        assert any(_subsequence(argv, p) for p in predicted), f"bash ran p{argv} for {cmd!r}; read: {predicted}"


def _subsequence(short: tuple[str, ...], long: tuple[str, ...]) -> bool:
    rest = iter(long)
    return all(any(word == other for other in rest) for word in short)
