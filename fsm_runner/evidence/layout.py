"""Every file name the runner reads or writes, in the target repo and in a run directory.

A run directory (``<repo>/.aider_fsm/artifacts/<run_id>/`` by default; for a git URL
``<clones>/<entry>.runs/<run_id>/``)::

    run.json  journal.jsonl  events.jsonl  .lock
    contract/<sha256>.<name>     every contract file the run ran with (pipeline.yml, bootstrap.yml), by hash
    <phase>[.N]/cmdNN_tryMM.{json,stdout,stderr}  <phase>[.N]/summary.json
    repair_NN/{request.json,prompt.md,before.json,agent_output.log,agent_process.json,reply.json,provenance.json}
    round_N/{rollout.json,samples.jsonl,metrics.json,benchmark.json}

Nothing else in the package spells these names out, so a reader of this module knows the whole layout.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

# -- the target repository's contract files ------------------------------------------------------------

PIPELINE_REL = "pipeline.yml"
AIDER_DIR = ".aider_fsm"
BOOTSTRAP_REL = f"{AIDER_DIR}/bootstrap.yml"
ACTIONS_REL = f"{AIDER_DIR}/actions.yml"
ROLLOUT_REL = f"{AIDER_DIR}/rollout.json"
RUNTIME_ENV_REL = f"{AIDER_DIR}/runtime_env.json"
DEFAULT_OUT_DIR = f"{AIDER_DIR}/artifacts"
#: Held by the one live run of a local tree (it names that run); see :mod:`fsm_runner.evidence.lock`.
TREE_LOCK_REL = f"{AIDER_DIR}/tree.lock"
#: What a repair agent may edit unless told otherwise.
AGENT_AREA = f"{AIDER_DIR}/**"

# -- the clone cache of git targets ---------------------------------------------------------------------
#
#   <clones>/<entry>/                    the shared clone of one URL (fetched, never checked out)
#   <clones>/<entry>.lock                flock'ed while the clone or its checkouts change
#   <clones>/<entry>.runs/<run_id>/      the URL's run directories (unless artifacts_dir is given)
#   <clones>/<entry>.checkouts/<run_id>/ one run's private checkout (a git worktree of the clone)
#   <clones>/<entry>.checkouts/<run_id>.run   the path of the run directory that checkout belongs to

CLONE_LOCK_SUFFIX = ".lock"
CLONE_RUNS_SUFFIX = ".runs"
CLONE_CHECKOUTS_SUFFIX = ".checkouts"
CHECKOUT_OWNER_SUFFIX = ".run"


def clone_lock(clone: Path) -> Path:
    return clone.with_name(clone.name + CLONE_LOCK_SUFFIX)


def clone_runs_dir(clone: Path) -> Path:
    """Where the runs of a git URL live: beside its clone, so they outlive every checkout."""
    return clone.with_name(clone.name + CLONE_RUNS_SUFFIX)


def clone_checkouts_dir(clone: Path) -> Path:
    return clone.with_name(clone.name + CLONE_CHECKOUTS_SUFFIX)


def checkout_owner(checkout: Path) -> Path:
    """The file beside a checkout that names the run directory it belongs to."""
    return checkout.with_name(checkout.name + CHECKOUT_OWNER_SUFFIX)


# -- a run directory -------------------------------------------------------------------------------------

RUN_JSON = "run.json"
JOURNAL = "journal.jsonl"
EVENTS = "events.jsonl"
LOCK = ".lock"
WRITE_PROBE = ".fsm-runner-write-probe"
#: Copies of the contract files the run ran with, one per content hash (see :func:`contract_copy`).
CONTRACT_DIR = "contract"


def contract_copy(sha256: str, rel: str) -> str:
    """``contract/<sha256>.pipeline.yml``: the run dir's copy of contract file ``rel`` with that hash."""
    return f"{CONTRACT_DIR}/{sha256}.{PurePosixPath(rel).name}"


# -- inside a phase's evidence dir -------------------------------------------------------------------------

SUMMARY = "summary.json"
#: The three files of one command attempt: ``cmdNN_tryMM`` plus these.
RESULT_SUFFIX, STDOUT_SUFFIX, STDERR_SUFFIX = ".json", ".stdout", ".stderr"
BOOTSTRAP_SNAPSHOT = "bootstrap.snapshot.json"
APPLIED_ENV = "applied_env.json"
ACTIONS_DIR = "actions"
ACTIONS_SNAPSHOT = "actions.snapshot.json"
ACTIONS_RECORD = "actions.json"
ACTIONS_REJECTED = "actions.rejected.yml"
KUBECTL_DIR = "kubectl"

# -- inside a repair_NN dir ----------------------------------------------------------------------------------

REPAIR_REQUEST = "request.json"
REPAIR_PROMPT = "prompt.md"
REPAIR_REPLY = "reply.json"
REPAIR_PROVENANCE = "provenance.json"
AGENT_OUTPUT = "agent_output.log"
#: The command agent's process group while it runs (``"running": false`` once it ended).
AGENT_PROCESS = "agent_process.json"
#: The contract's hashes and the guarded files before the agent ran, written before it starts: a runner
#: killed during the repair leaves it without ``provenance.json``, and replay undoes the repair from it.
REPAIR_BEFORE = "before.json"

# -- inside a round_N dir: what one rollout + evaluate round produced, kept after the checkout is gone ---

ROUND_ROLLOUT = "rollout.json"
ROUND_SAMPLES = "samples.jsonl"
#: The metrics of ``evaluate`` and ``benchmark`` in a round.
ROUND_METRICS = {"evaluate": "metrics.json", "benchmark": "benchmark.json"}


def contract_rel_problem(rel: str) -> str | None:
    """Why ``rel`` cannot name a contract file inside the repository (None when it can)."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith("/") or ".." in parts:
        return f"{rel!r} must be a path inside the repository, relative to its root, without '..'"
    return None


def single_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one path component (a run id), or None."""
    if not name or "/" in name or name in (".", ".."):
        return f"{name!r} must be a single path component"
    return None


def new_run_id() -> str:
    """A run id that sorts by creation time: ``20261125T153349Z-a1b2c3``.

    The random suffix keeps two runs started in the same second apart.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(3).hex()}"


def attempt_name(index: int, attempt: int) -> str:
    """``cmdNN_tryMM``: the stem of one attempt's ``.json``, ``.stdout`` and ``.stderr``."""
    return f"cmd{index:02d}_try{attempt:02d}"


#: Every attempt's ``.json`` under a run dir (for ``Path.rglob``).
ATTEMPT_RESULT_GLOB = f"cmd*_try*{RESULT_SUFFIX}"


def stage_dir_name(phase: str, count: int) -> str:
    """``<phase>`` for a phase's first execution in a run, then ``<phase>.2``, ``<phase>.3``, ..."""
    return phase if count == 1 else f"{phase}.{count}"


def repair_dir_name(count: int) -> str:
    return f"repair_{count:02d}"


#: Every ``repair_NN`` dir of a run (for ``Path.glob``).
REPAIR_DIR_GLOB = "repair_[0-9]*"


def round_dir_name(number: int) -> str:
    """``round_1``, ``round_2``, ...: one per rollout + evaluate round of a session."""
    return f"round_{number}"


def round_file(number: int, name: str) -> str:
    """A file of round ``number``, relative to the run dir (``round_2/samples.jsonl``)."""
    return f"{round_dir_name(number)}/{name}"


def metrics_copy(phase: str) -> str:
    """The latest metrics of ``evaluate`` / ``benchmark``, kept at a fixed place in the run dir."""
    return f"{phase}.metrics.json"


def set_aside_name(name: str) -> str:
    """Where an output left by an earlier run is moved before a phase writes it again."""
    return f"previous.{name}"


# -- a sweep directory ----------------------------------------------------------------------------------
#
#   <out_dir>/results.jsonl   one row per finished cell, appended (a later row of a cell replaces it)
#   <out_dir>/sweep.json      the sweep's manifest

SWEEP_RESULTS = "results.jsonl"
SWEEP_MANIFEST = "sweep.json"
