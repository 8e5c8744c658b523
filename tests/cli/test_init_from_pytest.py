"""``fsm-runner init --from-pytest``: a contract whose score is the pass rate of the repository's test suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fsm_runner.contract import load_pipeline, validate_repo
from fsm_runner.contract.fields import RequiredKey
from fsm_runner.contract.skeleton import PYTEST_PIPELINE
from fsm_runner.execution.policy import SecurityPolicy


def cli(*args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "fsm_runner", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def plant(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({"pytest.ini": "[pytest]\n"}, "pytest.ini"),
        ({"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"}, "[tool.pytest.ini_options] in pyproject.toml"),
        ({"setup.cfg": "[metadata]\nname = x\n[tool:pytest]\n"}, "[tool:pytest] in setup.cfg"),
        ({"tox.ini": "[pytest]\n"}, "[pytest] in tox.ini"),
        ({"conftest.py": ""}, "conftest.py"),
        ({"test_one.py": "", "mod.py": ""}, "test_one.py"),
        ({"one_test.py": ""}, "one_test.py"),
        ({"tests/unit/test_a.py": "", "tests/__init__.py": ""}, "tests/unit/test_a.py"),
        ({"test/test_b.py": ""}, "test/test_b.py"),
    ],
)
def test_a_repository_with_a_pytest_suite_gets_the_contract(tmp_path: Path, files: dict[str, str], found: str) -> None:
    plant(tmp_path, files)
    done = cli("init", tmp_path, "--from-pytest")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"found a pytest suite: {found}\nwrote {tmp_path / 'pipeline.yml'}\n")
    assert (tmp_path / "pipeline.yml").read_text() == PYTEST_PIPELINE
    assert "'\"$AIDER_FSM_PYTHON\" --version'" in (tmp_path / ".aider_fsm" / "bootstrap.yml").read_text()
    assert validate_repo(tmp_path) == []


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"pyproject.toml": "[project]\nname = 'x'\n", "setup.cfg": "[metadata]\n", "tox.ini": "[tox]\n"},
        {"tests/__init__.py": "", "tests/helpers.py": ""},
        {"docs/test_examples.py": "", "src/pkg/test_internal.py": ""},
        {"testing.py": "", "tests.py": ""},
    ],
    ids=["empty", "configs-without-pytest", "tests-dir-without-test-files", "tests-elsewhere", "near-names"],
)
def test_a_repository_without_one_is_refused(tmp_path: Path, files: dict[str, str]) -> None:
    plant(tmp_path, files)
    done = cli("init", tmp_path, "--from-pytest")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"error: {tmp_path} has no pytest suite: no pytest configuration")
    assert "plain init" in done.stderr
    assert not (tmp_path / "pipeline.yml").exists() and not (tmp_path / ".aider_fsm").exists()


def test_the_contract_scores_in_evaluation_and_passes_the_default_policy(tmp_path: Path) -> None:
    plant(tmp_path, {"tests/test_x.py": ""})
    assert cli("init", tmp_path, "--from-pytest").returncode == 0
    spec = load_pipeline(tmp_path)
    assert spec.tests is None  # a failing test must lower the score, not stop the run before evaluation
    assert spec.evaluation is not None and spec.evaluation.metrics_path == ".aider_fsm/metrics.json"
    assert spec.evaluation.required_keys == (
        RequiredKey("ok"),
        RequiredKey("score", "number"),
        RequiredKey("total", "integer"),
    )
    env = {**os.environ, "AIDER_FSM_PYTHON": sys.executable}
    policy = SecurityPolicy(mode=spec.security.mode)
    assert [policy.check(cmd, env) for cmd in spec.evaluation.run_cmds] == [None] * 3
    assert any("|| test $? -le 1" in cmd for cmd in spec.evaluation.run_cmds)
    documented = (Path(__file__).resolve().parents[2] / "docs" / "integration.md").read_text()
    assert all(f"- '{cmd}'" in documented for cmd in spec.evaluation.run_cmds)  # the pattern the docs show


@pytest.mark.parametrize(
    "cmd",
    [
        "python -m pytest -q --junitxml=.aider_fsm/junit.xml || test $? -le 1",
        "python3 -m pytest -q --junitxml=.aider_fsm/junit.xml; test $? -le 1",
        "python3 -m fsm_runner.junit .aider_fsm/junit.xml -o .aider_fsm/metrics.json",
    ],
)
@pytest.mark.parametrize("strict", [True, False])
def test_the_plain_pattern_passes_the_default_policy(cmd: str, strict: bool) -> None:
    assert SecurityPolicy(strict=strict).check(cmd, dict(os.environ)) is None


PACKAGE = {
    "pyproject.toml": (
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "tinycalc"\nversion = "0.1.0"\n\n[tool.setuptools]\npackages = ["tinycalc"]\n'
    ),
    "MANIFEST.in": "graft tests\n",
    "tinycalc/__init__.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a + b\n",
    "tests/test_calc.py": (
        "from tinycalc import add, sub\n\n\n"
        "def test_add():\n    assert add(1, 2) == 3\n\n\n"
        "def test_add_negative():\n    assert add(-1, 1) == 0\n\n\n"
        "def test_add_zero():\n    assert add(0, 0) == 0\n\n\n"
        "def test_sub():\n    assert sub(3, 1) == 2\n"
    ),
}


@pytest.mark.e2e
def test_an_unpacked_sdist_scores_its_pass_rate(tmp_path: Path) -> None:
    """A pure-Python package with 3 passing tests and 1 failing, built as an sdist offline and unpacked: the
    contract init writes runs its suite and reports 0.75, with no python that has pytest on PATH."""
    source = tmp_path / "source"
    plant(source, PACKAGE)
    built = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta as b; print(b.build_sdist('dist'))"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    with tarfile.open(source / "dist" / built.stdout.strip().splitlines()[-1]) as sdist:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        sdist.extractall(tmp_path / "unpacked", **safe)  # type: ignore[arg-type]
    repo = tmp_path / "unpacked" / "tinycalc-0.1.0"
    assert (repo / "tests" / "test_calc.py").is_file() and (repo / "PKG-INFO").is_file()

    assert cli("init", "--from-pytest", cwd=repo).returncode == 0
    # The runner's interpreter runs the suite: PATH has no python with pytest (or fsm_runner) on it.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    done = cli("run", ".", "--json", cwd=repo, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["score"] == 0.75
    metrics = json.loads((repo / ".aider_fsm" / "metrics.json").read_text())
    assert (metrics["passed"], metrics["failed"], metrics["total"]) == (3, 1, 4)
    assert metrics["failed_tests"] == ["tests.test_calc::test_sub"]

    # A suite that cannot be collected (pytest exits 2) has no pass rate: the phase fails and says why.
    (repo / "tests" / "test_broken.py").write_text("def test_broken(:\n")
    broken = cli("run", ".", "--json", cwd=repo, env=env, timeout=300)
    assert broken.returncode == 1
    failed = json.loads(broken.stdout)
    assert failed["ok"] is False and failed["phase"] == "evaluate" and failed["score"] is None
    assert "error during collection" in failed["error"]["message"]
