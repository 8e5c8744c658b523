"""Drive examples/arith_bench from a training loop: one session, one rollout + evaluation per checkpoint.

    python examples/train_loop.py [TARGET]

TARGET defaults to the arith_bench directory next to this script. The "checkpoints" are the names of two
models the arith_bench server serves: ``exact`` (always right) and ``sloppy`` (wrong on about a quarter of
the prompts). In a real loop the llm would be a checkpoint directory (a local model) or a served model name.
Prints one line per checkpoint (``checkpoint exact: score=1.000``) and exits 1 when a call fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fsm_runner

CHECKPOINTS = ("exact", "sloppy")
DEFAULT_TARGET = Path(__file__).resolve().parent / "arith_bench"


def main(argv: list[str]) -> int:
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
