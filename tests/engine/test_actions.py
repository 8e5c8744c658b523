"""One-shot ``.aider_fsm/actions.yml``: run in order under the run's policy, then removed whatever happens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsm_runner.engine.actions import run_actions
from fsm_runner.engine.context import RunContext
from tests.helpers.context import ContextFactory, contexts

ACTIONS_REL = ".aider_fsm/actions.yml"


@pytest.fixture
def make_ctx(tmp_path: Path) -> Iterator[ContextFactory]:
    with contexts(tmp_path) as factory:
        yield factory


def with_actions(make_ctx: ContextFactory, body: str, pipeline: str = "version: 1\n") -> RunContext:
    return make_ctx(pipeline, files={ACTIONS_REL: "version: 1\nactions:\n" + body})


def out_dir(ctx: RunContext) -> Path:
    return ctx.new_stage_dir("repair_01")


def test_no_actions_file_is_nothing_to_do(make_ctx: ContextFactory) -> None:
    ctx = make_ctx()
    out = out_dir(ctx)
    assert run_actions(ctx, "repair", out) == ([], None)
    assert not (out / "actions").exists()


def test_actions_run_in_order_and_the_file_is_removed(make_ctx: ContextFactory) -> None:
    ctx = with_actions(
        make_ctx,
        '  - {id: write, kind: write_file, path: data/in.txt, content: "hello\\n", rationale: seed}\n'
        "  - {id: copy, kind: run_cmd, cmd: 'cat data/in.txt > out.txt && echo copied'}\n"
        '  - {id: again, kind: write_file, path: data/in.txt, content: "later\\n"}\n',
    )
    out = out_dir(ctx)
    records, error = run_actions(ctx, "repair", out)
    assert error is None
    assert (ctx.repo_root / "out.txt").read_text() == "hello\n"  # the command saw the first write only
    assert (ctx.repo_root / "data/in.txt").read_text() == "later\n"
    assert [(r["id"], r["kind"], r["ok"]) for r in records] == [
        ("write", "write_file", True),
        ("copy", "run_cmd", True),
        ("again", "write_file", True),
    ]
    assert records[0]["rationale"] == "seed" and records[0]["path"] == "data/in.txt"
    assert records[1]["results"][0]["exit_code"] == 0
    assert not (ctx.repo_root / ACTIONS_REL).exists()
    assert json.loads((out / "actions" / "actions.json").read_text()) == records
    assert json.loads((out / "actions" / "actions.snapshot.json").read_text())["count"] == 3
    assert list((out / "actions" / "action02").glob("*.stdout"))  # per-command evidence


def test_a_failing_action_stops_the_rest(make_ctx: ContextFactory) -> None:
    ctx = with_actions(
        make_ctx,
        "  - {id: first, kind: write_file, path: a.txt, content: a}\n"
        "  - {id: boom, kind: run_cmd, cmd: 'echo nope >&2; exit 3'}\n"
        "  - {id: never, kind: write_file, path: c.txt, content: c}\n",
    )
    records, error = run_actions(ctx, "repair", out_dir(ctx))
    assert [r["id"] for r in records] == ["first", "boom"]
    assert records[1]["ok"] is False and records[1]["results"][-1]["exit_code"] == 3
    assert error is not None
    assert (error.kind, error.phase) == ("action", "repair")
    assert "action 'boom' failed" in error.message
    assert error.evidence == str(ctx.repo_root / ACTIONS_REL)
    assert (ctx.repo_root / "a.txt").exists() and not (ctx.repo_root / "c.txt").exists()
    assert not (ctx.repo_root / ACTIONS_REL).exists()


def test_a_retried_action_gets_its_retries(make_ctx: ContextFactory) -> None:
    ctx = with_actions(
        make_ctx,
        "  - {id: flaky, kind: run_cmd, retries: 1,"
        " cmd: 'if [ -e tried ]; then exit 0; else touch tried; exit 1; fi'}\n",
    )
    records, error = run_actions(ctx, "repair", out_dir(ctx))
    assert error is None
    assert [r["exit_code"] for r in records[0]["results"]] == [1, 0]


@pytest.mark.parametrize(
    "cmd, pipeline",
    [
        ("touch ran && sudo ls", "version: 1\n"),
        ("touch ran && curl http://example.invalid", "version: 1\nsecurity:\n  denylist: ['curl']\n"),
        ("touch ran", "version: 1\nsecurity:\n  allowlist: ['^echo ']\n"),
    ],
)
def test_a_blocked_command_is_not_run(make_ctx: ContextFactory, cmd: str, pipeline: str) -> None:
    ctx = with_actions(make_ctx, f"  - {{id: risky, kind: run_cmd, cmd: {json.dumps(cmd)}}}\n", pipeline)
    records, error = run_actions(ctx, "repair", out_dir(ctx))
    assert error is not None and "risky" in error.message
    result = records[0]["results"][-1]
    assert result["blocked"] and result["exit_code"] != 0
    assert not (ctx.repo_root / "ran").exists()
    assert not (ctx.repo_root / ACTIONS_REL).exists()


def test_the_file_is_removed_even_when_an_action_raises(make_ctx: ContextFactory) -> None:
    ctx = with_actions(
        make_ctx,
        "  - {id: ok, kind: write_file, path: fine.txt, content: x}\n"
        "  - {id: clash, kind: write_file, path: adir, content: x}\n",
    )
    (ctx.repo_root / "adir").mkdir()
    out = out_dir(ctx)
    with pytest.raises(IsADirectoryError):
        run_actions(ctx, "repair", out)
    assert not (ctx.repo_root / ACTIONS_REL).exists()
    assert [r["id"] for r in json.loads((out / "actions" / "actions.json").read_text())] == ["ok"]


def test_an_invalid_actions_file_is_set_aside_and_reported(make_ctx: ContextFactory) -> None:
    body = "  - {id: x, kind: launch_rockets}\n"
    ctx = with_actions(make_ctx, body)
    out = out_dir(ctx)
    records, error = run_actions(ctx, "repair", out)
    assert records == []
    assert error is not None and (error.kind, error.phase) == ("contract", "repair")
    assert ACTIONS_REL in error.message and "kind" in error.message
    assert not (ctx.repo_root / ACTIONS_REL).exists()  # it cannot fail the next repair again
    assert error.evidence is not None and Path(error.evidence).read_text() == "version: 1\nactions:\n" + body


def test_commands_get_the_stage_env_and_secrets_are_masked(make_ctx: ContextFactory) -> None:
    ctx = make_ctx(
        files={
            ACTIONS_REL: "version: 1\nactions:\n  - {id: env, kind: run_cmd, cmd: 'echo $AIDER_FSM_STAGE $MY_TOKEN'}\n"
        },
        secrets={"MY_TOKEN": "tok-123456789"},
    )
    out = out_dir(ctx)
    _, error = run_actions(ctx, "repair", out)
    assert error is None
    stdout = next((out / "actions" / "action01").glob("*.stdout")).read_text()
    assert stdout == "repair ***\n"


@pytest.mark.parametrize(
    "link, path",
    [("data", "data/notes.txt"), ("notes.txt", "notes.txt")],
    ids=["a-directory-on-the-way", "the-file-itself"],
)
def test_write_file_refuses_a_symlink_an_earlier_action_made(
    make_ctx: ContextFactory, tmp_path: Path, link: str, path: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("mine\n")
    target = outside if link == "data" else outside / "notes.txt"
    ctx = with_actions(
        make_ctx,
        f"  - {{id: link, kind: run_cmd, cmd: 'ln -s {target} {link}'}}\n"
        f"  - {{id: write, kind: write_file, path: {path}, content: overwritten}}\n"
        "  - {id: after, kind: run_cmd, cmd: 'touch after'}\n",
    )
    records, error = run_actions(ctx, "repair", out_dir(ctx))
    assert (outside / "notes.txt").read_text() == "mine\n"
    assert error is not None and (error.kind, error.phase) == ("action", "repair")
    assert error.message.startswith(f"action 'write' refused: {path}: {link} is a symbolic link (to {target})")
    assert [(r["id"], r["ok"]) for r in records] == [("link", True), ("write", False)]
    assert not (ctx.repo_root / "after").exists()  # the actions stop at the refused one
