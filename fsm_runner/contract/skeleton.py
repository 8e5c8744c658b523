"""The commented starter contract ``fsm-runner init`` writes.

The skeleton validates as it is, and its evaluation placeholder fails with a message naming the line to
edit: a fresh contract must never report a score nobody computed.
"""

from __future__ import annotations

from pathlib import Path

from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.atomic import write_text_atomic
from fsm_runner.evidence.layout import BOOTSTRAP_REL, PIPELINE_REL

PIPELINE = """\
# pipeline.yml (version 1): how fsm-runner runs this repository. You own this file; repair agents may not
# edit it. Check it with `fsm-runner validate`; editors can use the JSON Schema from `fsm-runner schema`.
#
# Every section is optional except `version`; a missing section is skipped (and the skip is recorded).
# A string where a list of commands is expected is one command. Commands run with `bash -c` from the
# repository root. Every stage also accepts: timeout_seconds, retries, env (a NAME: value map) and
# workdir (relative to the repository root).
version: 1

security:
  mode: safe                 # safe: blocks sudo, mkfs, shutdown, ...; system: only the hard-deny set
  max_cmd_seconds: 600       # timeout of a command when its stage sets no timeout_seconds
  # allowlist: ['^(python3?|pytest|make)\\b']   # when set, every command must match one of these regexes
  # denylist: ['rm\\s+-rf\\s+~']                # commands matching these are always refused
  # sandbox: bwrap           # commands run under bubblewrap: read-only system, repo + run dir writable
  # network: none            # with the sandbox: the run's own loopback only, not the host's network

# tests:
#   cmds:
#     - python3 -m pytest -q

# auth:
#   cmds: test -n "$HF_TOKEN"    # fails early when a credential the run needs is missing

# deploy:                        # services that rollout and evaluation talk to, on the run's own port:
#   setup_cmds:                  # $AIDER_FSM_PORT (free when the run started), so runs can go side by side
#     - python3 server.py --port "$AIDER_FSM_PORT" > .aider_fsm/server.log 2>&1 & echo $! > .aider_fsm/server.pid
#   health_cmds: curl -fsS "http://127.0.0.1:$AIDER_FSM_PORT/health"   # polled with backoff until it passes
#   teardown_cmds:               # stops the server this run started, by its pid; never another run's
#     - p=.aider_fsm/server.pid; if [ -f $p ]; then kill "$(cat $p)" 2>/dev/null; rm -f $p; fi
#   # after teardown_cmds, the runner also ends whatever the deploy commands left running
#   teardown_policy: always       # always | on_success | on_failure | never
#   timeout_seconds: 120

# rollout:                       # must write .aider_fsm/rollout.json whose paths.samples_jsonl names a
#   run_cmds:                    # JSONL file of {"prompt", "completion", "reward"} lines; the model is in
#     - python3 rollout.py       # $AIDER_LLM_MODEL (remote) or $AIDER_TRAINED_MODEL_DIR (local)

evaluation:
  run_cmds:
    # TODO: replace this placeholder with the command that scores the model and writes metrics_path,
    # e.g. `python3 evaluate.py --out .aider_fsm/metrics.json`.
    - echo "pipeline.yml evaluation.run_cmds is still the placeholder from fsm-runner init" >&2; exit 1
  metrics_path: .aider_fsm/metrics.json   # a JSON object, e.g. {"ok": true, "score": 0.87}
  required_keys: [ok, score]     # listing `ok` means it must be exactly true

# benchmark:                     # same fields as evaluation
#   run_cmds: python3 bench.py --out .aider_fsm/bench.json
#   metrics_path: .aider_fsm/bench.json
#   required_keys: [ok]

# artifacts:
#   out_dir: .aider_fsm/artifacts   # where each run's evidence goes
"""  # noqa: E501

BOOTSTRAP = """\
# .aider_fsm/bootstrap.yml (version 1): prepares the checkout once, before every other stage.
# `env` applies to bootstrap and to every later stage.
version: 1

cmds:
  - python3 --version
  # - test -d .venv || python3 -m venv .venv
  # - .venv/bin/pip install -q -r requirements.txt

env:
  PATH: .venv/bin:$PATH          # relative PATH entries are made absolute against the repository root
  # HF_HOME: ${HOME}/.cache/huggingface   # $VAR and ${VAR} expand; $$ is a literal $
"""

SKELETON: tuple[tuple[str, str], ...] = ((PIPELINE_REL, PIPELINE), (BOOTSTRAP_REL, BOOTSTRAP))


def write_skeleton(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the skeleton into ``directory`` (created when missing) and return the files written.

    Raises :class:`UsageError` naming every existing file unless ``force`` is set, before writing anything.
    """
    root = Path(directory)
    targets = [(root / rel, text) for rel, text in SKELETON]
    try:
        if root.exists() and not root.is_dir():
            raise UsageError(f"{root} is not a directory")
        existing = [str(path) for path, _ in targets if path.exists()]
        if existing and not force:
            verb = "exists" if len(existing) == 1 else "exist"
            raise UsageError(f"{', '.join(existing)} already {verb}; pass --force to overwrite")
        written = []
        for path, text in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
            written.append(path)
    except EvidenceError as exc:  # the atomic writer names the file and the reason
        raise UsageError(f"{exc}; run init in a directory you can write") from None
    except OSError as exc:
        where = exc.filename or root
        raise UsageError(
            f"cannot create {where}: {exc.strerror}; run init in a directory you can write"
        ) from None
    return written
