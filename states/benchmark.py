"""benchmark: an optional second measurement (latency, throughput), checked like the evaluation."""

from __future__ import annotations

from fsm_runner.states.evaluate import EvaluatePhase


class BenchmarkPhase(EvaluatePhase):
    name = "benchmark"
    section_name = "benchmark"
