"""Checks of stage outputs: metrics JSON and rollout.json with its samples JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.contract import check_metrics, check_rollout
from fsm_runner.contract.fields import RequiredKey
from fsm_runner.contract.outputs import MAX_LINE_BYTES, MAX_REPORTED_LINES


def metrics_file(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "metrics.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


TYPED: dict[str, tuple[list[Any], list[tuple[Any, str]]]] = {
    # type: (values that have it, [(value that does not, how the problem shows it)])
    "number": ([0.5, 3, -1e-9, 0], [("0.9", 'str "0.9"'), (True, "bool true"), ([1], "array [1]")]),
    "integer": ([3, 3.0, -2, 0], [(3.5, "float 3.5"), (False, "bool false"), ("3", 'str "3"')]),
    "string": (["x", ""], [(1, "int 1"), (True, "bool true"), ({"a": 1}, 'object {"a": 1}')]),
    "boolean": ([True, False], [(1, "int 1"), (0, "int 0"), ("true", 'str "true"')]),
    "object": ([{}, {"a": [1]}], [([], "array []"), ("{}", 'str "{}"')]),
    "array": ([[], [1, "a"]], [({}, "object {}"), ("[]", 'str "[]"'), (1.5, "float 1.5")]),
}


@pytest.mark.parametrize("kind", list(TYPED))
def test_a_typed_key_passes_with_a_value_of_its_type(tmp_path: Path, kind: str) -> None:
    for value in TYPED[kind][0]:
        path = metrics_file(tmp_path, json.dumps({"ok": True, "eval": {"v": value}}))
        check = check_metrics(path, ["ok", RequiredKey("eval.v", kind)])
        assert check.ok and check.problems == (), (kind, value)


@pytest.mark.parametrize(
    ("kind", "value", "shown"), [(kind, value, shown) for kind, (_, bad) in TYPED.items() for value, shown in bad]
)
def test_a_typed_key_with_a_value_of_another_type_fails(tmp_path: Path, kind: str, value: Any, shown: str) -> None:
    article = "an" if kind[0] in "aeiou" else "a"
    check = check_metrics(metrics_file(tmp_path, json.dumps({"v": value})), [RequiredKey("v", kind)])
    assert not check.ok and check.problems == (f"v: expected {article} {kind}, got {shown}",)


@pytest.mark.parametrize("kind", list(TYPED))
def test_a_typed_key_may_not_be_null_or_missing(tmp_path: Path, kind: str) -> None:
    article = "an" if kind[0] in "aeiou" else "a"
    check = check_metrics(metrics_file(tmp_path, '{"v": null}'), [RequiredKey("v", kind), RequiredKey("w", kind)])
    assert check.problems == ("missing required keys: w", f"v: expected {article} {kind}, got null")


def test_a_declared_type_of_score_replaces_the_number_rule(tmp_path: Path) -> None:
    path = metrics_file(tmp_path, '{"score": "A+"}')
    assert check_metrics(path, [RequiredKey("score", "string")]).ok
    assert check_metrics(path, ["score"]).problems == ('score: expected a number, got str "A+"',)


def test_valid_metrics(tmp_path: Path) -> None:
    path = metrics_file(tmp_path, json.dumps({"ok": True, "score": 0.5, "eval": {"n": 3}, "a.b": 1}))
    check = check_metrics(path, ["ok", "score", "eval.n", "a.b"])
    assert check.ok and check.problems == ()
    assert check.metrics is not None and check.metrics["score"] == 0.5


@pytest.mark.parametrize(
    ("content", "keys", "problems"),
    [
        ('{"score": 1}', ["ok", "score", "eval.score", "x"], ("missing required keys: ok, eval.score, x",)),
        ('{"ok": false}', ["ok"], ("ok must be true, got false",)),
        ('{"ok": 1}', ["ok"], ("ok must be true, got 1",)),
        ('{"ok": "true"}', ["ok"], ('ok must be true, got "true"',)),
        ('{"eval": 3}', ["eval.score"], ("missing required keys: eval.score",)),
        ('{"ok": false, "score": 0.5}', ["score"], ("ok must be true, got false",)),
        (
            '{"ok": false, "error": "model server unreachable", "message": "m"}',
            [],
            ('ok must be true, got false; the metrics file says (error): "model server unreachable"',),
        ),
        (
            '{"ok": false, "message": "3 of 9 tasks crashed"}',
            ["ok"],
            ('ok must be true, got false; the metrics file says (message): "3 of 9 tasks crashed"',),
        ),
        ('{"ok": true, "score": "0.9"}', ["ok", "score"], ('score: expected a number, got str "0.9"',)),
        ('{"ok": true, "score": null}', ["ok", "score"], ("score: expected a value, got null",)),
        ('{"score": true}', ["score"], ("score: expected a number, got bool true",)),
        ('{"eval": {"n": null}}', ["eval.n"], ("eval.n: expected a value, got null",)),
        ("[1, 2]", [], ("expected a JSON object, got array",)),
        ('"text"', [], ("expected a JSON object, got str",)),
        ('{"score": NaN}', ["score"], ("invalid JSON: NaN is not valid JSON",)),
        ('{"score": -Infinity}', ["score"], ("invalid JSON: -Infinity is not valid JSON",)),
        ('{"ok": true, "sco', ["ok"], ("invalid JSON at line 1 column 14: Unterminated string starting at",)),
        (
            '{\n  "ok": true,\n',
            ["ok"],
            ("invalid JSON at line 3 column 1: Expecting property name enclosed in double quotes",),
        ),
        ("", ["ok"], ("invalid JSON at line 1 column 1: Expecting value",)),
        pytest.param("[" * 100_000 + "]" * 100_000, [], ("invalid JSON: nested too deeply",), id="deep"),
    ],
)
def test_invalid_metrics(tmp_path: Path, content: str, keys: list[str], problems: tuple[str, ...]) -> None:
    check = check_metrics(metrics_file(tmp_path, content), keys)
    assert not check.ok
    assert check.problems == problems


def test_metrics_object_is_returned_even_when_keys_are_missing(tmp_path: Path) -> None:
    check = check_metrics(metrics_file(tmp_path, '{"score": 2}'), ["ok"])
    assert check.metrics == {"score": 2} and not check.ok


def test_missing_and_oversized_and_non_utf8_metrics(tmp_path: Path) -> None:
    missing = check_metrics(tmp_path / "nope.json", ["ok"])
    assert missing.problems == (f"file not found: {tmp_path / 'nope.json'}",)
    big = metrics_file(tmp_path, b'{"ok": true, "pad": "' + b"x" * 2000 + b'"}')
    assert check_metrics(big, ["ok"], max_bytes=1000).problems == (
        f"file is larger than the 1000 bytes limit: {big}",
    )
    assert check_metrics(big, ["ok"]).ok
    bad = metrics_file(tmp_path, b'{"ok": "\xff"}')
    assert check_metrics(bad, ["ok"]).problems == (f"not valid UTF-8 (at byte offset 8): {bad}",)
    assert check_metrics(tmp_path, []).problems == (f"not a regular file: {tmp_path}",)


def rollout_repo(
    tmp_path: Path, rollout: Any, samples: str | bytes | None, name: str = "samples.jsonl"
) -> Path:
    (tmp_path / ".aider_fsm").mkdir(exist_ok=True)
    (tmp_path / ".aider_fsm" / "rollout.json").write_text(json.dumps(rollout))
    if samples is not None:
        (tmp_path / name).write_bytes(samples.encode() if isinstance(samples, str) else samples)
    return tmp_path


def sample(**fields: Any) -> str:
    base: dict[str, Any] = {"prompt": "p", "completion": "c", "reward": 1.0}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


GOOD = {"paths": {"samples_jsonl": "samples.jsonl"}, "counts": {"samples": 2, "errors": 0}}


def test_valid_rollout_with_samples(tmp_path: Path) -> None:
    text = sample() + "\n\n   \n" + sample(reward=0, meta={"id": 1}) + "\n"
    check = check_rollout(rollout_repo(tmp_path, GOOD, text), require_samples=True)
    assert check.ok, check.problems
    assert check.sample_count == 2 and check.samples_path == (tmp_path / "samples.jsonl").resolve()
    assert check.rollout == GOOD


def test_absolute_samples_path_inside_the_repo(tmp_path: Path) -> None:
    rollout = {"paths": {"samples_jsonl": str(tmp_path.resolve() / "s.jsonl")}}
    check = check_rollout(
        rollout_repo(tmp_path, rollout, sample() + "\n", name="s.jsonl"), require_samples=True
    )
    assert check.ok and check.sample_count == 1


def test_without_require_samples_missing_rollout_is_ok(tmp_path: Path) -> None:
    check = check_rollout(tmp_path, require_samples=False)
    assert (check.ok, check.rollout, check.samples_path, check.sample_count) == (True, None, None, 0)
    required = check_rollout(tmp_path, require_samples=True)
    assert required.problems == (
        f".aider_fsm/rollout.json: file not found: {tmp_path.resolve()}/.aider_fsm/rollout.json",
    )


def test_without_require_samples_the_samples_file_is_not_needed(tmp_path: Path) -> None:
    check = check_rollout(rollout_repo(tmp_path, GOOD, None), require_samples=False)
    assert check.ok and check.sample_count == 0 and check.rollout == GOOD


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (sample(reward="1"), "samples.jsonl:1: reward: expected a number, got str"),
        (sample(reward=True), "samples.jsonl:1: reward: expected a number, got bool"),
        (sample(reward=None), "samples.jsonl:1: reward: expected a number, got null"),
        (
            '{"prompt": "p", "completion": "c", "reward": 1e999}',
            "samples.jsonl:1: invalid JSON: number 1e999 does not fit a float (non-finite values are not JSON)",
        ),
        (sample(prompt=3), "samples.jsonl:1: prompt: expected a string, got int"),
        (sample(completion=...), "samples.jsonl:1: completion: missing"),
        (sample(meta=[1]), "samples.jsonl:1: meta: expected an object, got array"),
        ("[1]", "samples.jsonl:1: expected a JSON object, got array"),
        (
            '{"prompt": "p",',
            "samples.jsonl:1: invalid JSON at column 16: Expecting property name enclosed in double quotes",
        ),
        (
            '{"prompt": "p", "completion": "c", "reward": NaN}',
            "samples.jsonl:1: invalid JSON: NaN is not valid JSON",
        ),
    ],
)
def test_invalid_sample_line_names_line_and_field(tmp_path: Path, lines: str, problem: str) -> None:
    text = sample() + "\n\n" + sample() + "\n" + lines + "\n"
    check = check_rollout(rollout_repo(tmp_path, GOOD, text), require_samples=True)
    assert not check.ok
    assert check.problems == (problem.replace(":1:", ":4:"),)
    assert check.sample_count == 2


def test_every_problem_of_a_line_is_listed(tmp_path: Path) -> None:
    check = check_rollout(rollout_repo(tmp_path, GOOD, '{"reward": "x"}\n' + sample()), require_samples=True)
    assert check.problems == (
        "samples.jsonl:1: prompt: missing",
        "samples.jsonl:1: completion: missing",
        "samples.jsonl:1: reward: expected a number, got str",
    )


def test_many_bad_lines_are_capped(tmp_path: Path) -> None:
    text = sample() + "\n" + "[]\n" * (MAX_REPORTED_LINES + 5)
    check = check_rollout(rollout_repo(tmp_path, GOOD, text), require_samples=True)
    assert len(check.problems) == MAX_REPORTED_LINES + 1
    assert check.problems[-1] == "samples.jsonl: 5 more invalid lines not shown"


@pytest.mark.parametrize(
    ("rollout", "samples", "problem"),
    [
        (
            GOOD,
            sample(completion="  ") + "\n" + sample(completion="") + "\n",
            "samples.jsonl: all 2 completions are blank",
        ),
        (GOOD, "\n\n", "samples.jsonl: no samples"),
        (GOOD, None, "samples.jsonl: samples file not found"),
        (
            {"counts": {}},
            None,
            ".aider_fsm/rollout.json: paths.samples_jsonl: missing; it must name the samples file",
        ),
        ({"paths": []}, None, ".aider_fsm/rollout.json: paths: expected an object, got array"),
        (
            {"paths": {"samples_jsonl": 5}},
            None,
            ".aider_fsm/rollout.json: paths.samples_jsonl: expected a non-empty string, got int",
        ),
        (
            {"paths": {"samples_jsonl": "../x.jsonl"}},
            None,
            ".aider_fsm/rollout.json: paths.samples_jsonl: '../x.jsonl' is outside the repository",
        ),
        (
            {"paths": {"samples_jsonl": "/etc/passwd"}},
            None,
            ".aider_fsm/rollout.json: paths.samples_jsonl: '/etc/passwd' is outside the repository",
        ),
        (
            {"paths": {"samples_jsonl": "samples.jsonl"}, "counts": {"errors": 2}},
            sample() + "\n" + sample() + "\n",
            ".aider_fsm/rollout.json: counts.errors (2) >= number of samples (2): the rollout mostly failed",
        ),
        (
            {"paths": {"samples_jsonl": "samples.jsonl"}, "counts": {"errors": "0"}},
            sample() + "\n",
            ".aider_fsm/rollout.json: counts.errors: expected a number, got str",
        ),
        (
            {**GOOD, "counts": [1]},
            sample() + "\n",
            ".aider_fsm/rollout.json: counts: expected an object, got array",
        ),
    ],
)
def test_invalid_rollouts(tmp_path: Path, rollout: Any, samples: str | None, problem: str) -> None:
    check = check_rollout(rollout_repo(tmp_path, rollout, samples), require_samples=True)
    assert not check.ok
    assert check.problems == (problem,)


def test_counts_are_checked_without_samples_too(tmp_path: Path) -> None:
    rollout = {"counts": {"samples": 3, "errors": 3}}
    check = check_rollout(rollout_repo(tmp_path, rollout, None), require_samples=False)
    assert check.problems == (
        ".aider_fsm/rollout.json: counts.errors (3) >= number of samples (3): the rollout mostly failed",
    )


def test_rollout_not_an_object(tmp_path: Path) -> None:
    check = check_rollout(rollout_repo(tmp_path, [1], None), require_samples=False)
    assert check.problems == (".aider_fsm/rollout.json: expected a JSON object, got array",)


def test_samples_symlink_out_of_the_repo_is_refused(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "outside.jsonl"
    repo.mkdir()
    outside.write_text(sample() + "\n")
    (repo / "samples.jsonl").symlink_to(outside)
    check = check_rollout(rollout_repo(repo, GOOD, None), require_samples=True)
    assert check.problems == (
        ".aider_fsm/rollout.json: paths.samples_jsonl: 'samples.jsonl' is outside the repository",
    )


def test_overlong_line_is_a_problem_and_reading_continues(tmp_path: Path) -> None:
    long_line = b'{"prompt": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
    data = sample().encode() + b"\n" + long_line + sample().encode() + b"\n"
    check = check_rollout(rollout_repo(tmp_path, GOOD, data), require_samples=True)
    assert check.problems == ("samples.jsonl:2: line is longer than the 8 MiB limit",)
    assert check.sample_count == 2


def test_line_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    head = b'{"prompt": "p", "completion": "c", "reward": 1, "pad": "'
    line = head + b"x" * (MAX_LINE_BYTES - len(head) - 2) + b'"}'
    assert len(line) == MAX_LINE_BYTES
    check = check_rollout(rollout_repo(tmp_path, GOOD, line + b"\n"), require_samples=True)
    assert check.ok and check.sample_count == 1


def test_non_utf8_sample_line(tmp_path: Path) -> None:
    data = sample().encode() + b"\n" + b'{"prompt": "\xff"}\n'
    check = check_rollout(rollout_repo(tmp_path, GOOD, data), require_samples=True)
    assert check.problems == ("samples.jsonl:2: not valid UTF-8 (at byte offset 12)",)
