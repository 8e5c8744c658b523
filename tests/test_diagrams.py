from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from transitions import Machine

import fsm_runner
from fsm_runner.diagrams import (
    FAILED_IN_PHASE,
    PHASE_GUARD,
    START,
    clusters,
    diagram,
    diagram_from_records,
    drawn_arrows,
    marks_from_records,
    readable_arrows,
    render,
    transition_label,
)
from fsm_runner.engine import topology
from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.journal import Journal
from fsm_runner.evidence.layout import JOURNAL
from fsm_runner.evidence.records import Outcome, TransitionRecord
from tests.conftest import TargetFactory
from tests.helpers import target_files as files
from tests.helpers.mermaid_check import check_mermaid
from tools.diagram_docs import DOCS_PATH, REGENERATE, docs_diagram, stale_docs, write_docs

HAPPY_START = [
    ("phase_done", "clone", "bootstrap", {}),
    ("phase_done", "bootstrap", "auth", {}),
    ("phase_skipped", "auth", "tests", {}),
    ("phase_done", "tests", "deploy_setup", {}),
    ("phase_done", "deploy_setup", "health", {}),
    ("phase_done", "health", "rollout", {"is_healthy": True}),
    ("phase_done", "rollout", "evaluate", {"samples_valid": True}),
]
#: Failed at evaluate after one repair loop, then the cleanup self-loop of ``failed``.
FAILED_AFTER_REPAIR = [
    *HAPPY_START,
    ("phase_done", "evaluate", "repair", {"has_required_keys": False, "can_repair": True}),
    ("retry", "repair", "evaluate", {"failed_in_evaluate": True, "contract_intact": True}),
    ("phase_failed", "evaluate", "failed", {"can_repair": False}),
    ("cleanup", "failed", "failed", {}),
]
NODE_DECL = re.compile(r'^\s*"(?P<id>[^"]+)"(?:\s*\[.*\])?;$')
EDGE_DECL = re.compile(r'^\s*"(?P<src>[^"]+)" -> "(?P<dst>[^"]+)"(?P<attrs>\s*\[.*\])?;$')


def write_journal(run_dir: Path, steps: list[tuple[str, str, str, dict[str, bool]]]) -> list[TransitionRecord]:
    """Records in the driver's shape, written by the real journal writer."""
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal.open(run_dir)
    records = []
    for number, (trigger, source, dest, guards) in enumerate(steps):
        records.append(
            journal.append(
                trigger=trigger,
                source=source,
                dest=dest,
                guards=guards,
                outcome=None if trigger in ("retry", "restart") else Outcome(phase=source, status="ok"),
                repairs_used=1 if number >= len(HAPPY_START) else 0,
                status="failed" if dest == "failed" else "running",
            )
        )
    return records


class Replayer:
    """Guard results replayed from journal records, to prove a synthetic journal is a legal path."""

    def __init__(self) -> None:
        self.results: dict[str, bool] = {}
        for name in topology.GUARD_NAMES:
            setattr(self, name, lambda name=name: self.results.get(name, False))


def assert_legal_path(records: list[TransitionRecord]) -> None:
    model = Replayer()
    Machine(model=model, **topology.machine_config(records[0].source))
    for record in records:
        model.results = record.guards
        model.trigger(record.trigger)  # type: ignore[attr-defined]
        assert model.state == record.dest, record  # type: ignore[attr-defined]


def mermaid_classes(text: str) -> dict[str, set[str]]:
    classes: dict[str, set[str]] = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"\s*class (\S+) (\w+)", line):
            classes.setdefault(match[2], set()).update(match[1].split(","))
    return classes


def mermaid_edge(text: str, source: str, dest: str) -> str:
    found = [line.strip() for line in text.splitlines() if line.strip().startswith(f"{source} --> {dest} :")]
    assert len(found) == 1, (source, dest, found)
    return found[0]


def dot_structure(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Nodes and edges of fsm-runner's DOT output, asserting balanced braces and known statement forms.

    An edge clipped at a cluster's box (``ltail``/``lhead``) is returned with the cluster's name as its end.
    """
    nodes, edges, _ = dot_graph(text)
    return nodes, edges


def dot_graph(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]], dict[str, list[str]]]:
    """:func:`dot_structure` plus each cluster's member nodes (nested clusters' members included)."""
    assert text.count("{") == text.count("}") >= 1
    assert re.search(r"^digraph fsm_runner \{$", text, re.M) and text.rstrip().endswith("}")
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    clusters: dict[str, list[str]] = {}
    open_clusters: list[str] = []
    body = text[text.index("{") + 1 : text.rindex("}")]
    for line in body.splitlines():
        stripped = line.strip()
        if (
            not stripped
            or stripped.startswith("//")
            or re.fullmatch(r"(rankdir=LR|compound=true|(node|edge) \[.*\]);", stripped)
        ):
            continue
        if match := re.fullmatch(r'subgraph "cluster_(\w+)" \{', stripped):
            open_clusters.append(match[1])
            clusters[match[1]] = []
        elif stripped == "}":
            assert open_clusters, "'}' closes no subgraph"
            open_clusters.pop()
        elif re.fullmatch(r'label="\w+"; style="[\w,]+"; color="#[0-9a-f]{6}";', stripped):
            assert open_clusters, stripped
        elif match := EDGE_DECL.match(stripped):
            attrs = match["attrs"] or ""
            tail = re.search(r'ltail="cluster_(\w+)"', attrs)
            head = re.search(r'lhead="cluster_(\w+)"', attrs)
            if tail:
                assert match["src"] in clusters[tail[1]], stripped
            if head:
                assert match["dst"] in clusters[head[1]], stripped
            edges.append((tail[1] if tail else match["src"], head[1] if head else match["dst"], attrs))
        elif match := NODE_DECL.match(stripped):
            nodes[match["id"]] = stripped
            for cluster in open_clusters:
                clusters[cluster].append(match["id"])
        else:
            raise AssertionError(f"unexpected DOT statement: {stripped!r}")
    assert not open_clusters, f"subgraphs not closed: {open_clusters}"
    return nodes, edges, clusters


def mermaid_arrows(text: str) -> list[tuple[str, str, str]]:
    """Every ``a --> b : label`` line of a Mermaid diagram as (source, dest, label)."""
    found = []
    for line in text.splitlines():
        if match := re.fullmatch(r"\s*(\S+) --> (\S+)(?: : (.*))?", line):
            found.append((match[1], match[2], match[3] or ""))
    return found


def mermaid_blocks(text: str) -> dict[str, list[str]]:
    """The states named inside each ``state NAME {`` block (nested blocks' states included)."""
    blocks: dict[str, list[str]] = {}
    stack: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if match := re.fullmatch(r"state (\w+) \{", stripped):
            stack.append(match[1])
            blocks[match[1]] = []
        elif stripped == "}":
            stack.pop()
        elif match := re.fullmatch(r"(\S+) --> (\S+)(?: : .*)?|state \"\w+\" as (\w+)", stripped):
            for block in stack:
                blocks[block].extend(n for n in match.groups() if n and n not in blocks[block])
    return blocks


# -- the machine ----------------------------------------------------------------------------------------


RETRY_GUARDS = {topology.retry_guard(p) for p in topology.PHASES}


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_machine_diagram_names_every_state_trigger_and_guard(fmt: str, full: bool) -> None:
    text = diagram(fmt, full=full)
    words = set(
        re.findall(r"[A-Za-z_]+", text.replace("\\n", " "))
    )  # DOT joins labels with a literal backslash-n
    # the readable view writes the per-phase failed_in_<phase> guards once, as failed_in_PHASE
    guards = topology.GUARD_NAMES if full else [g for g in topology.GUARD_NAMES if g not in RETRY_GUARDS]
    for name in (*topology.STATES, *topology.TRIGGERS, *guards):
        assert name in words, name
    assert full or {FAILED_IN_PHASE, PHASE_GUARD} <= words
    assert text == diagram(fmt, full=full), "output must be deterministic"


def test_mermaid_draws_every_transition_with_its_guards() -> None:
    text = diagram("mermaid", full=True)
    for row in topology.transitions_table():
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        for source in sources:
            labels = mermaid_edge(text, source, row["dest"]).split(" : ", 1)[1].split(" | ")
            assert transition_label(row) in labels


@pytest.mark.parametrize(
    ("source", "dest", "label"),
    [
        ("evaluate", "benchmark", "phase_done [has_required_keys] | phase_skipped"),
        ("bootstrap", "repair", "phase_failed [can_repair]"),
        ("bootstrap", "failed", "phase_failed [!can_repair] | interrupt"),
        ("health", "repair", "phase_done [can_repair & !is_healthy] | phase_failed [can_repair]"),
        ("repair", "evaluate", "retry [failed_in_evaluate & contract_intact]"),
        ("failed", "failed", "cleanup"),
    ],
)
def test_mermaid_merges_edges_and_marks_unless(source: str, dest: str, label: str) -> None:
    assert mermaid_edge(diagram("mermaid", full=True), source, dest) == f"{source} --> {dest} : {label}"


@pytest.mark.parametrize("full", [False, True])
def test_mermaid_machine_is_valid_with_start_and_final_markers(full: bool) -> None:
    text = diagram("mermaid", full=full)
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    assert "[*] --> clone" in lines and "done --> [*]" in lines and "failed --> [*]" in lines
    assert check_mermaid(text) == []
    assert mermaid_classes(text) == {"repair_loop": {"repair"}}


def test_dot_machine_is_balanced_and_every_edge_node_exists() -> None:
    nodes, edges = dot_structure(diagram("dot", full=True))
    assert set(nodes) == {*topology.STATES, "__start__"}
    assert len(edges) > len(topology.STATES)
    for src, dst, _ in edges:
        assert src in nodes and dst in nodes
    repair_edges = [attrs for src, dst, attrs in edges if "repair" in (src, dst)]
    assert repair_edges and all('style="dashed"' in attrs for attrs in repair_edges)


# -- the readable view and the full one -------------------------------------------------------------------

#: The readable view stays at most this many arrows, [*] and final markers included.
READABLE_MAX_ARROWS = 30
SPINE = (*topology.PHASES, topology.DONE)
REPAIRABLE = [p for p in topology.PHASES if p not in topology.NOT_REPAIRABLE]


def machine_transitions() -> set[tuple[str, str, str]]:
    """Every (source, dest, trigger) of the topology's transition list."""
    return {
        (source, row["dest"], row["trigger"])
        for row in topology.transitions_table()
        for source in (row["source"] if isinstance(row["source"], list) else [row["source"]])
    }


def drawn_pairs(fmt: str, text: str) -> list[tuple[str, str]]:
    if fmt == "mermaid":
        return [(src, dst) for src, dst, _ in mermaid_arrows(text)]
    return [(src, dst) for src, dst, _ in dot_structure(text)[1]]


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_readable_view_is_a_pipeline_spine_with_few_arrows(fmt: str) -> None:
    readable = drawn_pairs(fmt, diagram(fmt))
    full = drawn_pairs(fmt, diagram(fmt, full=True))
    assert len(readable) <= READABLE_MAX_ARROWS < len(full), (len(readable), len(full))
    # the spine: every phase, joined in pipeline order by one forward arrow each (nothing skips ahead)
    forward = [pair for pair in readable if pair[0] in topology.PHASES and pair[1] in SPINE]
    forward = [(src, dst) for src, dst in forward if SPINE.index(dst) > SPINE.index(src)]
    assert sorted(forward, key=lambda pair: SPINE.index(pair[0])) == list(zip(SPINE, SPINE[1:], strict=False))
    # no single phase has its own arrow to repair or failed any more, except the two no repair can retry
    to_repair = [src for src, dst in readable if dst == topology.REPAIR]
    to_failed = sorted({src for src, dst in readable if dst == topology.FAILED} - {"repair", "failed"})
    assert to_repair == ["repairable"]
    assert to_failed == sorted(["repairable", *topology.NOT_REPAIRABLE])
    assert readable.count(("repair", "repairable")) == readable.count(("failed", "repairable")) == 1


def test_readable_mermaid_draws_each_group_once_with_its_label() -> None:
    text = diagram("mermaid")
    assert check_mermaid(text) == []
    assert "diagram --full" in text
    for source, dest, label in [
        ("repairable", "repair", f"phase_failed [can_repair] | phase_done [can_repair & !{PHASE_GUARD}]"),
        ("repairable", "failed", f"phase_failed [!can_repair] | phase_done [!{PHASE_GUARD} & !can_repair] | interrupt"),
        ("repair", "repairable", f"retry [{FAILED_IN_PHASE} & contract_intact]"),
        ("failed", "repairable", f"redrive [{FAILED_IN_PHASE}]"),
        ("repairable", "teardown", "wind_down"),
        ("needs_deployment", "deploy_setup", "redeploy"),
        ("rechecks_health", "health", "recheck_health"),
        ("[*]", "bootstrap", "restart"),
        ("health", "rollout", "phase_done [is_healthy] | phase_skipped"),
    ]:
        assert mermaid_edge(text, source, dest) == f"{source} --> {dest} : {label}"
    blocks = mermaid_blocks(text)
    assert set(blocks["repairable"]) == {*REPAIRABLE, "needs_deployment", "rechecks_health"}
    assert set(blocks["needs_deployment"]) == {*topology.NEEDS_DEPLOYMENT, "rechecks_health"}
    assert set(blocks["rechecks_health"]) == set(topology.RECHECK_HEALTH)


def test_readable_dot_clusters_the_phases() -> None:
    nodes, edges, found = dot_graph(diagram("dot"))
    assert set(nodes) == {*topology.STATES, "__start__"}
    assert set(found["repairable"]) == set(REPAIRABLE)
    assert set(found["needs_deployment"]) == set(topology.NEEDS_DEPLOYMENT)
    assert set(found["rechecks_health"]) == set(topology.RECHECK_HEALTH)
    by_pair = {(src, dst): attrs for src, dst, attrs in edges}
    assert 'style="dashed"' in by_pair["repairable", "repair"] and "PHASE_GUARD" in by_pair["repairable", "repair"]
    assert "failed_in_PHASE" in by_pair["repair", "repairable"]
    assert 'label="restart"' in by_pair["__start__", "bootstrap"]


def test_readable_view_stands_for_every_transition_exactly_once() -> None:
    arrows = readable_arrows()
    covered = [triple for arrow in arrows for cover in arrow.covers for triple in cover]
    assert len(covered) == len(set(covered)), "a transition drawn twice"
    assert set(covered) == machine_transitions()
    for arrow in arrows:  # each transition sits on the arrow between its states or their clusters
        for source, dest, _ in arrow.transitions:
            src_ok = arrow.source == source or any(
                c.name == arrow.source and source in c.members for c in clusters()
            )
            dst_ok = arrow.dest == dest or any(c.name == arrow.dest and dest in c.members for c in clusters())
            assert (src_ok or arrow.source == START) and dst_ok, (arrow, source, dest)


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_full_view_draws_every_topology_transition(fmt: str) -> None:
    text = diagram(fmt, full=True)
    labels: dict[tuple[str, str], list[str]] = {}
    if fmt == "mermaid":
        for src, dst, label in mermaid_arrows(text):
            labels.setdefault((src, dst), []).extend(label.split(" | "))
    else:
        for src, dst, attrs in dot_structure(text)[1]:
            label = re.search(r'label="((?:[^"\\]|\\.)*)"', attrs)
            labels.setdefault((src, dst), []).extend(label[1].split("\\n") if label else [])
    for row in topology.transitions_table():
        for source in row["source"] if isinstance(row["source"], list) else [row["source"]]:
            assert transition_label(row) in labels[source, row["dest"]], (source, row)
    pairs = {(src, dst) for src, dst, _ in machine_transitions()}
    assert set(labels) - {("[*]", "clone"), ("__start__", "clone"), ("done", "[*]"), ("failed", "[*]")} == pairs
    assert len(drawn_arrows(full=True)) == len(pairs)


def test_clusters_nest_and_come_from_the_topology() -> None:
    found = {c.name: c for c in clusters()}
    assert found["repairable"].members == tuple(REPAIRABLE) and found["repairable"].parent is None
    assert found["needs_deployment"].parent == "repairable"
    assert found["rechecks_health"].parent == "needs_deployment"


def test_api_diagram_takes_full_and_keeps_its_positional_parameters(
    failed_run: tuple[Path, list[TransitionRecord]],
) -> None:
    run_dir, records = failed_run
    assert list(inspect.signature(fsm_runner.diagram).parameters) == ["format", "run_dir", "full"]
    assert inspect.signature(fsm_runner.diagram).parameters["full"].default is False
    assert fsm_runner.diagram("dot", run_dir) == fsm_runner.diagram("dot", run_dir, full=False)
    assert fsm_runner.diagram("dot", run_dir=run_dir) == diagram_from_records(records, "dot")
    full = fsm_runner.diagram("mermaid", run_dir, full=True)
    assert full == diagram_from_records(records, "mermaid", full=True)
    assert len(mermaid_arrows(full)) > len(mermaid_arrows(fsm_runner.diagram("mermaid", run_dir)))


# -- the Mermaid checker ----------------------------------------------------------------------------------

VALID = """stateDiagram-v2
    %% a comment
    direction LR
    state "Waiting for input" as waiting
    state group {
        [*] --> inner
        inner --> [*]
    }
    [*] --> waiting
    waiting --> group : go [ready & !busy] | skip
    waiting : a description
    note left of waiting : a note
    classDef hot fill:#f00,stroke-width:2px
    class waiting,group hot
    hide empty description
"""


def test_check_mermaid_accepts_the_statements_it_knows() -> None:
    assert check_mermaid(VALID) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("graph TD\n  a --> b\n", "expected the header"),
        ("stateDiagram-v2\n", "no statements"),
        ("stateDiagram-v2\n  a -> b\n", "not a stateDiagram-v2 statement"),
        ("stateDiagram-v2\n  a --> b : x : y\n", "contains ':'"),
        ("stateDiagram-v2\n  a --> b : x; y\n", "contains ';'"),
        ("stateDiagram-v2\n  a --> b :   \n", "empty transition label"),
        ("stateDiagram-v2\n  a --> b : set direction LR\n", "direction"),
        ("stateDiagram-v2\n  state --> b\n", "keyword"),
        ("stateDiagram-v2\n  [*] --> [*]\n", "connects nothing"),
        ("stateDiagram-v2\n  state a {\n  a --> b\n", "not closed"),
        ("stateDiagram-v2\n  a --> b\n  }\n", "without a matching"),
        ("stateDiagram-v2\n  a --> b\n  class a hot\n", "not defined by a classDef"),
        ("stateDiagram-v2\n  a --> b\n  classDef hot fill:#f00\n  class zz hot\n", "not a state"),
        ("stateDiagram-v2\n  a --> b\n  classDef hot fill\n", "not 'property:value'"),
        ("stateDiagram-v2\n  a --> b\n  stateDiagram-v2\n", "second diagram header"),
        ("stateDiagram-v2\n  deploy-setup --> b\n", "not a stateDiagram-v2 statement"),
        # what Mermaid 11 does, seen rendering with mermaid-cli
        ("stateDiagram-v2\n  state a {\n  x --> y\n  }\n  state b {\n  y --> z\n  }\n", "draws it in the last one"),
        ("stateDiagram-v2\n  state a {\n  state x\n  state b {\n  y --> z\n  }\n  }\n", "as one state name"),
        ("stateDiagram-v2\n  state a {\n  y --> z\n  state x\n  }\n", "does not put it in composite 'a'"),
    ],
)
def test_check_mermaid_rejects_broken_diagrams(text: str, problem: str) -> None:
    problems = check_mermaid(text)
    assert problems, text
    assert any(problem in p for p in problems), problems
    assert all(p.startswith(("line ", "end of text")) for p in problems), problems


def test_check_mermaid_catches_a_corrupted_export() -> None:
    text = diagram("mermaid", full=True).replace("clone --> bootstrap : ", "clone --> bootstrap : bad: ")
    assert any("line 4" in p and "':'" in p for p in check_mermaid(text)), check_mermaid(text)


# -- a run ------------------------------------------------------------------------------------------------


@pytest.fixture
def failed_run(tmp_path: Path) -> tuple[Path, list[TransitionRecord]]:
    run_dir = tmp_path / "run"
    records = write_journal(run_dir, FAILED_AFTER_REPAIR)
    assert_legal_path(records)
    return run_dir, records


def test_run_marks_from_a_failed_repair_loop(failed_run: tuple[Path, list[TransitionRecord]]) -> None:
    _, records = failed_run
    marks = marks_from_records(records)
    assert marks.transitions == len(FAILED_AFTER_REPAIR)
    assert marks.failed_at == ("evaluate",)
    assert marks.current == "failed"
    assert marks.repairs == {"evaluate": 1}
    assert set(marks.visited) == {*topology.PHASES[:8], "repair", "failed"}
    assert marks.taken["evaluate", "repair", "phase_done"] == 1
    assert marks.taken["failed", "failed", "cleanup"] == 1


def test_mermaid_marks_the_run(failed_run: tuple[Path, list[TransitionRecord]]) -> None:
    run_dir, _ = failed_run
    text = diagram("mermaid", run_dir, full=True)
    assert check_mermaid(text) == []
    classes = mermaid_classes(text)
    assert classes["failed_at"] == {"evaluate"}
    assert classes["current"] == {"failed"}
    assert classes["repair_loop"] == {"repair", "evaluate"}
    assert classes["visited"] == {*topology.PHASES[:8], "repair", "failed"}
    assert "benchmark" not in classes["visited"]
    for name in ("visited", "failed_at", "current", "repair_loop"):
        assert re.search(rf"^\s*classDef {name} \S", text, re.M), name
    assert "(taken 1x)" in mermaid_edge(text, "evaluate", "repair")
    assert mermaid_edge(text, "repair", "evaluate").endswith("(taken 1x)")
    assert "(taken 2x)" not in text and "taken" not in mermaid_edge(text, "evaluate", "benchmark")
    assert re.search(r"^\s*note right of repair : .*evaluate 1x", text, re.M)


def test_dot_marks_the_run(failed_run: tuple[Path, list[TransitionRecord]]) -> None:
    run_dir, _ = failed_run
    nodes, edges = dot_structure(diagram("dot", run_dir, full=True))
    for src, dst, _ in edges:
        assert src in nodes and dst in nodes
    assert 'color="#b91c1c"' in nodes["evaluate"] and "filled" in nodes["evaluate"]
    assert 'penwidth="3"' in nodes["failed"] and "bold" in nodes["failed"]
    assert "filled" in nodes["clone"] and "filled" not in nodes["benchmark"]
    by_pair = {(src, dst): attrs for src, dst, attrs in edges}
    loop = by_pair["evaluate", "repair"]
    assert "taken 1x" in loop and 'penwidth="2.5"' in loop and "#c2410c" in loop
    assert "taken 1x" in by_pair["repair", "evaluate"]
    assert "penwidth" not in by_pair["evaluate", "benchmark"]


def test_readable_mermaid_marks_the_run(failed_run: tuple[Path, list[TransitionRecord]]) -> None:
    run_dir, _ = failed_run
    text = diagram("mermaid", run_dir)
    assert check_mermaid(text) == []
    assert len(mermaid_arrows(text)) <= READABLE_MAX_ARROWS
    classes = mermaid_classes(text)
    assert classes["failed_at"] == {"evaluate"}
    assert classes["current"] == {"failed"}
    assert classes["repair_loop"] == {"repair", "evaluate"}
    assert classes["visited"] == {*topology.PHASES[:8], "repair", "failed"}
    assert mermaid_edge(text, "repairable", "repair").endswith("(taken 1x from evaluate)")
    assert "phase_failed [!can_repair] (taken 1x from evaluate)" in mermaid_edge(text, "repairable", "failed")
    assert mermaid_edge(text, "repair", "repairable").endswith("(taken 1x to evaluate)")
    assert mermaid_edge(text, "clone", "bootstrap").endswith("phase_done (taken 1x) | phase_skipped")
    assert "taken" not in mermaid_edge(text, "evaluate", "benchmark")
    assert re.search(r"^\s*note right of repair : .*evaluate 1x", text, re.M)


def test_readable_dot_marks_the_run(failed_run: tuple[Path, list[TransitionRecord]]) -> None:
    run_dir, _ = failed_run
    nodes, edges, _ = dot_graph(diagram("dot", run_dir))
    assert len(edges) <= READABLE_MAX_ARROWS
    assert 'color="#b91c1c"' in nodes["evaluate"] and "filled" in nodes["evaluate"]
    assert 'penwidth="3"' in nodes["failed"] and "bold" in nodes["failed"]
    assert "filled" in nodes["clone"] and "filled" not in nodes["benchmark"]
    by_pair = {(src, dst): attrs for src, dst, attrs in edges}
    loop = by_pair["repairable", "repair"]
    assert "taken 1x from evaluate" in loop and 'penwidth="2.5"' in loop and "#c2410c" in loop
    assert "taken 1x to evaluate" in by_pair["repair", "repairable"]
    assert 'penwidth="2.5"' in by_pair["rollout", "evaluate"]
    assert "penwidth" not in by_pair["evaluate", "benchmark"] and "#9ca3af" in by_pair["evaluate", "benchmark"]


@pytest.mark.parametrize("full", [False, True])
def test_an_edge_the_machine_lacks_is_drawn_in_both_views(full: bool) -> None:
    records = [record_json(trigger="legacy_jump", source="clone", dest="evaluate")]
    mermaid = diagram_from_records(records, "mermaid", full)
    assert check_mermaid(mermaid) == []
    assert mermaid_edge(mermaid, "clone", "evaluate").endswith("legacy_jump (taken 1x, not in this machine)")
    _, edges = dot_structure(diagram_from_records(records, "dot", full))
    assert any((s, d) == ("clone", "evaluate") and 'style="bold"' in a for s, d, a in edges)


def test_diagram_from_records_matches_the_run_dir(failed_run: tuple[Path, list[TransitionRecord]]) -> None:
    run_dir, records = failed_run
    for fmt in ("mermaid", "dot"):
        for full in (False, True):
            assert diagram_from_records(records, fmt, full) == diagram(fmt, run_dir, full=full)
            assert diagram_from_records(records, fmt, full) == diagram(fmt, run_dir / JOURNAL, full=full)
            assert diagram_from_records(None, fmt, full) == diagram(fmt, full=full)
        assert diagram_from_records(records, fmt) != diagram_from_records(records, fmt, full=True)


def test_torn_last_line_is_ignored(failed_run: tuple[Path, list[TransitionRecord]]) -> None:
    run_dir, records = failed_run
    with (run_dir / JOURNAL).open("a") as handle:
        handle.write('{"seq": 99, "trigger": "phase_')
    assert diagram("mermaid", run_dir) == diagram_from_records(records, "mermaid")


def test_an_empty_journal_marks_nothing(tmp_path: Path) -> None:
    (tmp_path / JOURNAL).write_text("")
    text = diagram("mermaid", tmp_path)
    assert check_mermaid(text) == []
    assert "no recorded transitions" in text and mermaid_classes(text) == {}


def record_json(**fields: Any) -> dict[str, Any]:
    """One journal line as JSON, with the keys every record has."""
    return {"seq": 1, "ts": "2026-01-01T00:00:00Z", **fields}


def test_records_read_as_json_mark_the_same_as_typed_ones(
    failed_run: tuple[Path, list[TransitionRecord]],
) -> None:
    _, records = failed_run
    as_json = [r.to_json() for r in records]
    assert marks_from_records(as_json) == marks_from_records(records)
    assert diagram_from_records(as_json, "dot") == diagram_from_records(records, "dot")


def test_an_edge_the_machine_lacks_is_drawn_and_flagged() -> None:
    records = [record_json(trigger="legacy_jump", source="clone", dest="evaluate")]
    mermaid = diagram_from_records(records, "mermaid")
    assert check_mermaid(mermaid) == []
    assert mermaid_edge(mermaid, "clone", "evaluate").endswith("legacy_jump (taken 1x, not in this machine)")
    _, edges = dot_structure(diagram_from_records(records, "dot"))
    assert any((s, d) == ("clone", "evaluate") and 'style="bold"' in a for s, d, a in edges)


def test_a_real_failed_run_is_marked(make_target: TargetFactory) -> None:
    target = make_target(scoring=files.SCORING_BROKEN)
    with fsm_runner.setup(str(target)) as session:
        result = session.evaluate(llm="m", repair_iters=0)
        run_dir = session.run_dir
    assert not result.ok
    for full in (False, True):
        text = diagram("mermaid", run_dir, full=full)
        assert check_mermaid(text) == []
        classes = mermaid_classes(text)
        assert classes["failed_at"] == {"evaluate"} and classes["current"] == {"failed"}
        nodes, edges, clusters = dot_graph(diagram("dot", run_dir, full=full))
        assert all({src, dst} <= {*nodes, *clusters} for src, dst, _ in edges)
        assert 'color="#b91c1c"' in nodes["evaluate"] and 'penwidth="3"' in nodes["failed"]


# -- bad input --------------------------------------------------------------------------------------------


def test_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="'svg'.*mermaid, dot"):
        diagram("svg")
    with pytest.raises(UsageError, match="'png'"):
        diagram_from_records([], "png")


def test_missing_run_dir_and_missing_journal(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope: no such run directory"):
        diagram("mermaid", tmp_path / "nope")
    with pytest.raises(EvidenceError, match=rf"{JOURNAL} does not exist: this run has no journal to draw"):
        diagram("mermaid", tmp_path)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "unreadable journal record (not JSON)"),
        ('{"seq": 2, "ts": "2026-01-01T00:00:00Z", "trigger": "phase_done", "source": "bootstrap"}',
         "missing key 'dest'"),
        ('{"seq": 2, "ts": "t", "trigger": "phase_done", "source": "bootstrap", "dest": "auth", "guards": []}',
         "guards: expected an object, got []"),
    ],
)
def test_damaged_journal_names_the_line(
    failed_run: tuple[Path, list[TransitionRecord]], line: str, problem: str
) -> None:
    run_dir, _ = failed_run
    path = run_dir / JOURNAL
    lines = path.read_text().splitlines()
    lines[1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EvidenceError, match=rf"^{re.escape(f'{path}:2: {problem}')}; the diagram needs every"):
        diagram("dot", run_dir)


@pytest.mark.parametrize(
    ("record", "error", "problem"),
    [
        # well-formed records this machine cannot draw: the journal is from another version
        (
            record_json(seq=7, trigger="phase_done", source="clone", dest="mars"),
            EvidenceError,
            r"seq 7\): dest 'mars' is not a state",
        ),
        (record_json(seq=4, trigger="x y", source="clone", dest="auth"), EvidenceError, r"'x y' is not a trigger"),
        # records of the wrong shape
        (record_json(seq=3, trigger="phase_done", dest="auth"), EvidenceError, r"record 1: missing key 'source'"),
        (record_json(seq=0, trigger="t", source="clone", dest="auth"), EvidenceError, r"record 1: .*seq.*>= 1"),
        (["not", "an", "object"], EvidenceError, r"journal record 1: expected an object, got \['not'"),
    ],
)
def test_bad_records_say_what_is_wrong(record: Any, error: type[Exception], problem: str) -> None:
    with pytest.raises(error, match=problem):
        diagram_from_records([record], "mermaid")


# -- rendering --------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
@pytest.mark.parametrize("full", [False, True])
def test_render_svg_with_graphviz(failed_run: tuple[Path, list[TransitionRecord]], full: bool) -> None:
    run_dir, _ = failed_run
    svg = render(diagram("dot", run_dir, full=full), "svg")
    assert b"<svg" in svg and b"evaluate" in svg
    machine = render(diagram("dot", full=full), "svg").decode()
    assert ("cluster_repairable" in machine) is not full  # Graphviz drew the clusters
    # Graphviz lays the phases out left to right in pipeline order
    x = {
        match[1]: float(match[2])
        for match in re.finditer(r'<title>(\w+)</title>(?:\s*<(?:path|polygon)[^>]*>)+\s*<text[^>]* x="([-\d.]+)"', machine)
    }
    assert [x[state] for state in SPINE] == sorted(x[state] for state in SPINE), x
    with pytest.raises(UsageError, match="dot -Tsvg` exited"):
        render("digraph {", "svg")


def test_render_without_graphviz_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match=r"Graphviz's `dot` binary, which is not on PATH; install Graphviz"):
        render(diagram("dot"), "svg")


def test_render_rejects_unknown_output_format() -> None:
    with pytest.raises(UsageError, match=r"cannot render to 'gif'"):
        render(diagram("dot"), "gif")


# -- docs -------------------------------------------------------------------------------------------------


def test_docs_diagram_is_current() -> None:
    problem = stale_docs()
    assert problem is None, problem


def test_docs_embed_the_readable_view_and_name_the_full_one() -> None:
    text = DOCS_PATH.read_text()
    embedded = docs_diagram(text)
    assert embedded == diagram("mermaid") != diagram("mermaid", full=True)
    assert len(mermaid_arrows(embedded)) <= READABLE_MAX_ARROWS
    assert "fsm-runner diagram --full" in text and "full=True" in text
    for name in (PHASE_GUARD, FAILED_IN_PHASE, *(c.name for c in clusters())):
        assert f"`{name}`" in text, name


def test_docs_describe_every_state_trigger_and_guard() -> None:
    text = DOCS_PATH.read_text()
    missing = [
        name
        for name in (*topology.STATES, *topology.TRIGGERS, *topology.GUARD_NAMES)
        if f"`{name}`" not in text
    ]
    assert not missing, f"{DOCS_PATH}: describe {', '.join(missing)} in the tables"
    assert "`failed_in_<phase>`" in text


def test_stale_docs_say_how_to_regenerate_and_write_docs_fixes_them(tmp_path: Path) -> None:
    copy = tmp_path / "state-machine.md"
    copy.write_text(DOCS_PATH.read_text().replace("clone --> bootstrap", "clone --> auth"))
    message = stale_docs(copy)
    assert message is not None and REGENERATE in message and str(copy) in message
    assert write_docs(copy) is True
    assert stale_docs(copy) is None
    assert write_docs(copy) is False
    assert docs_diagram(copy.read_text()) == diagram("mermaid")
    assert copy.read_text().split("```mermaid")[0] == DOCS_PATH.read_text().split("```mermaid")[0]


def test_docs_without_a_mermaid_block(tmp_path: Path) -> None:
    copy = tmp_path / "empty.md"
    copy.write_text("# nothing here\n")
    message = stale_docs(copy)
    assert message is not None and "found 0" in message and REGENERATE in message
    with pytest.raises(UsageError, match="expected exactly one ```mermaid block, found 0"):
        write_docs(copy)


# -- command line -----------------------------------------------------------------------------------------


TOOL = Path(__file__).resolve().parents[1] / "tools" / "diagram_docs.py"


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_tool_checks_and_writes_docs(tmp_path: Path) -> None:
    copy = tmp_path / "state-machine.md"
    copy.write_text(DOCS_PATH.read_text().replace("[*] --> clone", "[*] --> bootstrap"))
    stale = run_tool("--check", "--docs", str(copy))
    assert stale.returncode == 1 and REGENERATE in stale.stderr
    written = run_tool("--write", "--docs", str(copy))
    assert written.returncode == 0 and "updated" in written.stdout
    assert run_tool("--check", "--docs", str(copy)).returncode == 0
    assert docs_diagram(copy.read_text()) == diagram("mermaid")
    broken = run_tool("--write", "--docs", str(tmp_path / "missing.md"))
    assert broken.returncode == 2 and "diagram_docs: error:" in broken.stderr
    assert "Traceback" not in broken.stderr
