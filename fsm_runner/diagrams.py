"""State diagrams of the machine as Mermaid or DOT text, optionally marked with the path one run took.

The text is generated from :func:`fsm_runner.engine.topology.transitions_table` (the one topology), so
nothing native is needed: Mermaid renders on GitHub, DOT renders wherever Graphviz is installed. Given a
run, its journal supplies the marks: states visited, where the run failed, the current state, the repair
loops and how often each edge was taken.

Two views of the same machine: the readable one (the default) draws the phases as a spine in pipeline
order and every transition the phases share as one arrow from or to a cluster of them, so a failure, a
retry or a redrive is drawn once rather than once per phase; the full one draws each (source, dest) pair.
Both stand for every transition of the machine, and both carry a run's marks.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from attrs import define, field, validators

from fsm_runner.engine import topology
from fsm_runner.errors import EvidenceError, UsageError
from fsm_runner.evidence.journal import read_journal
from fsm_runner.evidence.layout import DEFAULT_OUT_DIR, JOURNAL
from fsm_runner.evidence.records import TransitionRecord
from fsm_runner.execution.process import run_captured

FORMATS: tuple[str, ...] = ("mermaid", "dot")
RENDER_FORMATS: tuple[str, ...] = ("svg", "png", "pdf")
RENDER_TIMEOUT_S = 60.0

#: Style classes, in precedence order (a later class wins where two set the same property).
CLASS_STYLES: tuple[tuple[str, str], ...] = (
    ("visited", "fill:#dbeafe,stroke:#1d4ed8"),
    ("repair_loop", "fill:#ffedd5,stroke:#c2410c,stroke-dasharray:4 2"),
    ("failed_at", "fill:#fee2e2,stroke:#b91c1c,color:#7f1d1d"),
    ("current", "stroke-width:4px,font-weight:bold"),
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REPAIR_COLOR = "#c2410c"
_TAKEN_COLOR = "#1d4ed8"
_IDLE_COLOR = "#9ca3af"
_LAYOUT_TRIGGERS = frozenset({topology.PHASE_DONE, topology.PHASE_SKIPPED})


# -- the machine's edges ------------------------------------------------------------------------------


def transition_label(row: Mapping[str, Any]) -> str:
    """``trigger [guard & !other]``, the convention of ``transitions``' own diagrams (show_conditions)."""
    guards = [*row.get("conditions", []), *(f"!{name}" for name in row.get("unless", []))]
    return f"{row['trigger']} [{' & '.join(guards)}]" if guards else str(row["trigger"])


@define(frozen=True)
class Edge:
    """Every transition from one state to another, drawn as one arrow with one label per transition."""

    source: str = field(validator=validators.instance_of(str))
    dest: str = field(validator=validators.instance_of(str))
    triggers: tuple[str, ...] = field(validator=validators.min_len(1))
    labels: tuple[str, ...] = field(validator=validators.min_len(1))
    in_machine: bool = True

    @labels.validator
    def _one_label_per_trigger(self, _attribute: Any, value: tuple[str, ...]) -> None:
        if len(value) != len(self.triggers):
            raise ValueError(f"{len(self.triggers)} triggers but {len(value)} labels")

    @property
    def repair_loop(self) -> bool:
        """Edges into or out of ``repair`` form the repair loops."""
        return topology.REPAIR in (self.source, self.dest) and self.source != self.dest


def _order(state: str) -> int:
    return topology.STATES.index(state)


def machine_edges() -> tuple[Edge, ...]:
    """The machine's transitions merged per (source, dest), ordered by state then table order."""
    grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in topology.transitions_table():
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        item = (str(row["trigger"]), transition_label(row))
        for source in sources:
            items = grouped.setdefault((source, row["dest"]), [])
            if item not in items:
                items.append(item)
    pairs = sorted(grouped, key=lambda pair: (_order(pair[0]), _order(pair[1])))
    return tuple(
        Edge(src, dst, tuple(t for t, _ in grouped[src, dst]), tuple(lbl for _, lbl in grouped[src, dst]))
        for src, dst in pairs
    )


# -- what a run did -----------------------------------------------------------------------------------


@define(frozen=True)
class RunMarks:
    """What a journal says about a run, in the terms the diagram draws."""

    transitions: int = field(validator=validators.ge(0))
    visited: tuple[str, ...] = ()
    failed_at: tuple[str, ...] = ()
    current: str | None = None
    #: (source, dest, trigger) -> how many times the run took it.
    taken: dict[tuple[str, str, str], int] = field(factory=dict)
    #: phase -> how many times the run went from it into ``repair``.
    repairs: dict[str, int] = field(factory=dict)

    @property
    def loop_states(self) -> tuple[str, ...]:
        """``repair`` and the phases that went through it."""
        if not self.repairs:
            return ()
        return (topology.REPAIR, *self.repairs)


def _as_record(record: TransitionRecord | Mapping[str, Any], index: int) -> TransitionRecord:
    if isinstance(record, TransitionRecord):
        return record
    return TransitionRecord.from_json(record, f"journal record {index}")


def marks_from_records(records: Iterable[TransitionRecord | Mapping[str, Any]]) -> RunMarks:
    """Read visited / failed / current / repair loops / edge counts from journal records."""
    visited: list[str] = []
    failed_at: list[str] = []
    taken: dict[tuple[str, str, str], int] = {}
    repairs: dict[str, int] = {}
    current: str | None = None
    count = 0
    for index, raw in enumerate(records, start=1):
        record = _as_record(raw, index)
        for key in ("source", "dest"):
            state = getattr(record, key)
            if state not in topology.STATES:
                raise EvidenceError(
                    f"journal record {index} (seq {record.seq}): {key} {state!r} is not a state of this "
                    f"machine (states: {', '.join(topology.STATES)}); the journal was written by a different "
                    "version of fsm-runner"
                )
        if not _NAME.match(record.trigger):
            raise EvidenceError(
                f"journal record {index} (seq {record.seq}): {record.trigger!r} is not a trigger"
            )
        source, dest = record.source, record.dest
        for state in (source, dest):
            if state not in visited:
                visited.append(state)
        if dest == topology.FAILED and source != topology.FAILED and source not in failed_at:
            failed_at.append(source)
        if dest == topology.REPAIR and source != topology.REPAIR:
            repairs[source] = repairs.get(source, 0) + 1
        taken[source, dest, record.trigger] = taken.get((source, dest, record.trigger), 0) + 1
        current = dest
        count += 1
    return RunMarks(count, tuple(visited), tuple(failed_at), current, taken, repairs)


def run_edges(marks: RunMarks) -> tuple[Edge, ...]:
    """The machine's edges plus any the run took that the machine does not have (an older topology)."""
    edges = list(machine_edges())
    known = {(e.source, e.dest, t) for e in edges for t in e.triggers}
    extra: dict[tuple[str, str], list[str]] = {}
    for src, dst, trigger in marks.taken:
        if (src, dst, trigger) not in known:
            extra.setdefault((src, dst), []).append(trigger)
    for (src, dst), triggers in extra.items():
        edges.append(Edge(src, dst, tuple(triggers), tuple(triggers), in_machine=False))
    return tuple(edges)


# -- what is drawn: arrows, and the clusters of the readable view --------------------------------------

#: Where a session call enters the machine; the readable view draws ``restart`` (a later call) from it.
START = "[*]"
#: Stand-ins, in a cluster's labels, for the guard names that differ from phase to phase.
PHASE_GUARD = "PHASE_GUARD"
FAILED_IN_PHASE = "failed_in_PHASE"
_ENTRY_TRIGGERS = frozenset({topology.RESTART})


@define(frozen=True)
class Cluster:
    """Phases that share transitions: the readable view draws those once, from or to the cluster."""

    name: str = field(validator=validators.matches_re(_NAME))
    members: tuple[str, ...] = field(validator=validators.min_len(2))
    #: The cluster this one sits in (``None``: the top level).
    parent: str | None = None


def clusters() -> tuple[Cluster, ...]:
    """The readable view's clusters, outermost first, named after the topology's sets they are."""
    sets = sorted(
        (
            ("repairable", [p for p in topology.PHASES if p not in topology.NOT_REPAIRABLE]),
            ("needs_deployment", [p for p in topology.PHASES if p in topology.NEEDS_DEPLOYMENT]),
            ("rechecks_health", [p for p in topology.PHASES if p in topology.RECHECK_HEALTH]),
        ),
        key=lambda item: -len(item[1]),
    )
    found: list[Cluster] = []
    for name, members in sets:
        outer = [c for c in found if set(members) <= set(c.members)]
        crossing = [c.name for c in found if set(members) & set(c.members) and c not in outer]
        if crossing:  # clusters are drawn as nested boxes, so they must nest
            raise ValueError(f"cluster {name} overlaps {', '.join(crossing)} without nesting in it")
        if name in topology.STATES:
            raise ValueError(f"cluster {name} is named like a state")
        found.append(Cluster(name, tuple(members), outer[-1].name if outer else None))
    return tuple(found)


@define(frozen=True)
class Arrow:
    """One drawn arrow: its labels, and per label the machine's transitions that label stands for."""

    #: A state, a cluster's name or :data:`START`.
    source: str = field(validator=validators.instance_of(str))
    dest: str = field(validator=validators.instance_of(str))
    labels: tuple[str, ...] = field(validator=validators.min_len(1))
    #: Per label, the ``(source, dest, trigger)`` transitions it stands for (what a run's counts add up).
    covers: tuple[frozenset[tuple[str, str, str]], ...] = field(validator=validators.min_len(1))
    in_machine: bool = True
    #: Whether DOT lays out its ends left to right by it (the pipeline's forward moves do).
    layout: bool = False

    @covers.validator
    def _one_cover_per_label(self, _attribute: Any, value: tuple[frozenset[Any], ...]) -> None:
        if len(value) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels but {len(value)} sets of transitions")

    @property
    def repair_loop(self) -> bool:
        """Arrows into or out of ``repair`` form the repair loops."""
        return topology.REPAIR in (self.source, self.dest) and self.source != self.dest

    @property
    def transitions(self) -> frozenset[tuple[str, str, str]]:
        """Every machine transition the arrow stands for."""
        return frozenset().union(*self.covers)


def _edge_arrow(edge: Edge) -> Arrow:
    covers = tuple(frozenset({(edge.source, edge.dest, trigger)}) for trigger in edge.triggers)
    layout = bool(set(edge.triggers) & _LAYOUT_TRIGGERS)
    return Arrow(edge.source, edge.dest, edge.labels, covers, edge.in_machine, layout)


def _is_forward(source: str, dest: str, trigger: str) -> bool:
    """A pipeline move: the phase succeeded or was skipped and the next one in order comes."""
    if trigger not in _LAYOUT_TRIGGERS or source not in topology.PHASES:
        return False
    index = topology.PHASES.index(source)
    return dest == (topology.PHASES[index + 1] if index + 1 < len(topology.PHASES) else topology.DONE)


def _renamed(row: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {
        **row,
        "conditions": [names.get(name, name) for name in row.get("conditions", [])],
        "unless": [names.get(name, name) for name in row.get("unless", [])],
    }


def readable_arrows() -> tuple[Arrow, ...]:
    """The machine as the readable view draws it: every transition once, the shared ones per cluster.

    Forward moves stay one arrow per phase (the spine); ``restart`` comes from :data:`START`; any other
    transition that every member of a cluster has towards the same state (or that one state has towards
    every member) becomes one arrow from (or to) the largest such cluster, its phase-specific guards
    written as :data:`PHASE_GUARD` and :data:`FAILED_IN_PHASE`.
    """
    rows = [
        (source, row)
        for row in topology.transitions_table()
        for source in (row["source"] if isinstance(row["source"], list) else [row["source"]])
    ]
    shared = {
        (source, row["dest"])
        for source, row in rows
        if not _is_forward(source, row["dest"], row["trigger"]) and row["trigger"] not in _ENTRY_TRIGGERS
    }
    outermost_first = clusters()

    def collapse(state: str, other: str, outgoing: bool) -> str:
        for cluster in outermost_first:
            if state in cluster.members and other not in cluster.members:
                pairs = ((m, other) if outgoing else (other, m) for m in cluster.members)
                if all(pair in shared for pair in pairs):
                    return cluster.name
        return state

    buckets: dict[tuple[str, str], dict[str, set[tuple[str, str, str]]]] = {}
    for source, row in rows:
        dest, trigger = row["dest"], row["trigger"]
        if _is_forward(source, dest, trigger):
            key, label = (source, dest), transition_label(row)
        elif trigger in _ENTRY_TRIGGERS:
            key, label = (START, dest), transition_label(row)
        else:
            key = (collapse(source, dest, True), collapse(dest, source, False))
            names: dict[str, str] = {}
            if key[0] != source and (guard := topology.SUCCESS_GUARDS.get(source)):
                names[guard] = PHASE_GUARD
            if key[1] != dest:
                names[topology.retry_guard(dest)] = FAILED_IN_PHASE
            label = transition_label(_renamed(row, names))
        buckets.setdefault(key, {}).setdefault(label, set()).add((source, dest, trigger))
    first_member = {c.name: c.members[0] for c in outermost_first}

    def order(node: str) -> tuple[int, int]:
        if node == START:
            return (-1, 0)
        if node in first_member:
            return (_order(first_member[node]), 0)
        return (_order(node), 1)

    def sort_key(pair: tuple[str, str]) -> tuple[bool, tuple[int, int], tuple[int, int]]:
        return (not _is_forward(*pair, topology.PHASE_DONE), order(pair[0]), order(pair[1]))

    def layout(src: str, dst: str) -> bool:  # a cluster's way out of the pipeline puts repair/failed below it
        return _is_forward(src, dst, topology.PHASE_DONE) or (
            src in first_member and dst not in topology.PHASES
        )

    return tuple(
        Arrow(
            src,
            dst,
            tuple(buckets[src, dst]),
            tuple(frozenset(triples) for triples in buckets[src, dst].values()),
            layout=layout(src, dst),
        )
        for src, dst in sorted(buckets, key=sort_key)
    )


def drawn_arrows(marks: RunMarks | None = None, full: bool = False) -> tuple[Arrow, ...]:
    """What a diagram draws: the readable view or (``full``) one arrow per pair of states.

    With ``marks``, transitions the run took that this machine lacks (an older topology) are added.
    """
    edges = machine_edges() if marks is None else run_edges(marks)
    if full:
        return tuple(_edge_arrow(edge) for edge in edges)
    return (*readable_arrows(), *(_edge_arrow(edge) for edge in edges if not edge.in_machine))


def _counted_labels(arrow: Arrow, marks: RunMarks | None) -> list[str]:
    labels: list[str] = []
    for label, covered in zip(arrow.labels, arrow.covers, strict=True):
        took = [triple for triple in sorted(covered) if marks and marks.taken.get(triple)]
        times = sum(marks.taken[triple] for triple in took) if marks else 0
        # an arrow from or to a cluster (or from START) says which states the run actually left or entered
        sources = sorted({src for src, _, _ in took if src != arrow.source}, key=_order)
        dests = sorted({dst for _, dst, _ in took if dst != arrow.dest}, key=_order)
        where = "".join(
            f" {word} {','.join(states)}" for word, states in (("from", sources), ("to", dests)) if states
        )
        notes = [f"taken {times}x{where}"] if times else []
        if not arrow.in_machine:
            notes.append("not in this machine")
        labels.append(f"{label} ({', '.join(notes)})" if notes else label)
    return labels


def _arrow_taken(arrow: Arrow, marks: RunMarks | None) -> int:
    if marks is None:
        return 0
    return sum(marks.taken.get(triple, 0) for triple in arrow.transitions)


def _run_summary(marks: RunMarks) -> str:
    if not marks.transitions:
        return "run with no recorded transitions yet"
    failed = f", failed at {', '.join(marks.failed_at)}" if marks.failed_at else ""
    return f"run with {marks.transitions} recorded transitions, current state {marks.current}{failed}"


def _readable_note() -> str:
    return (
        f"readable view - transitions shared by a cluster of phases are drawn once, {PHASE_GUARD} and "
        f"{FAILED_IN_PHASE} stand for that phase's own guard; fsm-runner diagram --full draws every one"
    )


# -- Mermaid ------------------------------------------------------------------------------------------


def _home(node: str, parents: Mapping[str, str | None], innermost: Mapping[str, str]) -> str | None:
    """The cluster a node is declared in (``None``: the top level)."""
    if node in parents:
        return parents[node]
    return innermost.get(node)


def _mermaid_arrows(arrows: Iterable[Arrow], marks: RunMarks | None, full: bool) -> list[str]:
    """Arrow lines, the clusters as composite states holding the arrows that stay inside one of them.

    Mermaid puts a state in the composite of the last block that names it (the top level never moves one),
    so an arrow whose ends sit in different composites is written at the top level, and a member no arrow
    in its own block names is declared there as ``state "x" as x`` (a bare ``state x`` draws nothing).
    """
    found = () if full else clusters()
    parents = {c.name: c.parent for c in found}
    innermost = {member: c.name for c in found for member in c.members}  # later clusters are inner ones
    scoped: dict[str | None, list[Arrow]] = {}
    for arrow in arrows:
        home = _home(arrow.source, parents, innermost)
        scope = home if home == _home(arrow.dest, parents, innermost) else None
        scoped.setdefault(scope, []).append(arrow)

    def block(scope: str | None, depth: int) -> list[str]:
        indent = "    " * depth
        lines: list[str] = []
        for cluster in found:
            if cluster.parent == scope:
                lines.append(f"{indent}state {cluster.name} {{")
                lines.extend(block(cluster.name, depth + 1))
                lines.append(f"{indent}}}")
        here = scoped.get(scope, [])
        named = {end for arrow in here for end in (arrow.source, arrow.dest)}
        for state, home in innermost.items():
            if scope is not None and home == scope and state not in named:
                lines.append(f'{indent}state "{state}" as {state}')
        for arrow in here:
            lines.append(
                f"{indent}{arrow.source} --> {arrow.dest} : {' | '.join(_counted_labels(arrow, marks))}"
            )
        return lines

    return block(None, 1)


def _mermaid(marks: RunMarks | None, full: bool) -> str:
    lines = [
        "stateDiagram-v2",
        "    %% generated from fsm_runner.engine.topology by fsm_runner.diagrams - do not edit by hand",
    ]
    if not full:
        lines.append(f"    %% {_readable_note()}")
    if marks is not None:
        lines.append(f"    %% {_run_summary(marks)}")
    lines.append(f"    [*] --> {topology.PHASES[0]}")
    lines.extend(_mermaid_arrows(drawn_arrows(marks, full), marks, full))
    for final in sorted(topology.FINAL_STATES, key=_order):
        lines.append(f"    {final} --> [*]")
    if marks is None:
        lines.append(f"    classDef repair_loop {dict(CLASS_STYLES)['repair_loop']}")
        lines.append(f"    class {topology.REPAIR} repair_loop")
        return "\n".join(lines) + "\n"
    if marks.repairs:
        loops = ", ".join(f"{phase} {times}x" for phase, times in marks.repairs.items())
        lines.append(f"    note right of {topology.REPAIR} : repair loops in this run - {loops}")
    for name, style in CLASS_STYLES:
        lines.append(f"    classDef {name} {style}")
    members = {
        "visited": marks.visited,
        "repair_loop": marks.loop_states,
        "failed_at": marks.failed_at,
        "current": (marks.current,) if marks.current else (),
    }
    for name, _ in CLASS_STYLES:
        if members[name]:
            lines.append(f"    class {','.join(members[name])} {name}")
    return "\n".join(lines) + "\n"


# -- DOT ----------------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attrs(values: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={_quote(value)}" for key, value in values.items())


def _node_attrs(state: str, marks: RunMarks | None) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if state in topology.FINAL_STATES:
        attrs["peripheries"] = "2"
    if state == topology.REPAIR:
        attrs.update(color=_REPAIR_COLOR, fontcolor=_REPAIR_COLOR)
    if marks is None:
        return attrs
    style = ["rounded"]
    if state in marks.visited:
        style.append("filled")
        attrs["fillcolor"] = "#dbeafe"
    if state in marks.loop_states:
        attrs.update(color=_REPAIR_COLOR, fillcolor="#ffedd5")
    if state in marks.failed_at:
        attrs.update(color="#b91c1c", fillcolor="#fee2e2", fontcolor="#7f1d1d")
    if state == marks.current:
        style.append("bold")
        attrs["penwidth"] = "3"
    attrs["style"] = ",".join(style)
    return attrs


def _edge_attrs(arrow: Arrow, marks: RunMarks | None, ends: Mapping[str, str] | None = None) -> str:
    label = "\\n".join(_quote(text)[1:-1] for text in _counted_labels(arrow, marks))
    attrs: dict[str, str] = {}
    taken = _arrow_taken(arrow, marks)
    if arrow.repair_loop:
        attrs.update(color=_REPAIR_COLOR, fontcolor=_REPAIR_COLOR, style="dashed")
    if not arrow.in_machine:
        attrs["style"] = "dotted"
    if marks is not None and taken:
        if not arrow.repair_loop:
            attrs.update(color=_TAKEN_COLOR, fontcolor=_TAKEN_COLOR)
        attrs.update(penwidth="2.5", style="bold")
    elif marks is not None and not arrow.repair_loop:
        attrs.update(color=_IDLE_COLOR, fontcolor=_IDLE_COLOR)
    if not arrow.layout:
        attrs["constraint"] = "false"  # only the pipeline's forward moves decide the left-to-right layout
    if ends:
        attrs.update(ends)
    extra = f", {_attrs(attrs)}" if attrs else ""
    return f'label="{label}"{extra}'


def _dot_nodes(marks: RunMarks | None, full: bool) -> list[str]:
    """Node statements; in the readable view, the clusters' members inside nested ``subgraph`` boxes."""
    found = () if full else clusters()
    innermost = {member: c.name for c in found for member in c.members}

    def node(state: str, indent: str) -> str:
        attrs = _node_attrs(state, marks)
        return f"{indent}{_quote(state)} [{_attrs(attrs)}];" if attrs else f"{indent}{_quote(state)};"

    def block(scope: str | None, depth: int) -> list[str]:
        indent = "    " * depth
        lines = [node(state, indent) for state in topology.STATES if innermost.get(state) == scope]
        for cluster in found:
            if cluster.parent == scope:
                lines.append(f"{indent}subgraph {_quote('cluster_' + cluster.name)} {{")
                inner = "    " * (depth + 1)
                lines.append(f'{inner}label={_quote(cluster.name)}; style="rounded,dashed"; color="#6b7280";')
                lines.extend(block(cluster.name, depth + 1))
                lines.append(f"{indent}}}")
        return lines

    return block(None, 1)


def _dot_ends(arrow: Arrow, members: Mapping[str, tuple[str, ...]]) -> tuple[str, str, dict[str, str]]:
    """DOT draws an arrow to a cluster as one to a member clipped at the cluster's box (compound=true)."""
    ends: dict[str, str] = {}
    source, dest = arrow.source, arrow.dest
    if source == START:
        source = "__start__"
    if source in members:
        ends["ltail"] = f"cluster_{source}"
        source = members[source][len(members[source]) // 2]
    if dest in members:
        ends["lhead"] = f"cluster_{dest}"
        dest = members[dest][len(members[dest]) // 2]
    return source, dest, ends


def _dot(marks: RunMarks | None, full: bool) -> str:
    lines = [
        "// generated from fsm_runner.engine.topology by fsm_runner.diagrams - do not edit by hand",
        "digraph fsm_runner {",
        "    rankdir=LR;",
    ]
    if not full:
        lines.append("    compound=true;")
    lines += [
        '    node [shape=box, style="rounded", fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
        '    "__start__" [shape=point, width=0.15, label=""];',
    ]
    if not full:
        lines.append(f"    // {_readable_note()}")
    if marks is not None:
        lines.append(f"    // {_run_summary(marks)}")
    lines.extend(_dot_nodes(marks, full))
    lines.append(f'    "__start__" -> {_quote(topology.PHASES[0])};')
    members = {} if full else {c.name: c.members for c in clusters()}
    for arrow in drawn_arrows(marks, full):
        source, dest, ends = _dot_ends(arrow, members)
        lines.append(f"    {_quote(source)} -> {_quote(dest)} [{_edge_attrs(arrow, marks, ends)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- public API ---------------------------------------------------------------------------------------


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise UsageError(f"unknown diagram format {format!r}; use one of: {', '.join(FORMATS)}")


def diagram_from_records(
    records: Iterable[TransitionRecord | Mapping[str, Any]] | None,
    format: str = "mermaid",
    full: bool = False,
) -> str:
    """The diagram, marked with the run the journal ``records`` describe (``None``: the bare machine)."""
    _check_format(format)
    marks = None if records is None else marks_from_records(records)
    return _mermaid(marks, full) if format == "mermaid" else _dot(marks, full)


def load_records(run: str | os.PathLike[str]) -> tuple[TransitionRecord, ...]:
    """The journal records of a run directory (or of a ``journal.jsonl`` given directly)."""
    path = Path(run)
    if not path.exists():
        raise UsageError(f"{path}: no such run directory (expected {DEFAULT_OUT_DIR}/<run_id>)")
    journal = path if path.is_file() else path / JOURNAL
    if not journal.is_file():
        raise EvidenceError(f"{journal} does not exist: this run has no journal to draw")
    read = read_journal(journal)
    if read.problem and not read.torn:
        raise EvidenceError(f"{read.problem}; the diagram needs every record, repair or remove that line")
    return read.records


def diagram(
    format: str = "mermaid", run_dir: str | os.PathLike[str] | None = None, full: bool = False
) -> str:
    """The machine as ``mermaid`` or ``dot`` text, with guards on the edges; with ``run_dir``, the run marked.

    By default the readable view (the phases in pipeline order, shared transitions drawn once per cluster
    of phases); ``full=True`` draws every pair of states that a transition joins. A torn last journal line
    (a crash mid-write) is ignored; any other damage is an :class:`EvidenceError`.
    """
    _check_format(format)
    if run_dir is None:
        return diagram_from_records(None, format, full)
    try:
        return diagram_from_records(load_records(run_dir), format, full)
    except EvidenceError as exc:  # say which journal, when the message does not already
        where = str(Path(run_dir) if Path(run_dir).is_file() else Path(run_dir) / JOURNAL)
        message = str(exc)
        raise EvidenceError(message if message.startswith(where) else f"{where}: {message}") from None


def render(dot_text: str, fmt: str = "svg") -> bytes:
    """Render DOT text with Graphviz's ``dot`` binary (optional; the text formats need nothing)."""
    if fmt not in RENDER_FORMATS:
        raise UsageError(f"cannot render to {fmt!r}; use one of: {', '.join(RENDER_FORMATS)}")
    dot = shutil.which("dot")
    if dot is None:
        raise UsageError(
            "rendering needs Graphviz's `dot` binary, which is not on PATH; install Graphviz "
            "(e.g. `apt-get install graphviz` or `brew install graphviz`), or use the Mermaid or DOT text"
        )
    done = run_captured([dot, f"-T{fmt}"], stdin=dot_text.encode(), timeout=RENDER_TIMEOUT_S)
    if done.timed_out:
        raise UsageError(f"`dot -T{fmt}` did not finish within {RENDER_TIMEOUT_S:.0f}s")
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-2000:]
        raise UsageError(f"`dot -T{fmt}` exited {done.returncode}: {tail or 'no error output'}")
    return done.stdout
