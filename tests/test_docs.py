"""The documentation is executable: every fenced example in docs/*.md and README.md is checked.

Conventions for writing docs (README.md included):

- ```python blocks run in a fresh interpreter. The working directory is a fresh copy of examples/arith_bench,
  so ``fsm_runner.setup(".")`` drives a real target. A block with a string literal naming ``"examples/..."``
  runs from a directory holding a copy of the repository's examples instead (so ``examples/arith_bench``,
  ``examples/broken_target``, ... resolve). Blocks should ``assert`` what the prose claims.
- ```bash / ```sh / ```shell blocks (and the ``$ `` lines of ```console blocks): every ``fsm-runner ...`` or
  ``python -m fsm_runner ...`` command is parsed by the real argument parser; nothing is executed.
- ```yaml blocks whose first statement is ``version: 1`` are loaded with the contract loaders (as
  pipeline.yml, .aider_fsm/bootstrap.yml, .aider_fsm/actions.yml or a sweep file: a leading comment naming the
  file decides, else the top-level keys do). ```json and ```jsonl blocks must parse.
- An HTML comment on the line before a block changes how it is checked:
  ``<!-- doctest: skip -->`` compiles a python block without running it (needs the network, a GPU, ...; keep
  these rare); ``<!-- doctest: invalid -->`` on a yaml block means it must be *rejected*, and when a ```text
  block follows, its content must be the exact error message.
- Repo paths named anywhere in a doc (``examples/...``, ``docs/...``, ``fsm_runner/...``, ``states/...``,
  ``tests/...``, ``tools/...``, ``bench/...``) and relative links (with their ``#anchors``) must exist.
- Every dotted name under ``fsm_runner`` (``fsm_runner.replay``, ``fsm_runner.engine.topology``, ...) must
  import or resolve as an attribute, so a renamed module or function cannot linger in the docs.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from attrs import define

from fsm_runner.cli import build_parser
from fsm_runner.contract import load_actions, load_bootstrap, load_pipeline
from fsm_runner.errors import ContractError
from fsm_runner.sweeps.spec import load_sweep
from tests.conftest import procs_in

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
README = REPO / "README.md"
DOC_FILES = [*DOCS, README] if README.is_file() else DOCS
EXAMPLES = REPO / "examples"
#: Files whose python blocks are only compiled: their owners use placeholder paths (not editable here).
COMPILE_ONLY = {"state-machine.md": "its examples name placeholder run directories"}
BLOCK_TIMEOUT_S = 90
SHELL_LANGS = {"bash", "sh", "shell", "console"}
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*doctest:\s*(?P<what>[\w-]+)\s*-->\s*$")
_REPO_PATH = re.compile(r"(?<![\w./$~-])((?:examples|docs|fsm_runner|states|tests|tools|bench)/[\w.*/-]*)")
_DOTTED_NAME = re.compile(r"(?<![\w.])fsm_runner(?:\.[A-Za-z_]\w*)+")
_USES_EXAMPLES = re.compile(r"""["'](?:\./)?examples/""")  # a string literal naming a path under examples/
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")


# -- extracting blocks --------------------------------------------------------------------------------------


@define(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first content line
    lang: str
    text: str
    directive: str | None
    following_text: str | None  # a ```text block right after this one, if any

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """Fenced blocks in order, with the ``<!-- doctest: ... -->`` directive on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    raw: list[tuple[int, int, str, str, str | None]] = []  # start, end, lang, text, directive
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = len(match["indent"]), match["fence"], match["lang"].lower()
        before = next((ln for ln in reversed(lines[:i]) if ln.strip()), "")
        directive = m["what"] if (m := _DIRECTIVE.match(before)) else None
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        raw.append((i + 2, j, lang, "\n".join(body) + "\n", directive))
        i = j + 1
    blocks = []
    for k, (start, end, lang, text, directive) in enumerate(raw):
        following = None
        if k + 1 < len(raw):
            nstart, _, nlang, ntext, _ = raw[k + 1]
            gap = lines[end + 1 : nstart - 2]
            if nlang == "text" and not any(ln.strip() for ln in gap):
                following = ntext
        blocks.append(Block(path, start, lang, text, directive, following))
    return blocks


def all_blocks(*langs: str) -> list[Block]:
    return [b for path in DOC_FILES for b in parse_blocks(path) if b.lang in langs]


def params(blocks: list[Block]) -> list[pytest.param]:  # type: ignore[valid-type]
    return [pytest.param(b, id=b.id) for b in blocks]


def test_the_docs_have_examples() -> None:
    """The parser finds blocks at all (a broken fence regex must not make every other test vacuous)."""
    names = {b.path.name for b in all_blocks("python")}
    assert {"integration.md", "env_api.md", "replay.md", "evidence.md", "metrics_schema.md"} <= names
    assert len(all_blocks("yaml")) >= 10 and len(all_blocks("bash")) >= 5


# -- python blocks ------------------------------------------------------------------------------------------


def _ignore_generated(directory: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n in {".venv", "__pycache__", "artifacts", ".mypy_cache", ".ruff_cache"}}
    if Path(directory).name == ".aider_fsm":
        ignored |= {n for n in names if n.endswith((".json", ".jsonl", ".log", ".pid"))}
    return ignored


def copy_examples(dest: Path) -> Path:
    return Path(shutil.copytree(EXAMPLES, dest / "examples", ignore=_ignore_generated))


def hermetic_env(tmp_path: Path) -> dict[str, str]:
    """The caller's env without variables that would change what a stage does, and a private clone cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIDER_", "OPENAI_", "ARITH_BENCH_"))}
    env["FSM_RUNNER_CACHE_DIR"] = str(tmp_path / "clones")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def assert_nothing_left_running(root: Path) -> None:
    leftovers = procs_in(root)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"processes left running under {root}: {leftovers}"


@pytest.mark.parametrize("block", params(all_blocks("python")))
def test_python_block(block: Block, tmp_path: Path) -> None:
    # Padding keeps traceback line numbers equal to the doc's line numbers.
    source = "\n" * (block.line - 1) + block.text
    script = tmp_path / f"{block.path.name}.py"
    script.write_text(source, encoding="utf-8")
    compile(source, str(script), "exec")
    if block.directive == "skip" or block.path.name in COMPILE_ONLY:
        return
    examples = copy_examples(tmp_path / "ws")
    cwd = examples.parent if _USES_EXAMPLES.search(block.text) else examples / "arith_bench"
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=hermetic_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )
    try:
        assert proc.returncode == 0, (
            f"{block.id}: the example failed (exit {proc.returncode})\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
        )
    finally:
        assert_nothing_left_running(tmp_path)


# -- shell blocks -------------------------------------------------------------------------------------------


def shell_lines(block: Block) -> Iterator[str]:
    """Command lines of a shell block: continuation lines joined; for console blocks only the ``$ `` lines."""
    pending = ""
    for raw in block.text.splitlines():
        line = raw.rstrip()
        if block.lang == "console":
            if pending:
                line = pending + line.strip()
            elif line.startswith("$ "):
                line = line[2:]
            else:
                continue
        else:
            line = pending + line
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line.strip():
            yield line


def simple_commands(line: str) -> list[list[str]]:
    """Split a shell line into simple commands (at ; && || | &), dropping redirections and comments."""
    line = re.sub(r"(?<=\s)\d+(?=[<>])", "", line)  # 2>&1 -> >&1, 2>x -> >x
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    skip_next = False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token and set(token) <= set("<>&|;()"):
            if "<" in token or ">" in token:
                skip_next = True
            else:
                commands.append([])
        else:
            commands[-1].append(token)
    return [cmd for cmd in commands if cmd]


def cli_args(words: list[str]) -> list[str] | None:
    """The arguments after ``fsm-runner`` / ``python -m fsm_runner``, or None for any other command."""
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]
    if not words:
        return None
    program = Path(words[0]).name  # `.venv/bin/fsm-runner` is the same program
    if program == "fsm-runner":
        return words[1:]
    if re.fullmatch(r"python(3(\.\d+)?)?", program) and words[1:3] == ["-m", "fsm_runner"]:
        return words[3:]
    return None


def test_shell_helpers() -> None:
    """The splitter finds the CLI calls inside pipelines, chains, comments and redirections."""
    line = "cd x && A=1 fsm-runner runs . -n 5 > out 2>&1 | head; .venv/bin/python -m fsm_runner schema  # c"
    assert [cli_args(c) for c in simple_commands(line)] == [None, ["runs", ".", "-n", "5"], None, ["schema"]]
    assert cli_args(["python", "tools/diagram_docs.py", "--check"]) is None


@pytest.mark.parametrize("block", params(all_blocks(*SHELL_LANGS)))
def test_shell_block_cli_commands_parse(block: Block) -> None:
    parser = build_parser()
    for line in shell_lines(block):
        for words in simple_commands(line):
            args = cli_args(words)
            if args is None:
                continue
            try:
                parser.parse_args(args)
            except SystemExit as exc:
                assert exc.code == 0, f"{block.id}: `{line.strip()}` is rejected by the fsm-runner parser"


# -- repo paths and links -----------------------------------------------------------------------------------


def repo_paths(text: str) -> set[str]:
    found = {m.rstrip(".,:;") for m in _REPO_PATH.findall(text)}
    # A run directory has a `tests/` stage directory (tests/cmd01_try01.stdout): under tests/, only python
    # files and folders are taken for repo paths.
    return {p for p in found if not p.startswith("tests/") or p.endswith(".py") or "." not in p}


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_repo_paths_named_in_docs_exist(doc: Path) -> None:
    missing = []
    for rel in sorted(repo_paths(doc.read_text(encoding="utf-8"))):
        if not (list(REPO.glob(rel)) if any(c in rel for c in "*?[") else (REPO / rel).exists()):
            missing.append(rel)
    assert not missing, f"{doc.name} names repo paths that do not exist: {missing}"


def resolves(dotted: str) -> bool:
    """Whether ``fsm_runner.a.b.c`` names a module, or an attribute reached from the longest importable one."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not f"{module_name}.".startswith(f"{exc.name}."):
                raise  # a module that exists failed to import something else
            continue
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_resolves() -> None:
    assert resolves("fsm_runner.check_replay") and resolves("fsm_runner.engine.topology.PHASES")
    assert resolves("fsm_runner.states.phases")
    assert not resolves("fsm_runner.redrive") and not resolves("fsm_runner.replays.walk_journal")


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_fsm_runner_names_in_docs_resolve(doc: Path) -> None:
    names = set(_DOTTED_NAME.findall(doc.read_text(encoding="utf-8")))
    missing = sorted(name for name in names if not resolves(name))
    assert not missing, f"{doc.name} names what fsm_runner does not have: {missing}"


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings outside code fences (duplicates get -1, -2, ...)."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_fence = None
    for line in path.read_text(encoding="utf-8").splitlines():
        fence = _FENCE.match(line)
        if fence and (in_fence is None or fence["fence"].startswith(in_fence)):
            in_fence = None if in_fence else fence["fence"]
            continue
        heading = _HEADING.match(line)
        if in_fence or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading["text"].strip().lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for match in _LINK.finditer(text):
        target = match["target"]
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        anchor_missing = (
            bool(anchor) and dest.suffix == ".md" and dest.exists() and anchor not in heading_anchors(dest)
        )
        if not dest.exists() or anchor_missing:
            broken.append(target)
    assert not broken, f"{doc.name}: broken links {broken}"


# -- yaml and json blocks -----------------------------------------------------------------------------------


def _first_statement(text: str) -> str:
    return next(
        (ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), ""
    )


def contract_kind(text: str) -> str:
    """Which contract file (or sweep file) a yaml block is: named in a leading comment, else guessed from
    its keys."""
    head = text.split("version:", 1)[0]
    for kind in ("actions", "bootstrap", "pipeline", "sweep"):
        if f"{kind}.yml" in head:
            return kind
    try:
        keys = set(yaml.safe_load(text) or {})
    except yaml.YAMLError:
        return "pipeline"
    if {"targets", "llms"} & keys:
        return "sweep"
    if "actions" in keys:
        return "actions"
    if keys <= {"version", "cmds", "steps", "env", "workdir", "timeout_seconds", "retries"}:
        return "bootstrap"
    return "pipeline"


CONTRACT_FILES = {
    "pipeline": "pipeline.yml",
    "bootstrap": ".aider_fsm/bootstrap.yml",
    "actions": ".aider_fsm/actions.yml",
    "sweep": "sweep.yml",
}


def load_contract(text: str, root: Path) -> object:
    kind = contract_kind(text)
    rel = CONTRACT_FILES[kind]
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text, encoding="utf-8")
    if kind == "pipeline":
        return load_pipeline(root)
    if kind == "sweep":
        for target in yaml.safe_load(text).get("targets") or []:  # the local targets it names exist
            if isinstance(target, str) and "://" not in target:
                (root / target).mkdir(parents=True, exist_ok=True)
        return load_sweep(root / rel)
    return load_bootstrap(root) if kind == "bootstrap" else load_actions(root)


CONTRACT_BLOCKS = [b for b in all_blocks("yaml", "yml") if _first_statement(b.text) == "version: 1"]


@pytest.mark.parametrize("block", params(CONTRACT_BLOCKS))
def test_yaml_contract_block(block: Block, tmp_path: Path) -> None:
    root = tmp_path.resolve()
    if block.directive != "invalid":
        assert load_contract(block.text, root) is not None
        return
    with pytest.raises(ContractError) as info:
        load_contract(block.text, root)
    if block.following_text is not None:
        assert str(info.value).replace(f"{root}/", "") == block.following_text.strip()


@pytest.mark.parametrize("block", params(all_blocks("json", "jsonl")))
def test_json_block_parses(block: Block) -> None:
    if block.lang == "json":
        json.loads(block.text)
    else:
        for line in block.text.splitlines():
            if line.strip():
                assert isinstance(json.loads(line), dict)


# -- examples/train_loop.py ---------------------------------------------------------------------------------


def run_train_loop(target: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "train_loop.py"), str(target)],
        cwd=tmp_path,
        env=hermetic_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )


def test_train_loop_scores_two_checkpoints(tmp_path: Path) -> None:
    target = copy_examples(tmp_path / "ws") / "arith_bench"
    proc = run_train_loop(target, tmp_path)
    assert_nothing_left_running(tmp_path)
    assert proc.returncode == 0, proc.stderr
    scores = dict(re.findall(r"^checkpoint (\w+): score=([0-9.]+)", proc.stdout, re.M))
    assert set(scores) == {"exact", "sloppy"}, proc.stdout
    assert float(scores["exact"]) == 1.0 and float(scores["sloppy"]) < float(scores["exact"])
    runs = list((target / ".aider_fsm" / "artifacts").iterdir())
    assert len(runs) == 1, "one session, one run directory"
    assert (runs[0] / "rollout.2").is_dir() and (runs[0] / "evaluate.2").is_dir()


@pytest.mark.parametrize("broken", ["missing target", "rollout fails"])
def test_train_loop_exits_nonzero_when_a_call_fails(broken: str, tmp_path: Path) -> None:
    if broken == "missing target":
        target, expected = tmp_path / "nowhere", "setup failed"
    else:
        target = copy_examples(tmp_path / "ws") / "arith_bench"
        (target / "rollout.py").write_text("import sys\nsys.exit('rollout exploded')\n")
        expected = "rollout of exact failed"
    proc = run_train_loop(target, tmp_path)
    assert_nothing_left_running(tmp_path)
    assert proc.returncode == 1 and expected in proc.stderr, proc.stderr
    assert "checkpoint" not in proc.stdout
