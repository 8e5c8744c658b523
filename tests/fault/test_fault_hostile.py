"""Hostile repository content: escaping paths, YAML bombs, huge or malformed files.

Each must end in a clear error (file, line, key, what is wrong) within bounded time and memory. Memory is
measured in a child process (peak resident set, ``VmHWM``, after the imports) for the large inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fsm_runner.contract import check_metrics, check_rollout, load_actions, load_bootstrap, load_pipeline
from fsm_runner.errors import ContractError

MB = 1024 * 1024

# -- escaping paths -------------------------------------------------------------------------------------

PIPELINE_FIELDS = {
    "tests.workdir": "tests:\n  cmds: 'true'\n  workdir: {v}\n",
    "auth.workdir": "auth:\n  cmds: 'true'\n  workdir: {v}\n",
    "deploy.workdir": "deploy:\n  setup_cmds: 'true'\n  workdir: {v}\n",
    "rollout.workdir": "rollout:\n  run_cmds: 'true'\n  workdir: {v}\n",
    "evaluation.workdir": "evaluation:\n  run_cmds: 'true'\n  workdir: {v}\n",
    "evaluation.metrics_path": "evaluation:\n  run_cmds: 'true'\n  metrics_path: {v}\n",
    "benchmark.workdir": "benchmark:\n  run_cmds: 'true'\n  workdir: {v}\n",
    "benchmark.metrics_path": "benchmark:\n  run_cmds: 'true'\n  metrics_path: {v}\n",
}
#: (value, words the error must contain)
ESCAPES = {
    "dotdot": ("../outside", "escapes the repository"),
    "dotdot-inside": ("sub/../../outside", "escapes the repository"),
    "absolute": ("/etc", "absolute path"),
    "symlink": ("link-out", "outside the repository through a symlink"),
    "under-symlink": ("link-out/deeper/file.json", "outside the repository through a symlink"),
    "symlink-chain": ("link-in/link-out-again", "outside the repository through a symlink"),
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / ".aider_fsm").mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link-out").symlink_to("../outside")
    (root / "link-in").symlink_to("sub")
    (root / "sub" / "link-out-again").symlink_to("../../outside")
    return root


def _contract_error(load: object, repo: Path) -> ContractError:
    with pytest.raises(ContractError) as caught:
        load(repo)  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize("escape", sorted(ESCAPES))
@pytest.mark.parametrize("key", sorted(PIPELINE_FIELDS))
def test_pipeline_path_fields_stay_inside_the_repo(repo: Path, key: str, escape: str) -> None:
    value, words = ESCAPES[escape]
    (repo / "pipeline.yml").write_text("version: 1\n" + PIPELINE_FIELDS[key].format(v=value))
    error = _contract_error(load_pipeline, repo)
    assert error.key == key and error.line == 4 and error.path == str(repo / "pipeline.yml")
    assert words in str(error) and repr(value) in str(error)


@pytest.mark.parametrize("escape", sorted(ESCAPES))
@pytest.mark.parametrize(
    "name, text, key, line",
    [
        ("bootstrap.yml", "version: 1\ncmds: 'true'\nworkdir: {v}\n", "workdir", 3),
        (
            "actions.yml",
            "version: 1\nactions:\n  - id: a\n    kind: write_file\n    path: {v}\n    content: x\n",
            "actions[0].path",
            5,
        ),
    ],
)
def test_bootstrap_and_actions_paths_stay_inside_the_repo(
    repo: Path, escape: str, name: str, text: str, key: str, line: int
) -> None:
    value, words = ESCAPES[escape]
    (repo / ".aider_fsm" / name).write_text(text.format(v=value))
    error = _contract_error(load_bootstrap if name == "bootstrap.yml" else load_actions, repo)
    assert (error.key, error.line) == (key, line)
    assert error.path == str(repo / ".aider_fsm" / name) and words in str(error)


def test_cli_run_with_an_escaping_workdir_is_one_error_line(repo: Path) -> None:
    (repo / "pipeline.yml").write_text(
        "version: 1\ntests:\n  cmds: touch ../outside/pwned\n  workdir: link-out\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "fsm_runner", "run", str(repo)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {repo / 'pipeline.yml'}:4: tests.workdir: ")
    assert not (repo.parent / "outside" / "pwned").exists()


# -- malformed YAML ---------------------------------------------------------------------------------------


def _alias_bomb(levels: int = 9) -> bytes:
    lines = ["version: 1", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(
    "data, line, words",
    [
        (_alias_bomb(), 3, "aliases are not allowed"),
        (b"version: 1\ntests:\n  cmds: ['echo \xff\xfe']\n", 3, "not valid UTF-8"),
        (b"version: 1\ntests:\n  cmds: 'true'\n  env: {A: \"\xc3\"}\n", 4, "not valid UTF-8"),
        (b"version: 1\nx: " + b"[" * 100_000, 2, "nesting is deeper"),
        (b"version: 1\ntests: !!python/object/apply:os.system ['true']\n", 2, "tag"),
        (b"version: 1\n<<: {tests: {cmds: 'true'}}\n", 2, "merge keys"),
        (b"\x00\x01\x02", 1, "control character"),
    ],
    ids=["alias-bomb", "non-utf8", "truncated-utf8", "deep-nesting", "python-tag", "merge-key", "binary"],
)
def test_malformed_yaml_is_a_located_contract_error(repo: Path, data: bytes, line: int, words: str) -> None:
    (repo / "pipeline.yml").write_bytes(data)
    start = time.monotonic()
    error = _contract_error(load_pipeline, repo)
    assert time.monotonic() - start < 2.0
    assert error.line == line and words in str(error), str(error)
    assert str(error).startswith(f"{repo / 'pipeline.yml'}:{line}: ")


# -- big inputs, with bounded memory ------------------------------------------------------------------------

MEASURE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from fsm_runner.contract import check_rollout, load_pipeline
    from fsm_runner.errors import ContractError

    def hwm_kb():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))

    kind, root = sys.argv[1], Path(sys.argv[2])
    before, start = hwm_kb(), time.perf_counter()
    if kind == "pipeline":
        try:
            load_pipeline(root)
            problems = ["accepted"]
        except ContractError as exc:
            problems = [str(exc)]
        count = 0
    else:
        check = check_rollout(root, require_samples=True)
        problems, count = list(check.problems), check.sample_count
    print(json.dumps({"growth_mb": (hwm_kb() - before) / 1024, "seconds": time.perf_counter() - start,
                      "problems": problems, "count": count}))
    """
)


def _measure(kind: str, root: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, kind, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _write_big(path: Path, head: bytes, filler: bytes, size: int, tail: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(head)
        block = filler * (MB // len(filler))
        written = len(head)
        while written < size:
            fh.write(block)
            written += len(block)
        fh.write(tail)


def test_a_50_mb_pipeline_is_refused_cheaply(repo: Path) -> None:
    _write_big(repo / "pipeline.yml", b"version: 1\ntests:\n  cmds:\n", b"    - echo hello\n", 50 * MB, b"")
    result = _measure("pipeline", repo)
    (problem,) = result["problems"]  # type: ignore[misc]
    assert "larger than the 1 MiB limit" in problem and str(repo / "pipeline.yml") in problem
    assert result["growth_mb"] < 50 and result["seconds"] < 2  # type: ignore[operator]


def test_a_100_mb_samples_line_is_reported_without_reading_it_whole(repo: Path) -> None:
    rollout = {"paths": {"samples_jsonl": ".aider_fsm/samples.jsonl"}}
    (repo / ".aider_fsm" / "rollout.json").write_text(json.dumps(rollout))
    good = json.dumps({"prompt": "p", "completion": "c", "reward": 1.0}).encode() + b"\n"
    _write_big(repo / ".aider_fsm" / "samples.jsonl", b'{"prompt": "', b"x", 100 * MB, b'"}\n' + good)
    result = _measure("samples", repo)
    assert result["problems"] == [".aider_fsm/samples.jsonl:1: line is longer than the 8 MiB limit"]
    assert result["count"] == 1  # the line after the huge one is still read
    assert result["growth_mb"] < 50 and result["seconds"] < 10  # type: ignore[operator]


# -- metrics files ------------------------------------------------------------------------------------------

METRICS = {
    "huge": (b'{"ok": true, "score": 1, "pad": "' + b"x" * (17 * MB) + b'"}', "larger than the 16 MiB limit"),
    "deeply-nested-array": (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    "deeply-nested-object": (b'{"a":' * 200_000 + b"1" + b"}" * 200_000, "nested too deeply"),
    "nan": (b'{"ok": true, "score": NaN}', "NaN is not valid JSON"),
    "infinity": (b'{"ok": true, "score": -Infinity}', "-Infinity is not valid JSON"),
    "not-an-object": (b'[{"ok": true, "score": 1}]', "expected a JSON object, got array"),
    "truncated": (b'{"ok": true, "sco', "invalid JSON at line 1 column"),
    "empty": (b"", "invalid JSON at line 1 column 1"),
    "latin-1": (b'{"ok": true, "score": 1, "name": "caf\xe9"}', "not valid UTF-8"),
    "huge-integer": (b'{"ok": true, "score": ' + b"9" * 5000 + b"}", "invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(METRICS))
def test_bad_metrics_files_give_one_clear_problem(tmp_path: Path, case: str) -> None:
    data, words = METRICS[case]
    path = tmp_path / "metrics.json"
    path.write_bytes(data)
    start = time.monotonic()
    check = check_metrics(path, ["ok", "score"])
    assert time.monotonic() - start < 2.0
    assert not check.ok and check.metrics is None
    assert len(check.problems) == 1 and words in check.problems[0], check.problems


@pytest.mark.parametrize("special", ["fifo", "directory", "dev-zero-symlink"])
def test_metrics_path_that_is_not_a_regular_file_does_not_block(tmp_path: Path, special: str) -> None:
    path = tmp_path / "metrics.json"
    if special == "fifo":
        os.mkfifo(path)  # opening a FIFO without a writer would block forever
    elif special == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")  # endless: reading it whole would exhaust memory
    check = check_metrics(path, ["ok"])
    assert not check.ok and check.problems == (f"not a regular file: {path}",)


@pytest.mark.parametrize("literal", ["1e400", "-1e400"])
def test_metrics_number_overflowing_to_infinity_is_rejected(tmp_path: Path, literal: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(f'{{"ok": true, "score": {literal}}}')
    check = check_metrics(path, ["ok", "score"])
    assert not check.ok and "finite" in " ".join(check.problems)


@pytest.mark.parametrize(
    "samples, words",
    [
        (b'{"prompt": "p", "completion": "c", "reward": 1e400}\n', "finite"),
        (b'{"prompt": "p", "completion": "c", "reward": NaN}\n', "NaN is not valid JSON"),
        (b'{"prompt": "p", "completion": "c", "reward": 1.0', "invalid JSON"),
        (b"\xff\xfe\n", "not valid UTF-8"),
        (b"[" * 100_000 + b"\n", "nested too deeply"),
    ],
    ids=["overflow", "nan", "truncated", "not-utf8", "deep"],
)
def test_bad_sample_lines_are_located(repo: Path, samples: bytes, words: str) -> None:
    (repo / ".aider_fsm" / "rollout.json").write_text('{"paths": {"samples_jsonl": "s.jsonl"}}')
    (repo / "s.jsonl").write_bytes(samples)
    check = check_rollout(repo, require_samples=True)
    assert not check.ok and check.problems[0].startswith("s.jsonl:1: ") and words in check.problems[0]
