"""The typed evidence records: JSON round trips, one error shape for every bad shape, credential stripping."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from attrs import define

from fsm_runner.errors import EvidenceError
from fsm_runner.evidence.records import (
    CommandRef,
    ErrorInfo,
    Outcome,
    ResolvedTarget,
    RoundRecord,
    RunState,
    TransitionRecord,
    strip_credentials,
    structure,
    url_secrets,
)
from fsm_runner.evidence.redaction import Redactor

ERROR = ErrorInfo(kind="command", message="exit 3", phase="tests", evidence="tests/cmd01_try02.json")
OUTCOME = Outcome(
    phase="tests",
    status="failed",
    duration_s=1.5,
    reason="a test failed",
    commands=(
        CommandRef(index=1, attempt=1, exit_code=3, duration_s=0.5, result="tests/cmd01_try01.json"),
        CommandRef(index=1, attempt=2, exit_code=None, duration_s=1.0, timed_out=True),
        CommandRef(index=2, attempt=1, blocked="sudo is not allowed"),
    ),
    error=ERROR,
    data={"metrics": {"score": 0.5, "ok": True}, "names": ["a", "b"], "nothing": None},
)
RECORD = TransitionRecord(
    seq=4,
    ts="2026-01-01T00:00:04Z",
    trigger="phase_failed",
    source="tests",
    dest="failed",
    guards={"can_repair": False},
    outcome=OUTCOME,
    reason="no repair agent is configured",
    round=2,
    repairs_used=1,
    repair_iters=2,
    redrive_count=1,
    status="failed",
    error=ERROR,
)
ROUND_ONE = RoundRecord(
    round=1,
    started="2026-01-01T00:00:01Z",
    llm="model-a",
    mode="full",
    status="ok",
    finished="2026-01-01T00:00:09Z",
    phases=("bootstrap", "rollout", "evaluate", "teardown"),
    metrics={"ok": True, "score": 0.5},
    score=0.5,
    benchmark={"ok": True, "rps": 2},
    samples="round_1/samples.jsonl",
    sample_count=8,
)
ROUND_TWO = RoundRecord(round=2, started="2026-01-01T00:00:10Z", llm="model-x", status="failed")
TARGET = ResolvedTarget(
    spec="https://example.com/org/repo.git",
    repo_root=Path("/srv/cache/repo"),
    kind="git",
    url="https://example.com/org/repo.git",
    ref="main",
    commit="0" * 40,
    cache_hit=True,
)


def full_run_state() -> RunState:
    """A run.json with every field away from its default."""
    return RunState(
        run_id="20260101T000000Z-abcdef",
        target=TARGET,
        status="failed",
        phase="failed",
        pipeline_rel="ci/pipeline.yml",
        contract_sha256="f" * 64,
        contract_hashes=["a" * 64, "b" * 64],
        unattended="guided",
        require_metrics=False,
        llm="model-x",
        mode="full",
        require_samples=True,
        env_overrides={"MODE": "fast"},
        repair_iters=2,
        repairs_used=1,
        round=3,
        completed={"clone": 1, "tests": 2},
        outputs={"evaluate": {"metrics": {"score": 0.75}}, "rollout": {}},
        runs_of_phase={"tests": 2},
        deploy_pgids=[1234, 5678],
        deploy_leaders={"web": 1234, "worker": None},
        deployed_llm="model-x",
        deployed=True,
        failed_phase="tests",
        last_error=ERROR,
        redrive_count=1,
        rounds=[ROUND_ONE, ROUND_TWO],
    )


def through_json(data: Any) -> Any:
    """What a reader gets back after the value was written to a file."""
    return json.loads(json.dumps(data))


# -- round trips -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        ERROR,
        ErrorInfo(kind="guard", message="not healthy", phase="health"),
        OUTCOME,
        Outcome(phase="clone", status="ok"),
        Outcome(phase="deploy_setup", status="skipped", reason="already deployed"),
        RECORD,
        TransitionRecord(seq=1, ts="t", trigger="start", source="init", dest="clone"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_records_survive_a_trip_through_json(record: ErrorInfo | Outcome | TransitionRecord) -> None:
    back = type(record).from_json(through_json(record.to_json()), "test")
    assert back == record
    assert type(back) is type(record)


def test_commands_come_back_as_command_refs() -> None:
    back = Outcome.from_json(through_json(OUTCOME.to_json()))
    assert all(isinstance(c, CommandRef) for c in back.commands)
    assert isinstance(back.commands, tuple)
    assert back.commands[1].timed_out is True and back.commands[1].exit_code is None
    assert OUTCOME.to_json()["commands"][0] == {
        "index": 1,
        "attempt": 1,
        "exit_code": 3,
        "duration_s": 0.5,
        "timed_out": False,
        "blocked": None,
        "result": "tests/cmd01_try01.json",
    }


def test_a_resolved_target_round_trips_with_its_path() -> None:
    data = through_json(TARGET.to_json())
    assert data["repo_root"] == "/srv/cache/repo"
    back = structure(ResolvedTarget, data, "target")
    assert back == TARGET
    assert isinstance(back.repo_root, Path)


def test_a_resolved_target_never_writes_credentials() -> None:
    secret = "https://bot:s3cr3t@example.com/org/repo.git"
    data = ResolvedTarget(spec=secret, repo_root=Path("/r"), kind="git", url=secret).to_json()
    assert data["spec"] == data["url"] == "https://***@example.com/org/repo.git"
    assert "s3cr3t" not in json.dumps(data)
    assert ResolvedTarget(spec=".", repo_root=Path("/r"), kind="local").to_json()["url"] is None


def test_run_state_round_trips_through_run_json() -> None:
    run = full_run_state()
    data = through_json(run.state_json())
    assert RunState.from_json(data) == run
    assert data["target"]["repo_root"] == "/srv/cache/repo"
    assert data["last_error"] == ERROR.to_json()


@pytest.mark.parametrize("secret", ["running", "evaluate", "smoke", "local", "hunter2-long-secret"])
def test_a_redacted_run_json_masks_free_text_and_still_reads_back(secret: str) -> None:
    run = attrs.evolve(
        full_run_state(),
        status="running",
        phase="evaluate",
        mode="smoke",
        llm=f"model-{secret}",
        outputs={"evaluate": {"metrics": {"note": secret}}},
        env_overrides={"API_KEY": secret, "PLAIN": f"x {secret}"},
        last_error=ErrorInfo("command", f"failed with {secret}", "evaluate"),
    )
    data = through_json(run.state_json(Redactor([secret])))
    back = RunState.from_json(data)
    assert (back.status, back.phase, back.mode) == ("running", "evaluate", "smoke")
    assert back.llm == "model-***" and back.outputs["evaluate"]["metrics"]["note"] == "***"
    assert back.env_overrides == {"API_KEY": "***", "PLAIN": "x ***"}
    assert back.last_error is not None and back.last_error.message == "failed with ***"


def test_run_state_defaults_fill_in_what_an_older_file_lacks() -> None:
    data = {"run_id": "r1", "target": {"spec": ".", "repo_root": "/r", "kind": "local"}}
    run = RunState.from_json(data)
    assert (run.status, run.phase, run.round, run.completed, run.last_error, run.rounds) == (
        "running",
        "clone",
        1,
        {},
        None,
        [],
    )


def test_a_round_says_whether_it_passed_and_reads_back_from_show_json() -> None:
    assert ROUND_ONE.ok and not ROUND_TWO.ok
    data = through_json(ROUND_ONE.to_json())
    assert {k: data[k] for k in ("round", "llm", "ok", "score", "samples")} == {
        "round": 1, "llm": "model-a", "ok": True, "score": 0.5, "samples": "round_1/samples.jsonl"
    }
    assert data["phases"] == ["bootstrap", "rollout", "evaluate", "teardown"]
    assert RoundRecord.from_json(data) == ROUND_ONE


def test_a_redacted_run_json_masks_secrets_in_rounds() -> None:
    secret = "hunter2-long-secret"
    leaky = attrs.evolve(ROUND_ONE, llm=f"m-{secret}", metrics={"note": secret, "score": 1})
    data = through_json(attrs.evolve(full_run_state(), rounds=[leaky]).state_json(Redactor([secret])))
    back = RunState.from_json(data).rounds[0]
    assert back.llm == "m-***" and back.metrics == {"note": "***", "score": 1}
    assert secret not in json.dumps(data)


def test_state_json_leaves_out_the_fields_of_a_subclass() -> None:
    @define(kw_only=True)
    class Live(RunState):
        clock: float = 0.0

    live = Live(run_id="r1", target=TARGET, clock=12.5)
    assert "clock" not in live.state_json()
    assert RunState.from_json(through_json(live.state_json())).run_id == "r1"


def test_whole_numbers_are_accepted_where_a_number_is_expected() -> None:
    back = Outcome.from_json({"phase": "tests", "status": "ok", "duration_s": 3})
    assert back.duration_s == 3.0 and isinstance(back.duration_s, float)


@pytest.mark.parametrize(
    "cls, clean, newer",
    [
        (ErrorInfo, {"kind": "k", "message": "m", "phase": "p"}, {"hint": "from a later version"}),
        (
            Outcome,
            {"phase": "p", "status": "ok", "commands": [{"index": 1, "attempt": 1}]},
            {"x": 1, "commands": [{"index": 1, "attempt": 1, "pid": 9}]},
        ),
        (
            TransitionRecord,
            {"seq": 1, "ts": "t", "trigger": "a", "source": "b", "dest": "c"},
            {"host": "h", "outcome": None},
        ),
        (
            RunState,
            {"run_id": "r", "target": {"spec": ".", "repo_root": "/r", "kind": "local"}},
            {"z": 0, "target": {"spec": ".", "repo_root": "/r", "kind": "local", "v": 2}},
        ),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_unknown_keys_are_ignored(cls: type[Any], clean: dict[str, Any], newer: dict[str, Any]) -> None:
    record = cls.from_json({**clean, **newer}, "newer file")
    assert record == cls.from_json(clean, "older file")


def test_the_failure_of_a_record_prefers_the_runs_error() -> None:
    assert RECORD.failure == ERROR
    phase_error = ErrorInfo(kind="guard", message="m", phase="health")
    only_phase = TransitionRecord(
        seq=1,
        ts="t",
        trigger="phase_failed",
        source="health",
        dest="failed",
        outcome=Outcome(phase="health", status="failed", error=phase_error),
    )
    assert only_phase.failure == phase_error
    assert TransitionRecord(seq=1, ts="t", trigger="a", source="b", dest="c").failure is None


# -- bad shapes ------------------------------------------------------------------------------------------


def good_record() -> dict[str, Any]:
    return copy.deepcopy(RECORD.to_json())


def damaged(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A good record JSON with the value at ``path`` replaced (or removed when ``value`` is ``...``)."""
    data = good_record()
    node: Any = data
    for step in path[:-1]:
        node = node[step]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


BAD_RECORDS: list[tuple[Any, str]] = [
    (damaged(("dest",), ...), "missing key 'dest'"),
    (damaged(("outcome", "phase"), ...), "outcome: missing key 'phase'"),
    (damaged(("outcome", "commands", 0, "attempt"), ...), "outcome.commands[0]: missing key 'attempt'"),
    (
        damaged(("outcome", "commands", 0, "index"), "1"),
        "outcome.commands[0].index: expected a whole number, got '1'",
    ),
    (
        damaged(("outcome", "commands", 1, "timed_out"), "yes"),
        "outcome.commands[1].timed_out: expected true or false, got 'yes'",
    ),
    (damaged(("seq",), True), "seq: expected a whole number, got True"),
    (damaged(("round",), 2.0), "round: expected a whole number, got 2.0"),
    (damaged(("outcome", "duration_s"), False), "outcome.duration_s: expected a finite number, got False"),
    (
        damaged(("outcome", "duration_s"), float("inf")),
        "outcome.duration_s: expected a finite number, got inf",
    ),
    (
        damaged(("outcome", "duration_s"), float("nan")),
        "outcome.duration_s: expected a finite number, got nan",
    ),
    (damaged(("outcome", "commands"), {"index": 1}), "outcome.commands: expected a list, got {'index': 1}"),
    (damaged(("outcome", "error"), "boom"), "outcome.error: expected an object, got 'boom'"),
    (damaged(("guards", "can_repair"), "no"), "guards.can_repair: expected true or false, got 'no'"),
    (damaged(("error", "message"), None), "error.message: expected a string, got None"),
    (damaged(("outcome", "status"), "maybe"), "outcome: 'status' must be in"),
    (damaged(("seq",), 0), "'seq' must be >= 1"),
    ([RECORD.to_json()], "expected an object, got [{"),
    ("seq=1", "expected an object, got 'seq=1'"),
    (None, "expected an object, got None"),
]


@pytest.mark.parametrize("data, message", [pytest.param(d, m, id=m) for d, m in BAD_RECORDS])
def test_a_bad_shape_names_where_and_the_key(data: Any, message: str) -> None:
    with pytest.raises(EvidenceError) as info:
        TransitionRecord.from_json(data, "journal.jsonl:7")
    text = str(info.value)
    assert text.startswith("journal.jsonl:7: ")
    assert message in text


def test_a_long_bad_value_is_shortened_in_the_message() -> None:
    with pytest.raises(EvidenceError) as info:
        ErrorInfo.from_json({"kind": "x" * 500, "message": 1, "phase": "p"}, "e")
    assert str(info.value) == "e: message: expected a string, got 1"
    with pytest.raises(EvidenceError) as info:
        ErrorInfo.from_json({"kind": ["x" * 500], "message": "m", "phase": "p"}, "e")
    assert len(str(info.value)) < 120 and str(info.value).endswith("...")


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"run_id": 7}, "run.json: run_id: expected a string, got 7"),
        ({"target": "."}, "run.json: target: expected an object, got '.'"),
        (
            {"target": {"spec": ".", "repo_root": "rel/path", "kind": "local"}},
            "run.json: target: repo_root must be absolute, got rel/path",
        ),
        ({"target": {"spec": ".", "repo_root": "/r", "kind": "svn"}}, "run.json: target: 'kind' must be in"),
        ({"env_overrides": {"MODE": 1}}, "run.json: env_overrides.MODE: expected a string, got 1"),
        (
            {"deploy_leaders": {"web": "1234"}},
            "run.json: deploy_leaders.web: expected a whole number, got '1234'",
        ),
        ({"deploy_pgids": [1, True]}, "run.json: deploy_pgids[1]: expected a whole number, got True"),
        ({"completed": {"tests": 1.5}}, "run.json: completed.tests: expected a whole number, got 1.5"),
        ({"outputs": {"evaluate": []}}, "run.json: outputs.evaluate: expected an object, got []"),
        ({"last_error": {"kind": "k", "phase": "p"}}, "run.json: last_error: missing key 'message'"),
        ({"require_metrics": "false"}, "run.json: require_metrics: expected true or false, got 'false'"),
        # values no run can have: a damaged file must not relax the policy or confuse a replay
        ({"unattended": "bogus"}, "run.json: 'unattended' must be in ('strict', 'guided')"),
        ({"mode": "huge"}, "run.json: 'mode' must be in ('smoke', 'full')"),
        ({"status": "done-ish"}, "run.json: 'status' must be in"),
        ({"redrive_count": -5}, "run.json: 'redrive_count' must be >= 0"),
        ({"round": 0}, "run.json: 'round' must be >= 1"),
        ({"run_id": "../../etc"}, "run.json: '../../etc' must be a single path component"),
        (
            {"pipeline_rel": "../evil/pipe.yml"},
            "run.json: '../evil/pipe.yml' must be a path inside the repository",
        ),
        ({"pipeline_rel": "/etc/passwd"}, "run.json: '/etc/passwd' must be a path inside the repository"),
        (
            {"outputs": {"evaluate": {"m": json.loads('{"x": ' * 70 + "1" + "}" * 70)}}},
            "run.json: outputs.evaluate: nested deeper than 64 levels",
        ),
        ({"rounds": {"round": 1}}, "run.json: rounds: expected a list, got {'round': 1}"),
        ({"rounds": [{"round": 1}]}, "run.json: rounds[0]: missing key 'started'"),
        (
            {"rounds": [{"round": "2", "started": "t"}]},
            "run.json: rounds[0].round: expected a whole number, got '2'",
        ),
        ({"rounds": [{"round": 1, "started": "t", "phases": "rollout"}]}, "run.json: rounds[0].phases: expected a list"),
        ({"rounds": [{"round": 1, "started": "t", "status": "done-ish"}]}, "run.json: rounds[0]: 'status' must be in"),
        ({"rounds": [{"round": 0, "started": "t"}]}, "run.json: rounds[0]: 'round' must be >= 1"),
    ],
)
def test_a_bad_run_json_names_the_key(patch: dict[str, Any], message: str) -> None:
    data = {**through_json(full_run_state().state_json()), **patch}
    with pytest.raises(EvidenceError) as info:
        RunState.from_json(data)
    assert str(info.value).startswith(message)


def test_an_optional_nested_record_may_be_null() -> None:
    data = {**good_record(), "outcome": None, "error": None}
    record = TransitionRecord.from_json(data)
    assert (record.outcome, record.error) == (None, None)


# -- credentials -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("https://user@example.com/org/repo.git", "https://***@example.com/org/repo.git"),
        ("https://user:pa55word@example.com/org/repo.git", "https://***@example.com/org/repo.git"),
        ("https://x-access-token:ghp_abc123@github.com/o/r", "https://***@github.com/o/r"),
        ("https://example.com/org/repo.git", "https://example.com/org/repo.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("ssh://git@example.com/org/repo.git", "ssh://***@example.com/org/repo.git"),
        ("https://example.com/packages/name@1.2.3", "https://example.com/packages/name@1.2.3"),
        (
            "fatal: could not read from https://u:t0k@host/r.git and https://v@host/s",
            "fatal: could not read from https://***@host/r.git and https://***@host/s",
        ),
        ("", ""),
    ],
)
def test_strip_credentials(text: str, expected: str) -> None:
    assert strip_credentials(text) == expected


@pytest.mark.parametrize(
    "text, stripped, secrets",
    [
        ("https://ghp_tok12345@host/o/r.git", "https://***@host/o/r.git", ("ghp_tok12345",)),
        ("http://bob:s3cret-pw@127.0.0.1:9/r.git@v1", "http://***@127.0.0.1:9/r.git@v1", ("s3cret-pw",)),
        ("ssh://deploy@host/o/r.git", "ssh://***@host/o/r.git", ()),  # an account name, not a secret
        ("https://***@host/o/r.git", "https://***@host/o/r.git", ()),
        ("clone https://tok-a@h/x failed; https://u:tok-b@h/y", "clone https://***@h/x failed; https://***@h/y",
         ("tok-a", "tok-b")),
        ("https://host/o/r.git", "https://host/o/r.git", ()),
    ],
)
def test_url_credentials_are_stripped_and_known_to_the_redactor(
    text: str, stripped: str, secrets: tuple[str, ...]
) -> None:
    assert strip_credentials(text) == stripped
    assert url_secrets(text) == secrets
