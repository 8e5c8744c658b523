"""The package's shape: dependencies point one way, nothing shipped is dead weight, the import names are safe.

Layers, lowest first; a module may import a lower layer, and its own subpackage:

    errors, typing, evidence.layout   (names and shapes everything may use)
    evidence -> contract -> execution -> engine -> states | repair -> api, session, replay, ... -> sweeps -> cli

``states`` and ``repair`` sit side by side and never import each other: the repair phase reaches the repair
package only through the engine's ``Repairer`` protocol.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.cli import build_parser

PACKAGE = Path(fsm_runner.__file__).resolve().parent
REPO = PACKAGE.parent

BASE = {"fsm_runner.errors", "fsm_runner.typing", "fsm_runner.evidence.layout"}
LAYERS: dict[str, int] = {
    "fsm_runner.evidence": 1,
    "fsm_runner.contract": 2,
    "fsm_runner.junit": 2,
    "fsm_runner.execution": 3,
    "fsm_runner.engine": 4,
    "fsm_runner.states": 5,
    "fsm_runner.repair": 5,
    "fsm_runner.results": 6,
    "fsm_runner.targets": 6,
    "fsm_runner.trees": 6,
    "fsm_runner.session": 6,
    "fsm_runner.api": 6,
    "fsm_runner.replays": 6,
    "fsm_runner.diagrams": 6,
    "fsm_runner.sweeps": 7,
    "fsm_runner.prune": 7,
    "fsm_runner.cli": 8,
    "fsm_runner.__main__": 9,
    "fsm_runner": 9,
}


def module_files() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (``states/`` is reached as fsm_runner.states)."""
    found: dict[str, Path] = {}
    for folder, _dirs, files in os.walk(PACKAGE, followlinks=True):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = Path(folder, name).relative_to(PACKAGE.parent).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = Path(folder, name)
    return found


MODULES = module_files()


def imported_names(path: Path) -> set[str]:
    """Every module name a file imports; ``from a import b`` counts ``a`` and ``a.b`` (b may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    """The package's own modules a file imports."""
    return {name for name in imported_names(path) if name in MODULES}


def layer_of(module: str) -> tuple[int, str]:
    """(layer, group): the group is the subpackage or top-level module the layer entry names."""
    if module in BASE:
        return 0, module
    best = max((key for key in LAYERS if module == key or module.startswith(key + ".")), key=len)
    return LAYERS[best], best


def test_every_module_has_a_layer() -> None:
    assert "fsm_runner.states.deploy_setup" in MODULES  # the phases are reached through the package
    for module in MODULES:
        layer_of(module)


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, path in sorted(MODULES.items()):
        level, group = layer_of(module)
        for target in sorted(imports_of(path)):
            if target == module:
                continue
            t_level, t_group = layer_of(target)
            allowed = t_level < level or t_group == group or (level == t_level == 6)
            if t_level == 9 and target == "fsm_runner" and module.startswith("fsm_runner.cli"):
                allowed = True  # the CLI reads __version__ from the package
            if not allowed:
                wrong.append(f"{module} (layer {level}) imports {target} (layer {t_level})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_package_never_reaches_the_top_level_states_name() -> None:
    def generic(name: str) -> bool:
        return name == "states" or name.startswith("states.")

    assert not [m for m, p in MODULES.items() if any(generic(n) for n in imported_names(p))]


#: Modules users run with ``python -m``: entry points, like the package's ``__main__``.
RUN_WITH_M = {"fsm_runner.__main__", "fsm_runner.junit"}


def test_no_shipped_module_is_dead_weight() -> None:
    """Every module is imported by another package module, or is an entry point (a package, a module run
    with ``python -m``, or the handler of a CLI command, which the CLI imports by the command's name)."""
    imported = {target for path in MODULES.values() for target in imports_of(path)}
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    handlers = {f"fsm_runner.cli.commands.{name}" for name in commands}
    assert handlers <= set(MODULES), "a command without a handler module"
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    for module in RUN_WITH_M - {"fsm_runner.__main__"}:
        assert 'if __name__ == "__main__":' in MODULES[module].read_text(), f"{module} is not runnable"
    unused = set(MODULES) - imported - packages - handlers - RUN_WITH_M
    assert not unused, f"modules nothing in the package imports: {sorted(unused)}"


@pytest.mark.parametrize("shadow", ["states.py", "states/__init__.py"])
def test_a_users_own_states_module_does_not_break_the_import(tmp_path: Path, shadow: str) -> None:
    """RL code often has a ``states.py`` of its own next to the training script."""
    path = tmp_path / shadow
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("raise RuntimeError('the user module was imported')\n")
    script = (
        "import fsm_runner, runner_env\n"
        "from fsm_runner.states import phases\n"
        "print(sorted(phases()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "deploy_setup" in done.stdout and "benchmark" in done.stdout


def test_each_phase_module_is_named_after_its_state() -> None:
    from fsm_runner.engine.topology import PHASES, REPAIR
    from fsm_runner.states import phases

    registry = phases()
    assert list(registry) == [*PHASES, REPAIR]
    for name, phase in registry.items():
        assert type(phase).__module__ == f"fsm_runner.states.{name}"
    helpers = {p.stem for p in (REPO / "states").glob("*.py")} - set(registry) - {"__init__"}
    assert all(h.startswith("_") for h in helpers), helpers


def test_every_public_name_resolves_and_is_listed_once() -> None:
    names = fsm_runner.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(fsm_runner, name) is not None


def test_the_replay_function_is_not_shadowed_by_its_module() -> None:
    """``fsm_runner.replay`` is the function (its module is ``replays``, like ``diagram`` in ``diagrams``)."""
    script = (
        "import fsm_runner.replays\n"
        "from fsm_runner.replays import DryRunReport\n"
        "import fsm_runner\n"
        "from fsm_runner import can_replay, replay\n"
        "assert callable(fsm_runner.replay) and callable(replay), type(fsm_runner.replay)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
