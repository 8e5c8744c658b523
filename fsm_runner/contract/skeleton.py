"""The commented starter contract ``fsm-runner init`` writes.

The skeleton validates as it is, and its evaluation placeholder fails with a message naming the line to
edit: a fresh contract must never report a score nobody computed. ``init --from-pytest`` writes a complete
contract instead, whose score is the pass rate of the repository's pytest suite.
"""

from __future__ import annotations

import os
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
#   max_output_bytes: 67108864      # cap of each command output file (its head and tail are kept)
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

PYTEST_PIPELINE = """\
# pipeline.yml (version 1), written by `fsm-runner init --from-pytest`: the score is the pass rate of this
# repository's pytest suite. You own this file; repair agents may not edit it. Check it with
# `fsm-runner validate`; the pattern is described in docs/integration.md, "Scores from a test suite".
#
# There is no `tests` section on purpose: a failing test would fail that phase, and the evaluation, which
# turns failing tests into a lower score, would never run.
version: 1

security:
  mode: safe
  max_cmd_seconds: 1800      # the whole suite is one command

evaluation:
  # $AIDER_FSM_PYTHON is the interpreter running fsm-runner: it has fsm_runner.junit, whatever `python3` on
  # PATH is. To test in the project's own environment, write that interpreter (e.g. .venv/bin/python) in
  # the first two commands instead; it needs pytest installed.
  run_cmds:
    - '"$AIDER_FSM_PYTHON" -m pytest --version'   # a missing pytest fails here, not as an empty report
    # pytest exits 1 when tests fail: that still scores. 2 and above (interrupted, internal or usage
    # error, no tests collected) fail the phase.
    - '"$AIDER_FSM_PYTHON" -m pytest -q -p no:cacheprovider --junitxml=.aider_fsm/junit.xml || test $? -le 1'
    - '"$AIDER_FSM_PYTHON" -m fsm_runner.junit .aider_fsm/junit.xml -o .aider_fsm/metrics.json'
  metrics_path: .aider_fsm/metrics.json   # {"ok": true, "score": 0.75, "passed": 3, "failed": 1, ...}
  required_keys: [ok, {score: number}, {total: integer}]   # a key may name the JSON type of its value
"""  # noqa: E501

SKELETON: tuple[tuple[str, str], ...] = ((PIPELINE_REL, PIPELINE), (BOOTSTRAP_REL, BOOTSTRAP))
#: The interpreter the pytest contract runs, rather than whatever `python3` on PATH is.
PYTEST_BOOTSTRAP = BOOTSTRAP.replace("  - python3 --version\n", "  - '\"$AIDER_FSM_PYTHON\" --version'\n")
PYTEST_SKELETON: tuple[tuple[str, str], ...] = (
    (PIPELINE_REL, PYTEST_PIPELINE),
    (BOOTSTRAP_REL, PYTEST_BOOTSTRAP),
)

#: Files that configure pytest, and the section that does in files shared with other tools.
_PYTEST_CONFIGS = (
    ("pytest.ini", None),
    ("pyproject.toml", "[tool.pytest.ini_options]"),
    ("setup.cfg", "[tool:pytest]"),
    ("tox.ini", "[pytest]"),
    ("conftest.py", None),
)
_TEST_DIRS = ("tests", "test")


def _is_test_file(name: str) -> bool:
    """A file pytest collects with its default ``python_files``."""
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def pytest_suite(directory: Path) -> str | None:
    """What makes ``directory`` a repository with a pytest suite, or None when nothing does.

    The rule: a pytest configuration at the top (pytest.ini, ``[tool.pytest.ini_options]`` in pyproject.toml,
    ``[tool:pytest]`` in setup.cfg, ``[pytest]`` in tox.ini, conftest.py), or a file pytest collects by
    default (``test_*.py``, ``*_test.py``) at the top or anywhere under ``tests/`` or ``test/``.
    """
    root = Path(directory)
    for name, section in _PYTEST_CONFIGS:
        path = root / name
        try:
            if path.is_file() and (section is None or section in path.read_text(errors="replace")):
                return name if section is None else f"{section} in {name}"
        except OSError:
            continue
    try:
        top = sorted(p.name for p in root.iterdir() if p.is_file() and _is_test_file(p.name))
    except OSError:
        return None
    if top:
        return top[0]
    for folder in _TEST_DIRS:
        if not (root / folder).is_dir():
            continue
        for base, dirs, files in os.walk(root / folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            found = sorted(name for name in files if _is_test_file(name))
            if found:
                return (Path(base) / found[0]).relative_to(root).as_posix()
    return None


def write_skeleton(directory: Path, *, force: bool = False, from_pytest: bool = False) -> list[Path]:
    """Write the skeleton into ``directory`` (created when missing) and return the files written.

    With ``from_pytest``, the contract that scores the pass rate of the directory's pytest suite; a
    directory without one (see :func:`pytest_suite`) is refused. Raises :class:`UsageError` naming every
    existing file unless ``force`` is set, before writing anything.
    """
    root = Path(directory)
    if from_pytest and pytest_suite(root) is None:
        raise UsageError(
            f"{root} has no pytest suite: no pytest configuration (pytest.ini, [tool.pytest.ini_options] in "
            "pyproject.toml, [tool:pytest] in setup.cfg, [pytest] in tox.ini, conftest.py) and no "
            "test_*.py or *_test.py at the top or under tests/ or test/; run init --from-pytest in the "
            "repository's root, or plain init to write the contract by hand"
        )
    targets = [(root / rel, text) for rel, text in (PYTEST_SKELETON if from_pytest else SKELETON)]
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
