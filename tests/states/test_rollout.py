"""rollout: the model under test produces samples through the target's own scripts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsm_runner.engine import guards
from fsm_runner.engine.outcome import FAILED, OK, SKIPPED
from tests.conftest import procs_in
from tests.helpers.phases import SERVICE_FILES, PhaseContexts, deploy_yaml, run_phase, service_url

HEAD = "version: 1\n"
ROLLOUT_REL = ".aider_fsm/rollout.json"
SAMPLES_REL = ".aider_fsm/samples.jsonl"
#: Copies prepared outputs into place, so each case chooses exactly what the rollout leaves behind.
COPY = "rollout:\n  run_cmds: 'mkdir -p .aider_fsm && cp out/* .aider_fsm/'\n"


def sample(completion: str = "a") -> str:
    return json.dumps({"prompt": "q", "completion": completion, "reward": 1.0})


def outputs(lines: list[str], **rollout: object) -> dict[str, str]:
    body = {"paths": {"samples_jsonl": SAMPLES_REL}, **rollout}
    return {"out/rollout.json": json.dumps(body), "out/samples.jsonl": "".join(f"{line}\n" for line in lines)}


def test_no_rollout_commands_is_a_recorded_skip(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "rollout", HEAD)
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "pipeline.yml has no rollout commands"
    assert run.stage_dir is None


def test_required_samples_without_rollout_commands_is_a_contract_error(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "rollout", HEAD, require_samples=True)
    assert run.outcome.status == FAILED and run.outcome.error is not None
    assert run.outcome.error.kind == "contract"
    assert run.outcome.error.message == (
        "require_samples is set but pipeline.yml has no rollout.run_cmds to produce samples"
    )
    assert run.outcome.error.evidence == str(run.repo / "pipeline.yml")
    assert run.outcome.commands == ()
    assert run.summary()["error"]["kind"] == "contract"


@pytest.mark.parametrize("mode, count", [("smoke", 8), ("full", 64)])
def test_rollout_against_the_deployed_service(make_ctx: PhaseContexts, mode: str, count: int) -> None:
    pipeline = (
        HEAD
        + deploy_yaml()
        + "rollout:\n  run_cmds:\n    - echo \"$AIDER_LLM_MODEL $AIDER_EVAL_MODE\" > .aider_fsm/seen.txt\n"
        + "    - python3 rollout.py\n"
    )
    deploy = run_phase(make_ctx, "deploy_setup", pipeline, files=SERVICE_FILES, llm="model-x", mode=mode)
    ctx = deploy.ctx
    try:
        service_url(deploy.repo)
        run = run_phase(ctx, "rollout", require_samples=True)
        assert run.outcome.status == OK, run.outcome.error
        assert (run.repo / ".aider_fsm/seen.txt").read_text() == f"model-x {mode}\n"
        rollout = {"paths": {"samples_jsonl": SAMPLES_REL}, "counts": {"samples": count, "errors": 0}}
        assert run.outcome.data == {
            "rollout": rollout,
            "samples_path": str(run.repo / SAMPLES_REL),
            "sample_count": count,
            "samples_copy": "round_1/samples.jsonl",
        }
        assert guards.samples_valid(ctx)
        # The round keeps its own copies, which outlive the files in the repository.
        kept = ctx.run_dir / "round_1"
        assert (kept / "samples.jsonl").read_bytes() == (run.repo / SAMPLES_REL).read_bytes()
        assert json.loads((kept / "rollout.json").read_text()) == rollout
    finally:
        run_phase(ctx, "teardown")
    assert procs_in(deploy.repo) == []


def test_rollout_without_the_service_fails_with_the_script_error(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "rollout", HEAD + "rollout:\n  run_cmds: python3 rollout.py\n", files=SERVICE_FILES)
    error = run.outcome.error
    assert run.outcome.status == FAILED and error is not None
    assert error.kind == "command" and error.phase == "rollout"
    first, *tail = error.message.splitlines()
    assert first.startswith("command 1/1 `python3 rollout.py` exit code 1")
    assert tail and tail[-1].startswith("  | FileNotFoundError")  # no runtime env: nothing was deployed
    assert run.outcome.data == {}


@pytest.mark.parametrize("require_samples", [False, True])
def test_an_earlier_rollout_is_set_aside_and_never_passes(make_ctx: PhaseContexts, require_samples: bool) -> None:
    earlier = {ROLLOUT_REL: json.dumps({"paths": {"samples_jsonl": SAMPLES_REL}}), SAMPLES_REL: sample() + "\n"}
    pipeline = HEAD + "rollout:\n  run_cmds: 'echo wrote nothing'\n"
    run = run_phase(make_ctx, "rollout", pipeline, files=earlier, require_samples=require_samples)
    assert run.outcome.status == OK
    # rollout.json and the samples it named are both out of the way: nothing of the earlier rollout is read.
    assert not (run.repo / ROLLOUT_REL).exists() and not (run.repo / SAMPLES_REL).exists()
    assert (run.evidence / "previous.rollout.json").read_text() == earlier[ROLLOUT_REL]
    assert (run.evidence / "previous.samples.jsonl").read_text() == earlier[SAMPLES_REL]
    moved = [
        {"path": ROLLOUT_REL, "moved_to": "rollout/previous.rollout.json"},
        {"path": SAMPLES_REL, "moved_to": "rollout/previous.samples.jsonl"},
    ]
    assert run.outcome.data == {"rollout": None, "samples_path": None, "sample_count": 0, "set_aside": moved}
    assert run.summary()["data"]["set_aside"] == moved
    events = [json.loads(line) for line in (run.ctx.run_dir / "events.jsonl").read_text().splitlines()]
    reported = [{"path": e["path"], "moved_to": e["moved_to"]} for e in events if e["event"] == "output.set_aside"]
    assert reported == moved and not (run.ctx.run_dir / "round_1").exists()
    assert guards.samples_valid(run.ctx) is not require_samples
    if require_samples:
        message, where = guards.explain("samples_valid", run.ctx)
        assert message.startswith("guard samples_valid failed: .aider_fsm/rollout.json: file not found")
        assert where == str(run.repo / ROLLOUT_REL)


@pytest.mark.parametrize(
    "lines, rollout, require_samples, count, valid",
    [
        ([sample(), "", sample("b")], {}, False, 2, True),
        # unchecked: only lines that are JSON objects count
        ([sample(), "not json", "[1]", '{"open": ', sample("b")], {}, False, 2, True),
        ([sample(), "not json", sample("b")], {}, True, 2, False),
        ([sample(), sample("b")], {"counts": {"samples": 2, "errors": 2}}, True, 2, False),
        ([sample("")], {}, True, 1, False),
    ],
    ids=["blank-lines", "unchecked", "invalid-line", "mostly-errors", "blank-completions"],
)
def test_samples_are_counted_and_checked_by_the_guard(
    make_ctx: PhaseContexts, lines: list[str], rollout: dict[str, object], require_samples: bool, count: int,
    valid: bool,
) -> None:
    run = run_phase(make_ctx, "rollout", HEAD + COPY, files=outputs(lines, **rollout),
                    require_samples=require_samples)
    assert run.outcome.status == OK
    assert run.outcome.data["sample_count"] == count
    assert run.outcome.data["samples_path"] == str(run.repo / SAMPLES_REL)
    assert guards.samples_valid(run.ctx) is valid


def test_the_rounds_copy_of_the_samples_masks_secrets(make_ctx: PhaseContexts) -> None:
    secret = "sk-live-0123456789"
    lines = [sample(f"the key is {secret}"), sample("b")]
    run = run_phase(make_ctx, "rollout", HEAD + COPY, files=outputs(lines), secrets={"OPENAI_API_KEY": secret})
    assert run.outcome.status == OK and run.outcome.data["samples_copy"] == "round_1/samples.jsonl"
    kept = (run.ctx.run_dir / "round_1" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["completion"] for line in kept] == ["the key is ***", "b"]
    assert secret in (run.repo / SAMPLES_REL).read_text()  # the repository's file is the target's own


#: Counts a samples file in a fresh interpreter and prints the count and the peak RSS growth (KiB).
_COUNT_CHILD = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from fsm_runner.contract.outputs import count_json_lines
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = count_json_lines(Path(sys.argv[1]))
    print(count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    """
)


@pytest.mark.parametrize("size_mib", [64])
def test_a_huge_line_without_newline_counts_nothing_in_bounded_memory(tmp_path: Path, size_mib: int) -> None:
    samples = tmp_path / "samples.jsonl"
    with samples.open("wb") as fh:  # one line, no newline, far over the per-line limit
        fh.write(b'{"prompt": "' + b"x" * (size_mib << 20) + b'"}')
    proc = subprocess.run([sys.executable, "-c", _COUNT_CHILD, str(samples)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    count, growth_kib = map(int, proc.stdout.split())
    assert count == 0
    assert growth_kib < 32 * 1024, f"counting grew RSS by {growth_kib} KiB"
