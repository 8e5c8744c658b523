"""The sweep file: what it means, and every mistake reported with file:line like the contract files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsm_runner.errors import ContractError
from fsm_runner.sweeps.spec import SweepSpec, load_sweep, sweep_json_schema

GOOD = """\
version: 1
targets: [bench, "https://example.com/org/bench.git@v2"]
llms: [exact, ckpts/step-100]
mode: full
concurrency: 3
executor: local
out_dir: results/nightly
env: {HF_HOME: /data/hf, SEED: 7}
repair: {iters: 2, cmd: "agent --repo {repo}"}
"""


def write(tmp_path: Path, text: str, name: str = "sweep.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    for target in ("a", "bench"):  # the local targets the files below name
        (tmp_path / target).mkdir(exist_ok=True)
    return path


def test_a_full_file_is_read_and_paths_are_relative_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ckpts" / "step-100").mkdir(parents=True)
    path = write(tmp_path, GOOD)
    monkeypatch.chdir("/")  # the file means the same from anywhere
    spec = load_sweep(path)
    assert isinstance(spec, SweepSpec)
    assert spec.mode == "full" and spec.concurrency == 3 and spec.executor == "local"
    assert spec.env == {"HF_HOME": "/data/hf", "SEED": "7"}
    assert spec.repair.iters == 2 and spec.repair.cmd == "agent --repo {repo}"
    assert spec.resolved_targets() == [str(tmp_path / "bench"), "https://example.com/org/bench.git@v2"]
    # a directory is a checkpoint (absolute); a name that is no directory is a served model, kept as given
    assert spec.resolved_llms() == ["exact", str(tmp_path / "ckpts" / "step-100")]
    assert spec.resolved_out_dir() == tmp_path / "results" / "nightly"


def test_defaults(tmp_path: Path) -> None:
    spec = load_sweep(write(tmp_path, "version: 1\ntargets: bench\nllms: exact\n", name="nightly.yml"))
    assert spec.targets == ("bench",) and spec.llms == ("exact",)
    assert (spec.mode, spec.concurrency, spec.executor, spec.address, spec.num_cpus) == (
        "smoke", None, "local", None, 1.0
    )
    assert spec.resolved_out_dir() == tmp_path / "sweeps" / "nightly"


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("version: 1\ntargets: [a]\nllms: [x]\nconcurency: 2\n", 4, "concurency: unknown key, did you mean concurrency?"),
        ("version: 1\ntargets: [a]\nllms: [x]\nexecutor: slurm\n", 4, "executor: must be one of local, ray, got 'slurm'"),
        ("version: 1\ntargets: [a]\nllms: [x]\nconcurrency: 0\n", 4, "concurrency: must be between 1 and 1024, got 0"),
        ("version: 1\ntargets: [a]\nllms: [x]\nnum_cpus: -1\n", 4, "num_cpus: expected a positive number of CPUs"),
        ("version: 1\ntargets: [a]\nllms: [x]\nmode: fast\n", 4, "mode: must be one of smoke, full, got 'fast'"),
        ("version: 1\ntargets: [a]\nllms: [x]\nrepair: {iters: 1, cmdd: x}\n", 4, "repair.cmdd: unknown key, did you mean cmd?"),
        ("version: 1\ntargets: [a]\nllms: [x, x]\n", 3, "llms: 'x' is listed twice"),
        ("version: 1\ntargets: []\nllms: [x]\n", 2, "targets: must name at least one"),
        ("version: 1\ntargets: [a]\nllms: [x]\naddress: ray://h:10001\n", 4, "address: joins a Ray cluster"),
        ("version: 1\nllms: [x]\n", 1, "targets: missing; list the targets"),
        ("version: 2\ntargets: [a]\nllms: [x]\n", 1, "version: unsupported version 2"),
        ("version: 1\ntargets: [a]\nllms: [x]\nenv: {1X: y}\n", 4, "env: invalid variable name '1X'"),
        ("version: 1\ntargets: [a\nllms: [x]\n", 3, "invalid YAML"),
        ("version: 1\ntargets: [a]\nllms: []\n", 3, "llms: must name at least one; a sweep runs every one of the targets x llms"),
        ("version: 1\ntargets: [5]\nllms: [x]\n", 2, "targets[0]: expected a string, got int (quote it"),
        ("version: 1\ntargets:\n  - a\n  - nope\nllms: [x]\n", 4, "targets[1]: 'nope': no such directory"),
        ("version: 1\ntargets: ['ftp://x/y']\nllms: [x]\n", 2, "targets[0]: 'ftp://x/y': unsupported URL scheme 'ftp'"),
        ("version: 1\ntargets: [a]\nllms: [x]\nout_dir: sweep.yml\n", 4, "out_dir: "),
    ],
)
def test_mistakes_are_reported_at_their_line(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ContractError) as info:
        load_sweep(path)
    assert info.value.path == str(path) and info.value.line == line, str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: {expected}"), str(info.value)


def test_every_problem_is_listed_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\ntargets: [a]\nllms: [x]\nmdoe: smoke\nexecutor: slurm\n")
    with pytest.raises(ContractError) as info:
        load_sweep(path)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{path}:4: mdoe: unknown key, did you mean mode?")
    assert lines[1].startswith(f"{path}:5: executor: must be one of local, ray")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="file not found"):
        load_sweep(tmp_path / "nope.yml")


def test_the_schema_describes_every_key_and_accepts_the_example() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = sweep_json_schema()
    assert set(schema["properties"]) == {
        "version", "targets", "llms", "mode", "concurrency", "executor", "address", "num_cpus", "out_dir",
        "env", "repair",
    }
    assert schema["additionalProperties"] is False
    import yaml

    jsonschema.validate(yaml.safe_load(GOOD), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "targets": ["a"], "llms": ["x"], "concurency": 2}, schema)
    json.dumps(schema)
