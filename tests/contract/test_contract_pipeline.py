"""pipeline.yml v1: every field, alias, default, and the exact message of each invalid input."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from fsm_runner.contract import (
    AuthSpec,
    EvaluationSpec,
    KubectlDumpSpec,
    PipelineSpec,
    SecuritySpec,
    TestsSpec,
    load_pipeline,
)
from fsm_runner.contract.fields import RequiredKey, to_required_keys
from fsm_runner.errors import ContractError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(root: Path, text: str, rel: str = "pipeline.yml") -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path.resolve())


def error_of(root: Path, text: str) -> str:
    shown = write(root, text)
    with pytest.raises(ContractError) as info:
        load_pipeline(root)
    message = str(info.value)
    assert message.startswith(shown), message
    return message[len(shown) :]


def test_full_example_loads_every_field(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "pipeline.example.yml", tmp_path / "pipeline.yml")
    spec = load_pipeline(tmp_path)
    raw = (tmp_path / "pipeline.yml").read_bytes()
    assert spec.path == str((tmp_path / "pipeline.yml").resolve())
    assert spec.sha256 == hashlib.sha256(raw).hexdigest()
    assert spec.version == 1
    assert spec.security.mode == "safe"
    assert spec.security.denylist == (r"rm\s+-rf\s+~",)
    assert spec.security.max_cmd_seconds == 600.0 and spec.security.max_total_seconds == 3600.0
    assert spec.tests == TestsSpec(
        cmds=("python -m pytest -q tests/unit",), timeout_seconds=300.0, env={"PYTHONDONTWRITEBYTECODE": "1"}
    )
    assert spec.auth is not None and spec.auth.interactive is False and len(spec.auth.cmds) == 1
    deploy = spec.deploy
    assert deploy is not None
    assert deploy.setup_cmds == ("bash scripts/start_server.sh",)
    assert deploy.health_cmds == ('curl -fsS "http://127.0.0.1:$AIDER_FSM_PORT/health"',)
    assert deploy.teardown_policy == "always" and deploy.workdir == "."
    assert deploy.kubectl_dump == KubectlDumpSpec(False, "bench", "app=bench", False)
    assert spec.rollout is not None and spec.rollout.retries == 1
    assert spec.evaluation == EvaluationSpec(
        run_cmds=("python scripts/evaluate.py",),
        metrics_path=".aider_fsm/metrics.json",
        required_keys=("ok", "score"),
        timeout_seconds=1800.0,
    )
    assert spec.benchmark is not None and spec.benchmark.required_keys == to_required_keys(
        ["ok", "score", "eval.n_samples"]
    )
    assert spec.artifacts.out_dir == ".aider_fsm/artifacts" and spec.artifacts.max_output_bytes == 64 << 20


def test_skeleton_example_loads(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "pipeline.benchmark_skeleton.yml", tmp_path / "pipeline.yml")
    spec = load_pipeline(tmp_path)
    assert spec.tests == TestsSpec() and spec.deploy is None and spec.auth is None
    assert spec.evaluation is not None and spec.evaluation.required_keys == to_required_keys(["ok", "score"])


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\n")
    spec = load_pipeline(tmp_path)
    assert spec.security == SecuritySpec("safe", (), (), None, None)
    assert (spec.tests, spec.auth, spec.deploy, spec.rollout, spec.evaluation, spec.benchmark) == (None,) * 6
    assert spec.artifacts.out_dir == ".aider_fsm/artifacts"


@pytest.mark.parametrize(
    "text",
    [
        "tests: {}\n",
        "tests: {cmds: []}\n",
        "tests:\n",
        "tests:\n  cmds:\n",
        "tests: {cmds: null, env: null}\n",
    ],
)
def test_empty_sections_load(tmp_path: Path, text: str) -> None:
    write(tmp_path, "version: 1\n" + text)
    tests = load_pipeline(tmp_path).tests
    assert tests is None or tests == TestsSpec()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auth: {cmds: make login}", ("make login",)),
        ("auth: {steps: make login}", ("make login",)),
        ("auth: {steps: [a, b]}", ("a", "b")),
        ("auth: {cmds: ['a: b', c]}", ("a: b", "c")),
    ],
)
def test_auth_alias_and_string_or_list(tmp_path: Path, text: str, expected: tuple[str, ...]) -> None:
    write(tmp_path, "version: 1\n" + text + "\n")
    assert load_pipeline(tmp_path).auth == AuthSpec(cmds=expected)


def test_every_command_list_accepts_a_string(tmp_path: Path) -> None:
    write(
        tmp_path,
        "version: 1\ntests: {cmds: t}\nrollout: {run_cmds: r}\n"
        "benchmark: {run_cmds: b, required_keys: score}\n"
        "deploy: {setup_cmds: s, health_cmds: h, teardown_cmds: d, teardown_policy: on_failure}\n"
        "security: {allowlist: '^echo', denylist: 'rm'}\n",
    )
    spec = load_pipeline(tmp_path)
    assert spec.tests is not None and spec.tests.cmds == ("t",)
    assert spec.rollout is not None and spec.rollout.run_cmds == ("r",)
    assert spec.benchmark is not None and spec.benchmark.required_keys == (RequiredKey("score"),)
    assert spec.deploy is not None
    assert (spec.deploy.setup_cmds, spec.deploy.health_cmds, spec.deploy.teardown_cmds) == (
        ("s",),
        ("h",),
        ("d",),
    )
    assert spec.security.allowlist == ("^echo",) and spec.security.denylist == ("rm",)


def test_env_values_become_strings_as_written(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\ntests:\n  env: {A: 1.10, B: true, C: 3, D: '', E: 0x1F, F: plain}\n")
    tests = load_pipeline(tmp_path).tests
    assert tests is not None
    assert tests.env == {"A": "1.10", "B": "true", "C": "3", "D": "", "E": "0x1F", "F": "plain"}


def test_ints_are_accepted_where_floats_are(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nsecurity: {max_cmd_seconds: 5}\ntests: {timeout_seconds: 2.5}\n")
    spec = load_pipeline(tmp_path)
    assert spec.security.max_cmd_seconds == 5.0 and isinstance(spec.security.max_cmd_seconds, float)
    assert spec.tests is not None and spec.tests.timeout_seconds == 2.5


def test_paths_inside_the_repo_are_fine(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "inner")
    write(tmp_path, "version: 1\ntests: {workdir: link}\nevaluation: {metrics_path: a/../m.json}\n")
    spec = load_pipeline(tmp_path)
    assert spec.tests is not None and spec.tests.workdir == "link"
    assert spec.evaluation is not None and spec.evaluation.metrics_path == "a/../m.json"


BAD = [
    (
        "version: 1\nevaluation:\n  required_key: [ok]\n",
        ":3: evaluation.required_key: unknown key, did you mean required_keys?",
    ),
    ("version: 1\nevalution: {}\n", ":2: evalution: unknown key, did you mean evaluation?"),
    ("version: 1\ntests: {cmd: x}\n", ":2: tests.cmd: unknown key, did you mean cmds?"),
    (
        "version: 1\nzzzz: 1\n",
        ":2: zzzz: unknown key; valid keys: version, security, tests, auth, deploy, rollout, evaluation, "
        "benchmark, artifacts",
    ),
    ("tests: {cmds: x}\n", ":1: version: missing; add `version: 1` at the top"),
    ("version: 2\n", ":1: version: unsupported version 2; this fsm-runner reads version 1 only"),
    ("version: '1'\n", ":1: version: expected the integer 1, got str"),
    ("version: true\n", ":1: version: expected the integer 1, got bool"),
    ("version: 1.0\n", ":1: version: expected the integer 1, got float"),
    ("version:\n", ":1: version: expected the integer 1, got null"),
    ("version: 1\ntests:\n  retries: true\n", ":3: tests.retries: expected a whole number, got bool"),
    ("version: 1\ntests:\n  retries: 1.5\n", ":3: tests.retries: expected a whole number, got float"),
    ("version: 1\ntests:\n  retries: -1\n", ":3: tests.retries: must be 0 or more, got -1"),
    (
        "version: 1\ntests:\n  timeout_seconds: ten\n",
        ":3: tests.timeout_seconds: expected a number of seconds, got str",
    ),
    (
        "version: 1\ntests:\n  timeout_seconds: yes\n",
        ":3: tests.timeout_seconds: expected a number of seconds, got bool",
    ),
    (
        "version: 1\ntests:\n  timeout_seconds: 0\n",
        ":3: tests.timeout_seconds: must be a positive number of seconds, got 0",
    ),
    (
        "version: 1\nsecurity: {max_total_seconds: .inf}\n",
        ":2: security.max_total_seconds: must be a positive number of seconds, got inf",
    ),
    (
        "version: 1\ntests:\n  cmds:\n    - echo\n    - 3\n",
        ":5: tests.cmds[1]: expected a command (a string), got int (quote it to make it a string)",
    ),
    (
        "version: 1\ntests:\n  cmds: [true]\n",
        ":3: tests.cmds[0]: expected a command (a string), got bool (quote it to make it a string)",
    ),
    (
        "version: 1\ntests:\n  cmds:\n    - echo a: b\n",
        ":4: tests.cmds[0]: expected a command (a string), got mapping "
        "(a command containing ': ' must be quoted)",
    ),
    (
        "version: 1\ntests:\n  cmds: {a: b}\n",
        ":3: tests.cmds: expected a command or a list of them, got mapping",
    ),
    ("version: 1\ntests:\n  cmds: ['  ']\n", ":3: tests.cmds[0]: empty command"),
    ("version: 1\ntests: [a]\n", ":2: tests: expected a mapping, got list"),
    ("version: 1\ntests: 3\n", ":2: tests: expected a mapping, got int"),
    (
        "version: 1\nauth:\n  cmds: a\n  steps: b\n",
        ":4: auth.steps: `cmds` and `steps` are aliases of the same setting; keep only one",
    ),
    ("version: 1\nauth: {interactive: 1}\n", ":2: auth.interactive: expected true or false, got int"),
    (
        "version: 1\nsecurity:\n  mode: sytem\n",
        ":3: security.mode: must be one of safe, system, got 'sytem'; did you mean system?",
    ),
    (
        "version: 1\ndeploy:\n  teardown_policy: sometimes\n",
        ":3: deploy.teardown_policy: must be one of always, on_success, on_failure, never, got 'sometimes'",
    ),
    (
        "version: 1\ndeploy:\n  kubectl_dump:\n    namespce: x\n",
        ":4: deploy.kubectl_dump.namespce: unknown key, did you mean namespace?",
    ),
    ("version: 1\ndeploy:\n  kubectl_dump: true\n", ":3: deploy.kubectl_dump: expected a mapping, got bool"),
    (
        "version: 1\nsecurity:\n  allowlist: ['^ok', 'x(']\n",
        ":3: security.allowlist[1]: invalid regex 'x(': missing ), unterminated subpattern at position 1",
    ),
    (
        "version: 1\nsecurity:\n  denylist: '*'\n",
        ":3: security.denylist: invalid regex '*': nothing to repeat at position 0",
    ),
    (
        "version: 1\ntests:\n  workdir: ../x\n",
        ":3: tests.workdir: '../x' escapes the repository through '..'",
    ),
    (
        "version: 1\nevaluation:\n  metrics_path: a/../../m.json\n",
        ":3: evaluation.metrics_path: 'a/../../m.json' escapes the repository through '..'",
    ),
    (
        "version: 1\nartifacts:\n  out_dir: ../evidence\n",
        ":3: artifacts.out_dir: '../evidence' escapes the repository through '..'",
    ),
    (
        "version: 1\ntests:\n  workdir: /etc\n",
        ":3: tests.workdir: must be relative to the repository root, got absolute path '/etc'",
    ),
    (
        "version: 1\nbenchmark:\n  metrics_path: /tmp/m.json\n",
        ":3: benchmark.metrics_path: must be relative to the repository root, "
        "got absolute path '/tmp/m.json'",
    ),
    ("version: 1\ntests:\n  workdir: ''\n", ":3: tests.workdir: must not be empty"),
    ("version: 1\ntests:\n  env: [A]\n", ":3: tests.env: expected a mapping of NAME: value, got list"),
    (
        "version: 1\ntests:\n  env:\n    1A: x\n",
        ":4: tests.env: invalid variable name '1A' (use letters, digits and _)",
    ),
    (
        "version: 1\ndeploy:\n  env:\n    AIDER_FSM_PORT: 8000\n",
        ":4: deploy.env.AIDER_FSM_PORT: AIDER_FSM_PORT is chosen by the runner (a free port per run); remove it "
        "here and read $AIDER_FSM_PORT in your commands (to pin a port for one run: --env AIDER_FSM_PORT=N)",
    ),
    (
        "version: 1\ntests:\n  env:\n    A:\n",
        ":4: tests.env.A: expected a string, number or bool, got null; write '' for an empty value",
    ),
    (
        "version: 1\ntests:\n  env:\n    A: [1]\n",
        ":4: tests.env.A: expected a string, number or bool, got list; write '' for an empty value",
    ),
    (
        "version: 1\nartifacts: {out_dir: 5}\n",
        ":2: artifacts.out_dir: expected a string, got int (quote it to make it a string)",
    ),
    ("version: 1\nversion: 1\n", ":2: version: duplicate key (first at line 1)"),
    ("version: 1\n1: x\n", ":2: keys must be strings, got int"),
    ("version: 1\n<<: {tests: {}}\n", ":2: YAML merge keys (<<) are not supported; write the keys out"),
    (
        "version: 1\ntests:\n  workdir: 2021-02-30\n",
        ":3: tests.workdir: cannot read value '2021-02-30': day is out of range for month",
    ),
    (
        "version: 1\nevaluation:\n  required_keys: ok, score\n",
        ":3: evaluation.required_keys: 'ok, score' is one key whose name contains a comma; for a list of "
        "keys write `[ok, score]`",
    ),
    (
        "version: 1\nsecurity: {max_cmd_seconds: 1e3}\n",
        ":2: security.max_cmd_seconds: expected a number of seconds, got str ('1e3' is text to YAML; write "
        "1000 or 1000.0)",
    ),
    (
        "version: 1\nsecurity: {max_total_seconds: 1.0e+306}\n",
        ":2: security.max_total_seconds: must be at most 604800 seconds (7 days), got 1e+306",
    ),
    ("version: 1\ntests: {retries: 101}\n", ":2: tests.retries: must be at most 100, got 101"),
    (
        'version: 1\ntests:\n  cmds:\n    - echo ok\n    - "echo a\\0b"\n',
        ":5: tests.cmds[1]: contains a NUL byte (\\0), which no command line or environment can hold; remove it",
    ),
    (
        'version: 1\ntests:\n  cmds: "echo \\ud800"\n',
        ":3: tests.cmds: contains '\\ud800', a lone surrogate that is not valid Unicode text; write the "
        "character itself, in UTF-8",
    ),
    (
        'version: 1\ndeploy:\n  env:\n    A: "x\\0"\n',
        ":4: deploy.env.A: contains a NUL byte (\\0), which no command line or environment can hold; remove it",
    ),
    (
        'version: 1\nrollout:\n  env: {A: "\\udc80"}\n',
        ":3: rollout.env.A: contains '\\udc80', a lone surrogate that is not valid Unicode text; write the "
        "character itself, in UTF-8",
    ),
    (
        'version: 1\ntests:\n  workdir: "sub\\ud800"\n',
        ":3: tests.workdir: contains '\\ud800', a lone surrogate that is not valid Unicode text; write the "
        "character itself, in UTF-8",
    ),
    (
        'version: 1\nsecurity:\n  denylist: ["rm\\0"]\n',
        ":3: security.denylist[0]: contains a NUL byte (\\0), which no command line or environment can hold; "
        "remove it",
    ),
    (
        "version: 1\ntests:\n  env:\n    AIDER_FSM_MAX_CMD_SECONDS: 5\n",
        ":4: tests.env.AIDER_FSM_MAX_CMD_SECONDS: AIDER_FSM_MAX_CMD_SECONDS is not read from a contract's env; "
        "set security.max_cmd_seconds in pipeline.yml (or, for one run, export AIDER_FSM_MAX_CMD_SECONDS or "
        "pass --env AIDER_FSM_MAX_CMD_SECONDS=N)",
    ),
    (
        "version: 1\nevaluation:\n  env: {AIDER_FSM_MAX_TOTAL_SECONDS: '60'}\n",
        ":3: evaluation.env.AIDER_FSM_MAX_TOTAL_SECONDS: AIDER_FSM_MAX_TOTAL_SECONDS is not read from a "
        "contract's env; set security.max_total_seconds in pipeline.yml (or, for one run, export "
        "AIDER_FSM_MAX_TOTAL_SECONDS or pass --env AIDER_FSM_MAX_TOTAL_SECONDS=N)",
    ),
    (
        "version: 1\nartifacts: {max_output_bytes: 100}\n",
        ":2: artifacts.max_output_bytes: must be 0 (no cap) or at least 4096 bytes, got 100",
    ),
    (
        "version: 1\nartifacts: {max_output_bytes: 64MiB}\n",
        ":2: artifacts.max_output_bytes: expected a whole number of bytes, got str",
    ),
    (
        "version: 1\nartifacts: {max_output_bytes: 1e6}\n",
        ":2: artifacts.max_output_bytes: expected a whole number of bytes, got str ('1e6' is text to YAML; "
        "write 1000000)",
    ),
    (
        "version: 1\nartifacts: {max_output_bytes: 1e9}\n",
        ":2: artifacts.max_output_bytes: expected a whole number of bytes, got str ('1e9' is text to YAML; "
        "write 1000000000)",
    ),
    (
        "version: 1\ntests: {retries: 1e1}\n",
        ":2: tests.retries: expected a whole number, got str ('1e1' is text to YAML; write 10)",
    ),
    ("version: 1\ntests: {retries: 1e-1}\n", ":2: tests.retries: expected a whole number, got str"),
    (
        "version: 1\nartifacts: {max_output_bytes: -1}\n",
        ":2: artifacts.max_output_bytes: must be 0 (no cap) or at least 4096 bytes, got -1",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_invalid_input_has_an_exact_message(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


def test_workdir_escaping_through_a_symlink(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    outside = tmp_path / "outside"
    outside.mkdir()
    repo.mkdir()
    (repo / "out").symlink_to(outside)
    message = error_of(repo, "version: 1\ntests:\n  workdir: out/sub\n")
    assert (
        message
        == f":3: tests.workdir: 'out/sub' resolves outside the repository through a symlink ({outside}/sub)"
    )


def test_contract_error_carries_location(tmp_path: Path) -> None:
    shown = write(tmp_path, "version: 1\nevaluation:\n  required_key: [ok]\n")
    with pytest.raises(ContractError) as info:
        load_pipeline(tmp_path)
    assert (info.value.path, info.value.line, info.value.key) == (shown, 3, "evaluation.required_key")


def test_first_error_is_the_earliest_line(tmp_path: Path) -> None:
    assert error_of(tmp_path, "zz: 1\nversion: 2\n") == ":1: zz: unknown key; valid keys: " + ", ".join(
        ["version", "security", "tests", "auth", "deploy", "rollout", "evaluation", "benchmark", "artifacts"]
    )


def test_missing_file_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(ContractError) as info:
        load_pipeline(tmp_path)
    assert (
        str(info.value)
        == f"{tmp_path.resolve()}/pipeline.yml: file not found; run `fsm-runner init` to start one"
    )


def test_custom_relative_name(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\ntests: {cmds: x}\n", rel="ci/pipe.yml")
    spec = load_pipeline(tmp_path, "ci/pipe.yml")
    assert spec.path.endswith("ci/pipe.yml") and isinstance(spec, PipelineSpec)


@pytest.mark.parametrize("rel", ["../pipeline.yml", "/etc/passwd", "ci/../../x.yml", ""])
def test_the_pipeline_file_must_be_inside_the_repository(tmp_path: Path, rel: str) -> None:
    with pytest.raises(ContractError, match="must be a path inside the repository") as info:
        load_pipeline(tmp_path, rel)
    assert info.value.key == "pipeline_rel"


def test_models_validate_direct_construction() -> None:
    assert TestsSpec(cmds="make").cmds == ("make",)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SecuritySpec(mode="bogus")
    with pytest.raises(ValueError):
        TestsSpec(retries=-1)
    with pytest.raises(AttributeError):
        TestsSpec().retries = 2  # type: ignore[misc]


DOCS = Path(__file__).resolve().parents[2] / "docs"


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_an_absolute_out_dir_is_a_contract_error_as_every_doc_says(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    message = error_of(tmp_path, f"version: 1\nartifacts:\n  out_dir: {outside}\n")
    assert message == f":3: artifacts.out_dir: must be relative to the repository root, got absolute path {str(outside)!r}"
    spec = _flat((DOCS / "pipeline_spec.md").read_text(encoding="utf-8"))
    evidence = _flat((DOCS / "evidence.md").read_text(encoding="utf-8"))
    assert "an absolute path is used as is" not in spec
    assert "an absolute path, a `..` escape or a symlink out of it is a contract error" in spec
    assert "Paths (`workdir`, `metrics_path`, `artifacts.out_dir`) are relative to the repository root" in spec
    assert "`artifacts.out_dir` is a path inside the repository, never an absolute one" in evidence


def test_the_docs_mention_an_xfail_only_when_one_exists() -> None:
    fault = Path(__file__).resolve().parents[1] / "fault"
    marked = any("pytest.mark.xfail" in p.read_text(encoding="utf-8") for p in fault.glob("test_*.py"))
    performance = _flat((DOCS / "performance.md").read_text(encoding="utf-8"))
    claims_open = "documents an engine defect that is still open" in performance
    assert claims_open == marked
    assert marked or "No test in `tests/fault/` is marked `xfail`" in performance
@pytest.mark.parametrize("kind", ["number", "integer", "string", "boolean", "object", "array"])
@pytest.mark.parametrize("style", ["flow", "block", "single"])
def test_a_required_key_may_name_its_type(tmp_path: Path, kind: str, style: str) -> None:
    keys = {
        "flow": f"[ok, {{score: {kind}}}, eval.n]",
        "block": f"\n    - ok\n    - score: {kind}\n    - eval.n",
        "single": f"{{score: {kind}}}",
    }[style]
    (tmp_path / "pipeline.yml").write_text(f"version: 1\nevaluation:\n  required_keys: {keys}\n")
    spec = load_pipeline(tmp_path)
    assert spec.evaluation is not None
    expected = (RequiredKey("score", kind),)
    if style != "single":
        expected = (RequiredKey("ok"), *expected, RequiredKey("eval.n"))
    assert spec.evaluation.required_keys == expected


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        (
            "[ok, {score: float}]",
            ":3: evaluation.required_keys[1]: unknown type 'float' for score; the types are number, integer, "
            "string, boolean, object, array",
        ),
        (
            "\n    - ok\n    - score: numbr",
            ":5: evaluation.required_keys[1]: unknown type 'numbr' for score (did you mean number?); the types "
            "are number, integer, string, boolean, object, array",
        ),
        (
            "[{score: 1}]",
            ":3: evaluation.required_keys[0]: expected the type of score, one of number, integer, string, "
            "boolean, object, array, got int",
        ),
        (
            "[{score: }]",
            ":3: evaluation.required_keys[0]: expected the type of score, one of number, integer, string, "
            "boolean, object, array, got null",
        ),
        (
            "[{ok: boolean, score: number}]",
            ":3: evaluation.required_keys[0]: a typed key is a mapping of one key name to its type, like "
            "{score: number}; this one has 2 keys: write one list entry per key",
        ),
        (
            "[{1: number}]",
            ":3: evaluation.required_keys[0]: expected a key name (a string), got int (quote it to make it a "
            "string)",
        ),
        ("[ok, [score]]", ":3: evaluation.required_keys[1]: expected a key name or {name: type}, got list"),
        (
            "[ok, 3]",
            ":3: evaluation.required_keys[1]: expected a key name or {name: type}, got int (quote it to make "
            "it a string)",
        ),
    ],
    ids=["unknown-type", "typo", "type-not-a-name", "no-type", "two-keys", "name-not-a-string", "list", "int"],
)
def test_a_bad_typed_key_names_the_line_and_the_types(tmp_path: Path, keys: str, error: str) -> None:
    (tmp_path / "pipeline.yml").write_text(f"version: 1\nevaluation:\n  required_keys: {keys}\n")
    with pytest.raises(ContractError) as caught:
        load_pipeline(tmp_path)
    assert str(caught.value) == str(tmp_path / "pipeline.yml") + error


def test_the_python_api_takes_names_mappings_and_refuses_unknown_types() -> None:
    spec = EvaluationSpec(required_keys=["ok", {"score": "number"}, RequiredKey("n", "integer")])
    assert spec.required_keys == (RequiredKey("ok"), RequiredKey("score", "number"), RequiredKey("n", "integer"))
    assert EvaluationSpec(required_keys="ok").required_keys == (RequiredKey("ok"),)
    with pytest.raises(ValueError, match="unknown type 'float' for score; the types are number, integer"):
        EvaluationSpec(required_keys=[{"score": "float"}])
