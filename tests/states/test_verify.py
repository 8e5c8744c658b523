"""verify: the last look before teardown records the contract hashes; contract_intact decides on them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from fsm_runner.engine import guards
from fsm_runner.engine.outcome import OK
from tests.helpers.phases import PhaseContexts, run_phase

PIPELINE = "version: 1\ntests:\n  cmds: 'true'\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def edit(path: Path) -> str | None:
    path.write_text(PIPELINE + "# edited during the run\n")
    return sha(PIPELINE + "# edited during the run\n")


def delete(path: Path) -> str | None:
    path.unlink()
    return None


def keep(path: Path) -> str | None:
    return sha(PIPELINE)


@pytest.mark.parametrize("change, intact", [(keep, True), (edit, False), (delete, False)], ids=["kept", "edited", "deleted"])
def test_verify_records_the_contract_hashes(
    make_ctx: PhaseContexts, change: Callable[[Path], str | None], intact: bool
) -> None:
    ctx = make_ctx(PIPELINE)
    now = change(ctx.pipeline_path)
    run = run_phase(ctx, "verify")
    assert run.outcome.status == OK  # verify only records; the guard decides
    assert run.outcome.data["contract_sha256_start"] == sha(PIPELINE) == ctx.contract_sha256
    assert run.outcome.data["contract_sha256_now"] == now
    assert run.summary()["data"]["contract_sha256_now"] == now
    assert guards.contract_intact(ctx) is intact
    if not intact:
        message, evidence = guards.explain("contract_intact", ctx)
        assert message.startswith("guard contract_intact failed: pipeline.yml changed since the run started")
        assert f"-> {(now or 'missing')[:12]}" in message
        assert evidence == str(ctx.pipeline_path)


def test_verify_lists_the_phases_completed_in_this_round(make_ctx: PhaseContexts) -> None:
    completed = {"clone": 1, "tests": 1, "rollout": 2, "evaluate": 2, "benchmark": 1}
    run = run_phase(make_ctx, "verify", PIPELINE, completed=completed, round=2)
    assert run.outcome.data["phases_completed"] == ["evaluate", "rollout"]
    again = run_phase(run.ctx, "verify", round=1)
    assert again.outcome.data["phases_completed"] == ["benchmark", "clone", "tests"]
    assert again.evidence.name == "verify.2"
