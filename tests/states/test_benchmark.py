"""benchmark: an optional second measurement, checked like the evaluation but never required."""

from __future__ import annotations

import json

from fsm_runner.engine import guards
from fsm_runner.engine.outcome import OK, SKIPPED
from tests.helpers.phases import PhaseContexts, run_phase

HEAD = "version: 1\n"
EVALUATION = (
    "evaluation:\n  run_cmds: 'cp eval.src eval.json'\n  metrics_path: eval.json\n  required_keys: [ok, score]\n"
)


def benchmark(cmds: str = "cp bench.src bench.json", *, metrics_path: str | None = "bench.json",
              keys: str = "[ok, rps]") -> str:
    text = f"benchmark:\n  run_cmds: {json.dumps(cmds)}\n  required_keys: {keys}\n"
    return text + (f"  metrics_path: {metrics_path}\n" if metrics_path else "")


def test_no_benchmark_is_skipped_even_when_metrics_are_required(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "benchmark", HEAD + EVALUATION, require_metrics=True)
    assert run.outcome.status == SKIPPED
    assert run.outcome.reason == "pipeline.yml has no benchmark commands"
    assert run.stage_dir is None


def test_a_benchmark_without_metrics_path_is_not_a_contract_error(make_ctx: PhaseContexts) -> None:
    run = run_phase(make_ctx, "benchmark", HEAD + benchmark("touch measured", metrics_path=None), require_metrics=True)
    assert run.outcome.status == OK and run.outcome.data == {}
    assert (run.repo / "measured").exists()
    assert guards.has_required_keys(run.ctx)


def test_benchmark_and_evaluate_keep_their_own_metrics(make_ctx: PhaseContexts) -> None:
    files = {"eval.src": json.dumps({"ok": True, "score": 0.5}), "bench.src": json.dumps({"ok": True, "rps": 12.5})}
    evaluate = run_phase(make_ctx, "evaluate", HEAD + EVALUATION + benchmark(), files=files)
    run = run_phase(evaluate.ctx, "benchmark")
    assert run.outcome.status == OK
    assert run.outcome.data == {
        "metrics": {"ok": True, "rps": 12.5},
        "metrics_path": str(run.repo / "bench.json"),
        "metrics_copy": "round_1/benchmark.json",
    }
    run_dir = run.ctx.run_dir
    assert json.loads((run_dir / "benchmark.metrics.json").read_text()) == {"ok": True, "rps": 12.5}
    assert json.loads((run_dir / "evaluate.metrics.json").read_text()) == {"ok": True, "score": 0.5}
    assert json.loads((run_dir / "round_1" / "benchmark.json").read_text()) == {"ok": True, "rps": 12.5}
    assert json.loads((run_dir / "round_1" / "metrics.json").read_text()) == {"ok": True, "score": 0.5}
    assert run.evidence.name == "benchmark"
    assert guards.has_required_keys(run.ctx)  # checked against the benchmark's own keys


def test_the_guard_checks_the_benchmark_keys_while_benchmark_runs(make_ctx: PhaseContexts) -> None:
    files = {"bench.src": json.dumps({"ok": True, "score": 1.0})}  # has the evaluation's keys, not its own
    run = run_phase(make_ctx, "benchmark", HEAD + EVALUATION + benchmark(), files=files)
    assert run.outcome.status == OK
    message, evidence = guards.explain("has_required_keys", run.ctx)
    assert message == "guard has_required_keys failed: missing required keys: rps"
    assert evidence == str(run.repo / "bench.json")


def test_an_earlier_benchmark_result_is_set_aside(make_ctx: PhaseContexts) -> None:
    stale = json.dumps({"ok": True, "rps": 99.0})
    run = run_phase(make_ctx, "benchmark", HEAD + benchmark("true"), files={"bench.json": stale})
    assert run.outcome.status == OK and run.outcome.data["metrics"] is None
    assert (run.evidence / "previous.bench.json").read_text() == stale
    assert not (run.repo / "bench.json").exists()
    assert not guards.has_required_keys(run.ctx)
