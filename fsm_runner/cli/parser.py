"""The ``fsm-runner`` command line: every command, option and help text (the handlers live in
:mod:`fsm_runner.cli.commands`, one module per command, imported only when that command runs)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from fsm_runner import __version__
from fsm_runner.contract.fields import MAX_WORKERS, workers_problem
from fsm_runner.engine import topology
from fsm_runner.engine.progress import DEFAULT_HEARTBEAT_S, HEARTBEAT_ENV, MIN_HEARTBEAT_S, interval_problem
from fsm_runner.errors import UsageError
from fsm_runner.evidence.layout import PIPELINE_REL
from fsm_runner.evidence.records import SANDBOXES
from fsm_runner.states import phase_named, section_aliases
from fsm_runner.sweeps import EXECUTORS

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
SCHEMA_FILES = ("pipeline", "bootstrap", "actions", "sweep")
RENDER_FORMATS = ("svg", "png", "pdf")
CLONES_DIR_HELP = "the clone cache `run --clones-dir` used for a git URL (default: the user cache)"

#: Per command: what it does (its --help description) and an example for the epilog.
HELP: dict[str, tuple[str, str]] = {
    "run": (
        "run a target through every phase and report each transition",
        "fsm-runner run https://github.com/org/bench@v1 --llm deepseek-v3.2 --mode smoke --require-samples\n"
        "fsm-runner run ./bench --until health --env OPENAI_API_BASE=http://127.0.0.1:8000/v1\n"
        "fsm-runner run ./bench --llm my-model --sandbox bwrap",
    ),
    "validate": (
        "check pipeline.yml, bootstrap.yml and actions.yml; print every problem with file:line",
        "fsm-runner validate ./bench",
    ),
    "init": (
        "write a commented skeleton contract that validates",
        "fsm-runner init ./bench\nfsm-runner init --from-pytest .   # score: the pytest suite's pass rate",
    ),
    "runs": (
        "list the runs of a repository or git URL, newest first",
        "fsm-runner runs ./bench --limit 5\nfsm-runner runs https://github.com/org/bench",
    ),
    "gc": (
        "remove finished runs of a repository or git URL and the checkouts they left (never a live run)",
        "fsm-runner gc ./bench --keep 10 --older-than 7d --dry-run\n"
        "fsm-runner gc https://github.com/org/bench --include-failed",
    ),
    "show": (
        "a run's timeline: transitions, durations, commands with exit codes, evidence",
        "fsm-runner show latest --repo ./bench",
    ),
    "replay": (
        "continue a failed run from the transition where it failed (same run id)",
        "fsm-runner replay latest --repo ./bench --repair-cmd 'aider --yes --message-file {prompt_file}'",
    ),
    "diagram": (
        "the state machine as Mermaid or DOT text, optionally with the path a run took",
        "fsm-runner diagram --run latest --repo ./bench --format dot --output run.dot",
    ),
    "compare": (
        "a table of a metric per target and checkpoint from sweep results or runs, with deltas; "
        "two run dirs alone: every metric key side by side",
        "fsm-runner compare sweeps/nightly --metric score --baseline exact --html report.html\n"
        "fsm-runner compare RUN_DIR_A RUN_DIR_B",
    ),
    "schema": (
        "print the JSON Schema of pipeline.yml v1 (or of another contract file, or of the sweep file)",
        "fsm-runner schema > pipeline.schema.json\nfsm-runner schema sweep > sweep.schema.json",
    ),
    "sweep": (
        "run every target x llm of a sweep file, one isolated run per cell; rows in results.jsonl",
        "fsm-runner sweep nightly.yml --concurrency 4\nfsm-runner sweep nightly.yml --resume\n"
        "fsm-runner sweep nightly.yml --executor ray --address ray://head:10001",
    ),
}


def env_pair(text: str) -> tuple[str, str]:
    """``--env NAME=VALUE``."""
    name, sep, value = text.partition("=")
    if not sep or not _ENV_NAME.match(name):  # the value may be a secret: never echo it
        if sep and not name:
            raise argparse.ArgumentTypeError("'=...': expected NAME=VALUE, the NAME before = is missing")
        raise argparse.ArgumentTypeError(f"{name!r}: expected NAME=VALUE (NAME: letters, digits, _)")
    return name, value


def count(text: str) -> int:
    """A whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return value


def duration(text: str) -> float:
    """``30m``, ``12h``, ``7d``: seconds."""
    from fsm_runner.prune import parse_duration

    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds(text: str) -> float:
    """A heartbeat interval (``--heartbeat``): 0 (off), or a number of seconds >= 0.1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if interval_problem(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 0 or a number of seconds >= {MIN_HEARTBEAT_S:g} (0 turns heartbeats off)"
        )
    return value


def until_phase(text: str) -> str:
    """``--until``: a phase, or the pipeline.yml section it runs (``evaluation`` is ``evaluate``)."""
    phase = phase_named(text)
    if phase is None:
        aliases = ", ".join(section_aliases())
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a phase ({', '.join(topology.PHASES)}) or a section name ({aliases})"
        )
    return phase


def workers(text: str) -> int:
    """A number of cells at once: whole, 1 to MAX_WORKERS (the sweep file's limit)."""
    try:
        value: object = int(text)
    except ValueError:
        value = text
    problem = workers_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_WORKERS}")
    assert isinstance(value, int)
    return value


def positive(text: str) -> int:
    """A whole number >= 1."""
    value = count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """Option groups several commands accept, as argparse parent parsers."""
    groups = {
        name: argparse.ArgumentParser(add_help=False)
        for name in ("json", "pipeline", "lookup", "repair", "sandbox", "heartbeat")
    }
    groups["heartbeat"].add_argument(
        "--heartbeat",
        type=seconds,
        metavar="SECONDS",
        help="when stderr is not a terminal, print a line every SECONDS while a phase runs: the phase, its "
        f"elapsed time, command n/m and the command's last output line (default: ${HEARTBEAT_ENV}, else "
        f"{DEFAULT_HEARTBEAT_S:g}; 0: off)",
    )
    groups["json"].add_argument("--json", action="store_true", help="print JSON instead of text")
    groups["pipeline"].add_argument(
        "--pipeline",
        default=PIPELINE_REL,
        metavar="REL",
        help=f"pipeline file in the repo (default: {PIPELINE_REL})",
    )
    lookup = groups["lookup"]
    lookup.add_argument(
        "--repo", default=".", metavar="REPO", help="directory or git URL whose runs RUN names (default: .)"
    )
    lookup.add_argument("--artifacts-dir", type=Path, metavar="DIR", help="look for runs here instead")
    lookup.add_argument("--clones-dir", type=Path, metavar="DIR", help=CLONES_DIR_HELP)
    repair = groups["repair"]
    repair.add_argument(
        "--repair-cmd",
        metavar="CMD",
        help="coding agent command line run on failure; {prompt_file}, {request_file}, {repo} are filled in",
    )
    repair.add_argument(
        "--repair-iters",
        type=count,
        metavar="N",
        help="repairs allowed (default: 3 with --repair-cmd, else 0)",
    )
    groups["sandbox"].add_argument(
        "--sandbox",
        choices=SANDBOXES,
        help="bwrap: run every command and the repair agent under bubblewrap (read-only file system except "
        "the repo, the command's evidence dir and a private /tmp); default: the contract's security.sandbox, "
        "which this may tighten, never loosen (see docs/security_model.md)",
    )
    return groups


def _env_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--env", action="append", type=env_pair, default=[], metavar="K=V", help=help_text)


def _gc_options(gc: argparse.ArgumentParser) -> None:
    gc.add_argument("repo", nargs="?", default=".", metavar="REPO", help="repository or git URL (default: .)")
    gc.add_argument("--artifacts-dir", type=Path, metavar="DIR", help="prune runs here instead")
    gc.add_argument("--clones-dir", type=Path, metavar="DIR", help=CLONES_DIR_HELP)
    gc.add_argument("--keep", type=count, default=0, metavar="N", help="keep the newest N runs (default: 0)")
    gc.add_argument(
        "--older-than",
        type=duration,
        metavar="AGE",
        help="only runs that ended more than AGE ago: 30m, 12h, 7d (s, m, h, d, w)",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument(
        "--include-failed",
        action="store_true",
        help="also remove failed, interrupted and unreadable runs (replay can no longer continue them)",
    )


def _compare_options(p: argparse.ArgumentParser) -> None:
    """``compare``: what to read, which metric, against which column, and the page."""
    p.add_argument(
        "sources",
        nargs="+",
        metavar="RESULTS_OR_RUNS",
        help="results.jsonl files, sweep directories (holding results.jsonl) or run directories",
    )
    p.add_argument(
        "--metric",
        metavar="KEY",
        help="the metric of the cells: a metrics key, dotted for nested ones (default: score)",
    )
    p.add_argument(
        "--baseline", metavar="LLM", help="the column deltas are taken against (default: the first)"
    )
    p.add_argument(
        "--html", metavar="FILE", help="also write the table and a chart as one self-contained page"
    )


def _sweep_options(p: argparse.ArgumentParser) -> None:
    """``sweep``: the file, and the settings a flag overrides."""
    p.add_argument("sweep_file", metavar="SWEEP.yml", help="the sweep file (see `fsm-runner schema sweep`)")
    p.add_argument("--executor", choices=EXECUTORS, help="local (processes here) or ray; default: the file's")
    p.add_argument("--address", metavar="ADDR", help="ray: join this cluster instead of starting one")
    p.add_argument(
        "--concurrency",
        type=workers,
        metavar="N",
        help="cells at once (default: the file's, else the cores)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="do not run again the cells whose latest row succeeded with the commit and contract they have "
        "now",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsm-runner",
        description="Drive a benchmark repository through its own contract (pipeline.yml), step by step.",
        epilog="example:\n  fsm-runner init . && fsm-runner validate . && fsm-runner run . --llm my-model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fsm-runner {__version__}")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _shared_options()

    def command(name: str, groups: str = "") -> argparse.ArgumentParser:
        text, example = HELP[name]
        return subs.add_parser(
            name,
            help=text,
            description=text,
            epilog="example:\n  " + example.replace("\n", "\n  "),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[shared[g] for g in groups.split()],
        )

    run = command("run", "json pipeline repair sandbox heartbeat")
    run.add_argument("target", metavar="TARGET", help="local directory or git URL (optionally URL@REF)")
    run.add_argument("--llm", help="model: a local model directory or a remote model name")
    run.add_argument(
        "--mode", choices=("smoke", "full"), default="smoke", help="AIDER_EVAL_MODE (default: smoke)"
    )
    run.add_argument("--require-samples", action="store_true", help="the rollout must write valid samples")
    run.add_argument(
        "--no-require-metrics",
        action="store_true",
        help="let a pipeline without evaluation.run_cmds or evaluation.metrics_path end ok (no score)",
    )
    _env_option(run, "variable for every stage (repeatable)")
    run.add_argument(
        "--until",
        type=until_phase,
        metavar="PHASE",
        help="stop after PHASE: "
        + ", ".join(topology.PHASES)
        + "; or the pipeline.yml section it runs: "
        + ", ".join(f"{k} ({v})" for k, v in section_aliases().items()),
    )
    tree = run.add_mutually_exclusive_group()
    tree.add_argument(
        "--wait",
        action="store_true",
        help="when another live run holds the local TARGET, wait for it to finish instead of failing",
    )
    tree.add_argument(
        "--isolate",
        action="store_true",
        help="run in a private copy of the local TARGET (uncommitted files included), so another live run "
        "of it is not disturbed; the evidence still goes to TARGET's runs",
    )
    run.add_argument("--artifacts-dir", metavar="DIR", help="write run evidence here instead of the repo")
    run.add_argument("--clones-dir", metavar="DIR", help="where git targets are cloned")
    run.add_argument("--ref", help="git branch, tag or commit to check out")
    run.add_argument(
        "--unattended",
        choices=("strict", "guided"),
        default="strict",
        help="strict (default): no stdin, CI=1, interactive-looking commands refused; guided: allows "
        "auth.interactive steps (see docs/security_model.md)",
    )

    validate = command("validate", "json pipeline sandbox")
    validate.add_argument("path", nargs="?", default=".", metavar="PATH", help="repository (default: .)")

    init = command("init")
    init.add_argument("dir", nargs="?", default=".", metavar="DIR", help="repository (default: .)")
    init.add_argument("--force", action="store_true", help="overwrite existing contract files")
    init.add_argument(
        "--from-pytest",
        action="store_true",
        help="a complete contract whose score is the pass rate of DIR's pytest suite (failing tests lower "
        "the score; see docs/integration.md, Scores from a test suite)",
    )

    runs = command("runs", "json pipeline")
    runs.add_argument(
        "repo", nargs="?", default=".", metavar="REPO", help="repository or git URL (default: .)"
    )
    runs.add_argument("--artifacts-dir", type=Path, metavar="DIR", help="list runs here instead")
    runs.add_argument("--clones-dir", type=Path, metavar="DIR", help=CLONES_DIR_HELP)
    runs.add_argument("-n", "--limit", type=count, metavar="N", help="show at most N runs")

    _gc_options(command("gc", "json pipeline"))

    show = command("show", "json lookup")
    show.add_argument("run", metavar="RUN", help="run directory, run id, or `latest`")

    replay = command("replay", "json lookup repair sandbox heartbeat")
    replay.add_argument("run", metavar="RUN", help="run directory, run id, or `latest`")
    replay.add_argument("--dry-run", action="store_true", help="only check that the run can be replayed")
    replay.add_argument(
        "--wait", action="store_true", help="when another live run holds the repository, wait for it"
    )
    _env_option(replay, "override again (secret overrides are not stored with the run; repeatable)")

    diagram = command("diagram", "lookup")
    diagram.add_argument("--run", metavar="RUN", help="mark the path this run took")
    diagram.add_argument("--format", choices=("mermaid", "dot"), default="mermaid", help="default: mermaid")
    diagram.add_argument(
        "--full",
        action="store_true",
        help="draw every transition, one arrow per pair of states (default: shared ones once per cluster)",
    )
    diagram.add_argument(
        "--render", choices=RENDER_FORMATS, help="render the DOT text with Graphviz `dot` (needs --output)"
    )
    diagram.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")

    _compare_options(command("compare", "json"))

    schema = command("schema")
    schema.add_argument(
        "which", nargs="?", choices=SCHEMA_FILES, metavar="FILE", help="one of: " + ", ".join(SCHEMA_FILES)
    )
    schema.add_argument("--file", choices=SCHEMA_FILES, help="the same as FILE (default: pipeline)")

    _sweep_options(command("sweep", "json"))
    return parser
