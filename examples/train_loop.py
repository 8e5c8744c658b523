"""Drive examples/arith_bench from a training loop, in one of two ways.

    python examples/train_loop.py [TARGET]
    python examples/train_loop.py --submit [TARGET ...]

The first way is one session, one rollout + evaluation per checkpoint, in the loop itself: it prints one
line per checkpoint (``checkpoint exact: score=1.000``).

With ``--submit`` the loop does not wait: after each checkpoint is saved, one run per benchmark (TARGET)
starts in the background (``fsm_runner.submit``) and training goes on; the results are collected at the end
and printed as a table, benchmarks by checkpoints, with each score's change against the first checkpoint.

TARGET defaults to the arith_bench directory next to this script. The "checkpoints" are the names of two
models the arith_bench server serves: ``exact`` (always right) and ``sloppy`` (wrong on about a quarter of
the prompts). In a real loop the llm would be a checkpoint directory (a local model) or a served model name.
Exits 1 when a call or a run fails.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import fsm_runner

CHECKPOINTS = ("exact", "sloppy")
DEFAULT_TARGET = Path(__file__).resolve().parent / "arith_bench"


def train_one_step(checkpoint: str) -> None:
    """Stands for a training step that ends by saving ``checkpoint``."""
    time.sleep(0.2)


def main_submit(targets: list[str]) -> int:
    """Submit each saved checkpoint to every benchmark, train on, collect and print the table at the end."""
    benchmarks = [str(Path(t).resolve()) for t in targets] or [str(DEFAULT_TARGET)]
    handles = []
    for llm in CHECKPOINTS:
        train_one_step(llm)
        for bench in benchmarks:
            try:
                handles.append(fsm_runner.submit(bench, llm))  # returns at once; the run goes on meanwhile
            except fsm_runner.FsmRunnerError as exc:
                print(f"train_loop: cannot submit {llm} to {bench}: {exc}", file=sys.stderr)
                for handle in handles:
                    handle.cancel()
                return 1
        print(f"checkpoint {llm} saved; scoring it on {len(benchmarks)} benchmark(s) in the background")
    rows = [handle.result() for handle in handles]
    for row in rows:
        if not row.ok:
            print(f"train_loop: {row.llm} on {row.target} failed: {row.error}", file=sys.stderr)
    print(fsm_runner.compare(rows).to_text())  # benchmarks by checkpoints, deltas against the first
    return 0 if all(row.ok for row in rows) else 1


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--submit":
        return main_submit(argv[1:])
    target = Path(argv[0]) if argv else DEFAULT_TARGET
    try:
        sess = fsm_runner.setup(target)  # clone phase only; bootstrap runs with the first rollout
    except fsm_runner.FsmRunnerError as exc:
        print(f"train_loop: setup failed: {exc}", file=sys.stderr)
        return 1
    with sess:  # close() tears down whatever is still deployed, whatever happens below
        for llm in CHECKPOINTS:
            rolled = sess.rollout(llm=llm, mode="smoke", require_samples=True)
            if not rolled.ok:
                print(f"train_loop: rollout of {llm} failed: {rolled.error}", file=sys.stderr)
                return 1
            result = sess.evaluate()  # same llm and mode as the rollout; tears the server down after
            if not result.ok or result.score is None:
                print(f"train_loop: evaluation of {llm} failed: {result.error}", file=sys.stderr)
                return 1
            print(f"checkpoint {llm}: score={float(result.score):.3f} ({rolled.sample_count} samples)")
    print(f"evidence: {sess.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
