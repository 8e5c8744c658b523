"""The README's commands work verbatim, typed in order into a fresh shell after its set-up command.

A fresh shell has neither the project's virtual environment on its ``PATH`` nor the repository as its working
directory once a block has ``cd``-ed away: every ``fsm-runner`` (or ``python -m fsm_runner``) a shell block
calls must be reachable there. The set-up command is the first block; the test command is the second, and
``.ci/run`` runs it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from attrs import define

from tests.test_docs import README, REPO, parse_blocks, shell_lines, simple_commands

VENV_BIN = ".venv/bin/"


@define
class Shell:
    """What the user's shell has after the commands so far: the venv activated, and where it is."""

    activated: bool = False
    at_root: bool = True

    def run(self, words: list[str]) -> str | None:
        """Follow one simple command; return why an fsm-runner call in it would fail (None: it works)."""
        program = words[0]
        if (
            program in (".", "source")
            and len(words) > 1
            and words[1] in (".venv/bin/activate", "./.venv/bin/activate")
        ):
            self.activated = self.activated or self.at_root
            return None
        if program == "cd":
            self.at_root = len(words) > 1 and words[1] in (".", str(REPO))
            return None
        if not _calls_the_runner(words):
            return None
        if program.startswith((VENV_BIN, "./" + VENV_BIN)):
            return None if self.at_root else f"{program} is relative to the repository, but the shell left it"
        if "/" in program:
            return None  # an absolute path is where it says
        return None if self.activated else f"{program} is not on the PATH: the set-up does not activate .venv"


def _calls_the_runner(words: list[str]) -> bool:
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words = words[1:]
    if not words:
        return False
    name = Path(words[0]).name
    return name == "fsm-runner" or (
        bool(re.fullmatch(r"python(3(\.\d+)?)?", name)) and words[1:3] == ["-m", "fsm_runner"]
    )


def _blocks() -> list[list[str]]:
    return [list(shell_lines(b)) for b in parse_blocks(README) if b.lang in ("bash", "sh", "shell")]


def problems(blocks: list[list[str]]) -> list[str]:
    """Every runner call of the README that a fresh shell, after the set-up command, would not find."""
    setup, *rest = blocks
    found = []
    shell = Shell()
    for line in setup:
        for words in simple_commands(line):
            if (why := shell.run(words)) is not None:
                found.append(f"`{line}`: {why}")
    after_setup = (shell.activated, shell.at_root)
    for lines in rest:
        shell = Shell(*after_setup)  # each block is typed after the set-up, in the same shell
        for line in lines:
            for words in simple_commands(line):
                if (why := shell.run(words)) is not None:
                    found.append(f"`{line}`: {why}")
    return found


def test_every_runner_call_of_the_readme_is_reachable_after_the_set_up_command() -> None:
    blocks = _blocks()
    assert len(blocks) >= 3 and "python3 -m venv .venv" in blocks[0][0]
    assert any(_calls_the_runner(w) for lines in blocks[2:] for line in lines for w in simple_commands(line))
    assert problems(blocks) == []


def test_the_check_catches_a_set_up_that_leaves_the_venv_inactive() -> None:
    inactive = [
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/fsm-runner run examples/arith_bench"
    ]
    loop = [
        "cp -r examples/broken_target /tmp/bt && cd /tmp/bt",
        "fsm-runner run .",
        ".venv/bin/fsm-runner show latest",
    ]
    assert problems([inactive, loop]) == [
        "`fsm-runner run .`: fsm-runner is not on the PATH: the set-up does not activate .venv",
        "`.venv/bin/fsm-runner show latest`: .venv/bin/fsm-runner is relative to the repository, but the shell left it",
    ]
    active = [inactive[0].replace(".venv/bin/pip", ". .venv/bin/activate && pip")]
    assert problems([active, loop[:2]]) == []


def test_ci_runs_the_readmes_test_command() -> None:
    test_command = _blocks()[1]
    assert len(test_command) == 1 and "pytest" in test_command[0]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    ran = [line for line in ci if line.startswith(test_command[0])]
    assert ran, f".ci/run does not run the README's test command: {test_command[0]}"
    extra = shlex.split(ran[0][len(test_command[0]) :])
    assert all(word.startswith("-") or word == "no:cacheprovider" for word in extra), (
        extra
    )  # pytest options only
