"""State diagrams of the machine as Mermaid or DOT text, optionally marked with the path one run took.

The text is generated from :func:`fsm_runner.engine.topology.transitions_table` (the one topology), so
nothing native is needed: Mermaid renders on GitHub, DOT renders wherever Graphviz is installed. Given a
run, its journal supplies the marks: states visited, where the run failed, the current state, the repair
loops and how often each edge was taken.
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


def _counted_labels(edge: Edge, marks: RunMarks | None) -> list[str]:
    labels: list[str] = []
    for trigger, label in zip(edge.triggers, edge.labels, strict=True):
        times = marks.taken.get((edge.source, edge.dest, trigger), 0) if marks else 0
        notes = [f"taken {times}x"] if times else []
        if not edge.in_machine:
            notes.append("not in this machine")
        labels.append(f"{label} ({', '.join(notes)})" if notes else label)
    return labels


def _edge_taken(edge: Edge, marks: RunMarks | None) -> int:
    if marks is None:
        return 0
    return sum(marks.taken.get((edge.source, edge.dest, t), 0) for t in edge.triggers)


def _run_summary(marks: RunMarks) -> str:
    if not marks.transitions:
        return "run with no recorded transitions yet"
    failed = f", failed at {', '.join(marks.failed_at)}" if marks.failed_at else ""
    return f"run with {marks.transitions} recorded transitions, current state {marks.current}{failed}"


# -- Mermaid ------------------------------------------------------------------------------------------


def _mermaid(marks: RunMarks | None) -> str:
    lines = [
        "stateDiagram-v2",
        "    %% generated from fsm_runner.engine.topology by fsm_runner.diagrams - do not edit by hand",
    ]
    if marks is not None:
        lines.append(f"    %% {_run_summary(marks)}")
    lines.append(f"    [*] --> {topology.PHASES[0]}")
    edges = machine_edges() if marks is None else run_edges(marks)
    for edge in edges:
        lines.append(f"    {edge.source} --> {edge.dest} : {' | '.join(_counted_labels(edge, marks))}")
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


def _edge_attrs(edge: Edge, marks: RunMarks | None) -> str:
    label = "\\n".join(_quote(text)[1:-1] for text in _counted_labels(edge, marks))
    attrs: dict[str, str] = {}
    taken = _edge_taken(edge, marks)
    if edge.repair_loop:
        attrs.update(color=_REPAIR_COLOR, fontcolor=_REPAIR_COLOR, style="dashed")
    if not edge.in_machine:
        attrs["style"] = "dotted"
    if marks is not None and taken:
        if not edge.repair_loop:
            attrs.update(color=_TAKEN_COLOR, fontcolor=_TAKEN_COLOR)
        attrs.update(penwidth="2.5", style="bold")
    elif marks is not None and not edge.repair_loop:
        attrs.update(color=_IDLE_COLOR, fontcolor=_IDLE_COLOR)
    if not set(edge.triggers) & _LAYOUT_TRIGGERS:
        attrs["constraint"] = "false"  # only the pipeline's forward moves decide the left-to-right layout
    extra = f", {_attrs(attrs)}" if attrs else ""
    return f'label="{label}"{extra}'


def _dot(marks: RunMarks | None) -> str:
    lines = [
        "// generated from fsm_runner.engine.topology by fsm_runner.diagrams - do not edit by hand",
        "digraph fsm_runner {",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded", fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
        '    "__start__" [shape=point, width=0.15, label=""];',
    ]
    if marks is not None:
        lines.append(f"    // {_run_summary(marks)}")
    for state in topology.STATES:
        attrs = _node_attrs(state, marks)
        lines.append(f"    {_quote(state)} [{_attrs(attrs)}];" if attrs else f"    {_quote(state)};")
    lines.append(f'    "__start__" -> {_quote(topology.PHASES[0])};')
    edges = machine_edges() if marks is None else run_edges(marks)
    for edge in edges:
        lines.append(f"    {_quote(edge.source)} -> {_quote(edge.dest)} [{_edge_attrs(edge, marks)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- public API ---------------------------------------------------------------------------------------


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise UsageError(f"unknown diagram format {format!r}; use one of: {', '.join(FORMATS)}")


def diagram_from_records(
    records: Iterable[TransitionRecord | Mapping[str, Any]] | None, format: str = "mermaid"
) -> str:
    """The diagram, marked with the run the journal ``records`` describe (``None``: the bare machine)."""
    _check_format(format)
    marks = None if records is None else marks_from_records(records)
    return _mermaid(marks) if format == "mermaid" else _dot(marks)


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


def diagram(format: str = "mermaid", run_dir: str | os.PathLike[str] | None = None) -> str:
    """The machine as ``mermaid`` or ``dot`` text, with guards on the edges; with ``run_dir``, the run marked.

    A torn last journal line (a crash mid-write) is ignored; any other damage is an :class:`EvidenceError`.
    """
    _check_format(format)
    if run_dir is None:
        return diagram_from_records(None, format)
    try:
        return diagram_from_records(load_records(run_dir), format)
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
