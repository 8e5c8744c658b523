"""The ray executor on a real local Ray cluster: the same rows as local cells, a bounded stop that leaves
nothing running, a clear error without Ray, and Ray's token kept out of every output."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsm_runner.sweeps.cells import CellProcess, CellResult, CellSpec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INSTALL = "pip install 'fsm-runner[ray]'"

#: Whether the ray extra is installed; found without importing Ray, which the executor does when it starts.
HAVE_RAY = importlib.util.find_spec("ray") is not None

#: What a cell's row may differ in from one run of the same cell to the next.
VOLATILE = ("run_id", "run_dir", "started_at", "duration_s")

EVAL_ONLY_PIPELINE = """\
version: 1
security:
  mode: safe
  max_cmd_seconds: 120
evaluation:
  run_cmds:
    - python3 evaluate.py
  metrics_path: .aider_fsm/metrics.json
  required_keys: [ok, score]
artifacts:
  out_dir: .aider_fsm/artifacts
"""

#: Marks that it runs (its pid, in the file the test names), then takes far longer than the test waits;
#: it ignores SIGTERM, so the run's teardown has to kill it, which takes the runner a moment.
SLEEPING_EVALUATE = """\
import json, os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(os.environ["SWEEP_MARK_FILE"], "w") as f:
    f.write(str(os.getpid()))
time.sleep(30)
json.dump({"ok": True, "score": 1.0}, open(".aider_fsm/metrics.json", "w"))
"""

#: Reports which RAY_* variables a cell's commands see.
ENV_PROBE_EVALUATE = """\
import json, os
names = sorted(k for k in os.environ if k.startswith("RAY_"))
json.dump({"ok": True, "score": 1.0, "ray_env": names}, open(".aider_fsm/metrics.json", "w"))
"""


def small_target(root: Path, evaluate: str) -> Path:
    (root / ".aider_fsm").mkdir(parents=True)
    (root / "pipeline.yml").write_text(EVAL_ONLY_PIPELINE)
    (root / "evaluate.py").write_text(evaluate)
    return root


def comparable(row: CellResult) -> dict[str, Any]:
    """A row without what differs between two runs of one cell: its run id (also inside paths, messages and
    metrics), its isolated copy's temp path, its times."""
    data = {k: v for k, v in row.to_json().items() if k not in VOLATILE}
    text = json.dumps(data, sort_keys=True)
    if row.run_id:
        text = text.replace(row.run_id, "<run>")
    text = re.sub(r"fsm-runner-[^/\"]*", "fsm-runner-<copy>", text)
    out: dict[str, Any] = json.loads(text)
    if isinstance(out.get("metrics"), dict):
        out["metrics"].pop("ts", None)
    return out


def ray_processes_under(root: Path) -> list[str]:
    """Live processes started for something under ``root``: by command line, working directory or an
    environment value that names it."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            if stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X"):
                continue
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            cwd = os.readlink(entry / "cwd").encode()
        except OSError:
            continue
        if needle in cmdline or needle in environ or cwd.startswith(needle):
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")[:200]
            found.append(f"{entry.name}: {shown}")
    return found


def start_sleeper(executor: Any, tmp_path: Path) -> Any:
    """A cell of the sleeping target, once its evaluation runs (it wrote its pid): the cell's handle."""
    target = small_target(tmp_path / "sleeper", SLEEPING_EVALUATE)
    mark = tmp_path / "evaluating.pid"
    spec = CellSpec(target=str(target), llm="exact", env_overrides={"SWEEP_MARK_FILE": str(mark)})
    (tmp_path / "work").mkdir()
    handle = executor.start(spec, tmp_path / "work", "sleeper")
    deadline = time.monotonic() + 60
    while not mark.exists() or not mark.read_text():
        assert handle.poll() is None, f"the cell ended before its phase ran: {handle.poll()}"
        assert time.monotonic() < deadline, "the cell's phase did not start within 60s"
        time.sleep(0.05)
    return handle


def run_until_done(handles: list[Any], timeout: float) -> list[CellResult]:
    deadline = time.monotonic() + timeout
    while any(h.poll() is None for h in handles):
        assert time.monotonic() < deadline, f"cells still running after {timeout}s"
        time.sleep(0.05)
    return [h.poll() for h in handles]


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Ray cluster for the module: starting one costs seconds."""
    if not HAVE_RAY:
        pytest.skip(f"Ray is not installed ({INSTALL})")
    from fsm_runner.sweeps.executors import make_executor

    ex = make_executor("ray", concurrency=2)
    try:
        yield ex
    finally:
        ex.close()


def test_a_lost_tasks_cell_is_killed_with_the_command_its_run_started(tmp_path: Path) -> None:
    """What the driver does when a task was force-cancelled: from the task's record alone, the cell and its
    run's command (which ignores SIGTERM and leads a session of its own) are killed, at once. No Ray needed:
    the record and the kill are plain files and processes."""
    from fsm_runner.sweeps.ray_executor import kill_lost_cell, record_cell

    target = small_target(tmp_path / "sleeper", SLEEPING_EVALUATE)
    mark = tmp_path / "evaluating.pid"
    spec = CellSpec(target=str(target), llm="exact", env_overrides={"SWEEP_MARK_FILE": str(mark)})
    (tmp_path / "work").mkdir()
    proc = CellProcess(spec, tmp_path / "work", "sleeper")
    try:
        record = record_cell(proc, tmp_path / "work", "sleeper")
        deadline = time.monotonic() + 60
        while not mark.exists() or not mark.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the cell's phase did not start"
            time.sleep(0.05)
        command = int(mark.read_text())
        assert os.getsid(command) != proc.pid
        kill_lost_cell(tmp_path / "work", "sleeper", wait=0.0)
        row = proc.wait(10)
        assert row is not None and not row.ok and "killed by signal 9" in (row.error or "")
        assert not record.exists()
        deadline = time.monotonic() + 5
        while ray_processes_under(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not ray_processes_under(tmp_path), "the run's command outlived its killed cell"
    finally:
        proc.stop(grace=0)


@pytest.mark.parametrize(
    "mark",
    [None, 7, "", "PATH=/usr/bin", "FSM_RUNNER_CELL=", "FSM_RUNNER_CELL=abc", "FSM_RUNNER_CELL=" + "g" * 24],
)
def test_only_a_cells_own_mark_is_ever_swept_by(mark: object) -> None:
    from fsm_runner.sweeps.cells import CELL_MARK_ENV, is_cell_mark

    assert not is_cell_mark(mark)
    assert is_cell_mark(f"{CELL_MARK_ENV}={secrets.token_hex(12)}")


@pytest.mark.ray
@pytest.mark.e2e
def test_ray_rows_equal_local_rows(executor: Any, tmp_path: Path) -> None:
    targets = [shutil.copytree(EXAMPLES / name, tmp_path / name) for name in ("arith_bench", "broken_target")]
    specs = [CellSpec(target=str(t), llm=llm) for t in targets for llm in ("exact", "sloppy")]
    (tmp_path / "local").mkdir()
    (tmp_path / "ray").mkdir()

    local = []
    for i, spec in enumerate(specs):
        row = CellProcess(spec, tmp_path / "local", f"cell{i}").wait(120)
        assert row is not None
        local.append(row)
    handles = [executor.start(spec, tmp_path / "ray", f"cell{i}") for i, spec in enumerate(specs)]
    remote = run_until_done(handles, timeout=180)

    assert [(r.target, r.llm, r.ok, r.score) for r in remote] == [
        (str(targets[0]), "exact", True, 1.0),
        (str(targets[0]), "sloppy", True, 0.75),
        (str(targets[1]), "exact", False, None),
        (str(targets[1]), "sloppy", False, None),
    ]
    for mine, theirs in zip(remote, local, strict=True):
        assert mine.run_id and mine.run_id != theirs.run_id
        assert Path(mine.run_dir or "").is_dir()  # the evidence is on this node: a local cluster
        a, b = comparable(mine), comparable(theirs)
        for key in sorted(set(a) | set(b)):
            assert a.get(key) == b.get(key), f"{mine.key} {key}: ray {a.get(key)!r} != local {b.get(key)!r}"


@pytest.mark.ray
@pytest.mark.e2e
def test_a_cell_whose_worker_dies_tears_its_run_down(executor: Any, tmp_path: Path) -> None:
    """The Ray worker running a cell's task is killed (a node's memory monitor, a crash): the cell, in a
    session of its own, sees its stdin end and stops as on SIGTERM; its row is a failed one."""
    handle = start_sleeper(executor, tmp_path)
    cell = json.loads((tmp_path / "work" / "sleeper.group.json").read_text())["pgid"]
    stat = Path(f"/proc/{cell}/stat").read_text()
    worker = int(stat[stat.rfind(")") + 2 :].split()[1])
    assert b"ray" in Path(f"/proc/{worker}/cmdline").read_bytes().lower()
    os.kill(worker, signal.SIGKILL)
    row = run_until_done([handle], timeout=60)[0]
    assert not row.ok and row.error
    deadline = time.monotonic() + 30
    while ray_processes_under(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = ray_processes_under(tmp_path)
    assert not left, "processes of the cell survived its worker:\n" + "\n".join(left)
    result = json.loads((tmp_path / "work" / "sleeper.result.json").read_text())
    assert result["error"].startswith("interrupted (received SIGTERM)"), result["error"]


@pytest.mark.ray
@pytest.mark.e2e
@pytest.mark.parametrize("grace", [10.0, 0.0], ids=["cancel", "force-cancel"])
def test_stop_returns_a_failed_row_in_time_and_leaves_nothing_running(
    executor: Any, tmp_path: Path, grace: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a grace the task stops its cell and the cell's row comes back; with none the task is killed and
    the driver kills the cell's processes itself, at once: the cell's command (which ignores SIGTERM and
    leads a session of its own) is still running then."""
    if grace == 0:
        from fsm_runner.sweeps import ray_executor

        monkeypatch.setattr(ray_executor, "FORCE_WAIT", 0.0)
    handle = start_sleeper(executor, tmp_path)
    assert ray_processes_under(tmp_path), "the scan does not see the running cell"

    started = time.monotonic()
    row = handle.stop(grace=grace)
    took = time.monotonic() - started

    assert took < max(grace, 8.0), f"stop took {took:.1f}s"
    assert not row.ok and row.error
    if grace == 0:
        assert row.error.startswith("interrupted:"), row.error
    assert handle.poll() == row
    left = ray_processes_under(tmp_path)
    assert not left, "processes of the cell survived its stop:\n" + "\n".join(left)


def test_without_ray_the_executor_names_the_install_command(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed: `import ray` raises ImportError
        import fsm_runner, fsm_runner.sweeps.executors, fsm_runner.sweeps.ray_executor
        from fsm_runner.errors import UsageError
        from fsm_runner.sweeps.executors import make_executor
        try:
            make_executor("ray", concurrency=1)
        except UsageError as exc:
            print(exc)
            sys.exit(0)
        sys.exit(1)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert INSTALL in proc.stdout
    assert "Traceback" not in proc.stderr


def test_importing_the_package_never_imports_ray() -> None:
    code = "import sys, fsm_runner, fsm_runner.sweeps.ray_executor; print('ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "False"


def token_in_files(root: Path, token: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and token in p.read_bytes()]


#: A sweep-like flow: start cells on a local cluster, collect their rows into results.jsonl, print them.
FLOW = """
import json, sys, time
from pathlib import Path
from fsm_runner.sweeps.cells import CellSpec
from fsm_runner.sweeps.executors import make_executor
targets, out = sys.argv[1:-1], Path(sys.argv[-1])
ex = make_executor("ray", concurrency=2)
try:
    handles = [ex.start(CellSpec(target=t, llm="exact"), out, f"cell{i}") for i, t in enumerate(targets)]
    while any(h.poll() is None for h in handles):
        time.sleep(0.05)
    with open(out / "results.jsonl", "w") as f:
        for h in handles:
            f.write(json.dumps(h.poll().to_json()) + "\\n")
            print(json.dumps(h.poll().to_json()))
finally:
    ex.close()
"""


@pytest.mark.ray
@pytest.mark.e2e
@pytest.mark.skipif(not HAVE_RAY, reason=f"Ray is not installed ({INSTALL})")
@pytest.mark.parametrize("where", ["file", "env"])
def test_the_token_is_never_printed_nor_written(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, where: str
) -> None:
    """Token authentication on, with the token where Ray keeps it by default (a file Ray writes on first
    use) or in the environment of the driver, and so of every Ray process, where a cell could pick it up."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_AUTH_MODE="token")
    if where == "env":
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    probe = small_target(tmp_path / "probe", ENV_PROBE_EVALUATE)
    arith = shutil.copytree(EXAMPLES / "arith_bench", tmp_path / "arith_bench")
    (tmp_path / "out").mkdir()

    flow = subprocess.run(
        [sys.executable, "-c", FLOW, str(probe), str(arith), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    assert flow.returncode == 0, flow.stdout + flow.stderr
    rows = [CellResult.from_json(json.loads(line)) for line in flow.stdout.splitlines()]
    assert [(r.ok, r.score) for r in rows] == [(True, 1.0), (True, 1.0)], flow.stdout + flow.stderr

    token = env["RAY_AUTH_TOKEN"] if where == "env" else (home / ".ray" / "auth_token").read_text().strip()
    assert len(token) >= 32
    assert token not in flow.stdout + flow.stderr
    assert not token_in_files(tmp_path, token.encode())
    assert rows[0].metrics is not None  # the cell's own commands never see the cluster's credentials
    assert "RAY_AUTH_TOKEN" not in rows[0].metrics["ray_env"]
    assert "RAY_AUTH_TOKEN_PATH" not in rows[0].metrics["ray_env"]
    assert "RAY_JOB_ID" not in rows[0].metrics["ray_env"]  # nor what Ray sets for its own workers


#: Three runs submitted at once on the ray executor (they share the one cluster the first starts), two sweeps
#: in the background at once, then a run on a connection the caller made itself.
SHARED_FLOW = """
import json, os, sys, time
import fsm_runner, ray
target = sys.argv[1]
a = fsm_runner.submit(target, "exact", executor="ray")
b = fsm_runner.submit(target, "sloppy", executor="ray")
c = fsm_runner.submit(target, "exact", executor="ray")
rows = [a.result(timeout=120).to_json(), b.result(timeout=120).to_json(), c.cancel().to_json()]
started = time.monotonic()
one = fsm_runner.sweep([target], ["exact"], executor="ray", out_dir="one", concurrency=1, wait=False)
two = fsm_runner.sweep([target], ["sloppy"], executor="ray", out_dir="two", concurrency=1, wait=False)
first = one.result(timeout=120)
wall = time.monotonic() - started
second = two.result(timeout=120)
sweeps = {"rows": [r.to_json() for r in (*first.rows, *second.rows)], "wall": wall, "duration": first.duration_s}
after = {"initialized": ray.is_initialized(), "auth_mode": os.environ.get("RAY_AUTH_MODE")}
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
d = fsm_runner.submit(target, "exact", executor="ray")
rows.append(d.result(timeout=120).to_json())
mine = ray.is_initialized()
ray.shutdown()
print(json.dumps({"rows": rows, "sweeps": sweeps, "after": after, "caller_connection_kept": mine}))
"""


@pytest.mark.ray
@pytest.mark.e2e
@pytest.mark.skipif(not HAVE_RAY, reason=f"Ray is not installed ({INSTALL})")
def test_executors_of_one_process_share_the_ray_connection(tmp_path: Path) -> None:
    """The first run that finishes must not shut Ray down under the others; the last one does, and leaves
    RAY_AUTH_MODE as it found it; a connection the caller made stays open."""
    target = shutil.copytree(EXAMPLES / "arith_bench", tmp_path / "arith_bench")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    proc = subprocess.run(
        [sys.executable, "-c", SHARED_FLOW, str(target)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b, c, d = out["rows"]
    assert (a["ok"], a["score"]) == (True, 1.0), a
    assert (b["ok"], b["score"]) == (True, 0.75), b
    assert c["ok"] or c["error"].startswith("cancelled: "), c  # it may be cancelled before its run starts
    assert "owner is unknown" not in json.dumps(out)
    swept = out["sweeps"]
    assert [(r["llm"], r["ok"], r["score"]) for r in swept["rows"]] == [("exact", True, 1.0), ("sloppy", True, 0.75)]
    assert swept["duration"] >= swept["wall"] - 3.0, swept  # the cluster's start-up is part of the sweep's time
    assert out["after"] == {"initialized": False, "auth_mode": None}
    assert (d["ok"], d["score"]) == (True, 1.0), d
    assert out["caller_connection_kept"] is True


def test_local_cells_never_see_the_ray_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local executor keeps Ray's credentials from a cell's commands as the ray executor does."""
    probe = small_target(tmp_path / "probe", ENV_PROBE_EVALUATE)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-for-cells")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.setenv("RAY_PROBE_SEEN", "1")  # a RAY_ variable that is no credential does get through
    (tmp_path / "work").mkdir()
    row = CellProcess(CellSpec(target=str(probe), llm="exact"), tmp_path / "work", "probe").wait(120)
    assert row is not None and row.ok, row
    assert row.metrics is not None, row
    seen = set(row.metrics["ray_env"])
    assert "RAY_PROBE_SEEN" in seen and not seen & {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, seen
