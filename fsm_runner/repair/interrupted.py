"""A repair the runner was killed in: what replay does before anything of the run is read or run again.

The agent's changes were never checked (the runner died while it ran). Replay ends the agent, puts the
contract files back to their bytes from before the repair (kept in the run dir), and refuses, naming them,
when other files the guardrails would have undone changed since ``before.json`` was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from attrs import define

from fsm_runner.engine import topology
from fsm_runner.engine.leftovers import Leftovers, end_dead_runs
from fsm_runner.errors import ReplayError
from fsm_runner.evidence.atomic import write_json_atomic
from fsm_runner.evidence.contract_copies import exact_copy
from fsm_runner.evidence.layout import AGENT_PROCESS, REPAIR_BEFORE, REPAIR_DIR_GLOB, REPAIR_PROVENANCE
from fsm_runner.evidence.records import RunState, TransitionRecord
from fsm_runner.evidence.redaction import Redactor
from fsm_runner.repair.agents import end_agent_processes
from fsm_runner.repair.guardrails import UNREADABLE, FileState, matches_any, restore_file, snapshot_repo
from fsm_runner.typing import EventLogger

__all__ = ["interrupted_repair_note", "undo_interrupted_repair"]


@define(frozen=True)
class _RepairUndo:
    """What replay does about a repair whose guardrails never ran: the contract files to put back (None:
    remove what the agent created) and the other paths that changed, which replay cannot put back."""

    work_dir: Path
    restore: tuple[tuple[str, FileState | None], ...]
    refused: tuple[str, ...]

    def describe(self) -> str:
        start = f"the runner was killed while the agent of {self.work_dir.name} ran"
        if self.refused:
            return (
                f"{start}, and since it started these changed where the agent may not write: "
                f"{', '.join(self.refused)}; replay refuses until they are as they were before the repair "
                "(for example `git checkout -- PATH`), or start a new run"
            )
        if self.restore:
            return f"{start}; replay ends it and puts back {', '.join(r for r, _ in self.restore)} first"
        return f"{start}; replay ends it first (nothing it may not change was changed)"


def _unfinished_repair(run_dir: Path, records: tuple[TransitionRecord, ...]) -> Path | None:
    """The evidence dir of the repair the runner died in, when the journal ends in it and the guardrails
    never ran (``before.json`` but no ``provenance.json``)."""
    if records[-1].dest != topology.REPAIR:
        return None
    numbered = []
    for path in run_dir.glob(REPAIR_DIR_GLOB):
        suffix = path.name.rpartition("_")[2]
        if suffix.isdigit() and path.is_dir():
            numbered.append((int(suffix), path))
    if not numbered:
        return None
    work = max(numbered)[1]
    if not (work / REPAIR_BEFORE).is_file() or (work / REPAIR_PROVENANCE).exists():
        return None
    return work


def _plan_undo(run_dir: Path, repo: Path, work: Path) -> _RepairUndo:
    """Compare the tree with ``before.json``: contract files come back from the run dir's copies; anything
    else the guardrails would have undone that changed is refused (its old bytes are not kept)."""
    record = work / REPAIR_BEFORE
    try:
        doc = json.loads(record.read_text(encoding="utf-8"))
        contract: dict[str, str | None] = dict(doc["contract"])
        files: dict[str, dict[str, Any]] = dict(doc["files"])
        allowed, guarded = list(doc["allowed_globs"]), list(doc["protected"])
        exclude, unreadable = list(doc["exclude"]), list(doc.get("unreadable", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReplayError(
            f"{record}: cannot be read ({exc}); the runner was killed during this repair, so replay cannot "
            "tell what the agent changed; start a new run"
        ) from None
    now = snapshot_repo(repo, exclude=exclude, keep_content=False, opaque=unreadable)
    restore: list[tuple[str, FileState | None]] = []
    refused: list[str] = []
    for rel, sha in contract.items():
        current = now.files.get(rel)
        if (current.sha256 if current is not None else None) == sha:
            continue
        if sha is None:
            restore.append((rel, None))
            continue
        data = exact_copy(run_dir, sha, rel) if sha != UNREADABLE else None
        if data is None:
            refused.append(f"{rel} (its bytes before the repair are not kept, or kept masked)")
            continue
        mode = files.get(rel, {}).get("mode")
        restore.append((rel, FileState(sha, data, mode if isinstance(mode, int) else 0o100644)))
    for path in sorted(set(files) | set(now.files)):
        if path in contract or any(path == u or path.startswith(u + "/") for u in unreadable):
            continue
        old, new = files.get(path), now.files.get(path)
        if old is None:
            if new is not None and (matches_any(path, guarded) or not matches_any(path, allowed)):
                refused.append(f"{path} (added)")
        elif new is None:
            refused.append(f"{path} (deleted)")
        elif (new.sha256, new.mode) != (old.get("sha256"), old.get("mode")):
            refused.append(f"{path} (modified)")
    return _RepairUndo(work, tuple(restore), tuple(refused))


def interrupted_repair_note(
    run_dir: Path, repo: Path, records: tuple[TransitionRecord, ...]
) -> tuple[str, bool]:
    """For the dry run: what replay would do about a repair the runner was killed in (empty when there
    is none), and whether it would refuse."""
    work = _unfinished_repair(run_dir, records)
    if work is None:
        return "", False
    try:
        undo = _plan_undo(run_dir, repo, work)
    except ReplayError as exc:
        return str(exc), True
    return undo.describe(), bool(undo.refused)


def undo_interrupted_repair(
    run_dir: Path,
    run: RunState,
    repo: Path,
    records: tuple[TransitionRecord, ...],
    log: EventLogger,
    redactor: Redactor,
) -> list[Leftovers]:
    """A runner killed while a repair agent ran never checked what the agent did. Before anything of the run
    is read or run again: end the agent (its group, and what carries its mark), put the contract files back
    to their bytes before the repair, and refuse, naming them, when other files the guardrails would have
    undone changed. Returns what was ended."""
    work = _unfinished_repair(run_dir, records)
    if work is None:
        return []
    ended = end_dead_runs(None, log=log, target=run.target, own=run_dir)
    try:
        agent = json.loads((work / AGENT_PROCESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        agent = None
    if isinstance(agent, dict) and isinstance(agent.get("pgid"), int):
        leader, mark = agent.get("leader_start"), agent.get("mark")
        leader = leader if isinstance(leader, int) else None
        end_agent_processes(agent["pgid"], leader, mark if isinstance(mark, str) else None)
    undo = _plan_undo(run_dir, repo, work)
    restored = []
    for rel, state in undo.restore:
        try:
            if state is None:
                (repo / rel).unlink(missing_ok=True)
            else:
                restore_file(repo, rel, state)
        except OSError as exc:
            raise ReplayError(
                f"the runner was killed while the agent of {work.name} ran, and {repo / rel} cannot be put "
                f"back to its bytes before the repair ({exc.strerror or exc}); restore it by hand or start a "
                "new run"
            ) from None
        restored.append(rel)
    if undo.refused:
        log.warning("replay.repair_refused", repair=work.name, restored=restored, changed=list(undo.refused))
        raise ReplayError(undo.describe())
    note = f"the runner was killed while the agent ran; replay put back {', '.join(restored) or 'nothing'}"
    write_json_atomic(
        work / REPAIR_PROVENANCE,
        redactor.scrub({"interrupted": True, "restored": restored, "notes": [note]}),
    )
    log.info("replay.repair_undone", repair=work.name, restored=restored)
    return ended
