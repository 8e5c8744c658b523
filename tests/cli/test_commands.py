"""The ``fsm-runner`` command line, run as a subprocess against real targets in tmp dirs.

Cheap variations (help texts, argument errors, output options) call :func:`fsm_runner.cli.main` in-process.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fsm_runner
from fsm_runner.cli import main
from tests.conftest import TargetFactory, pid_alive, service_pid, write_target
from tests.helpers import target_files as files

LONG_ROLLOUT = files.PIPELINE.replace("    - python3 rollout.py", "    - echo rolling; sleep 30")
SLOW_TESTS = files.PIPELINE.replace(
    "  cmds: python3 stage.py tests", "  cmds: echo tick-tock-line; sleep 1.2"
)
BROKEN_PIPELINE = "version: 1\ntests:\n  cmdz: echo hi\nevaluation:\n  run_cmds: x\n  retries: -1\n"
COMMANDS = ("run", "validate", "init", "runs", "show", "replay", "diagram", "schema")


def cli(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsm_runner", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def no_traceback(proc: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback" not in proc.stdout + proc.stderr


def run_dirs(repo: Path) -> list[Path]:
    root = repo / ".aider_fsm" / "artifacts"
    return sorted(p for p in root.iterdir() if (p / "run.json").is_file())


def run_json(run_dir: Path) -> dict[str, object]:
    return dict(json.loads((run_dir / "run.json").read_text()))


def by_status(repo: Path) -> dict[object, Path]:
    return {run_json(p)["status"]: p for p in run_dirs(repo)}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A repo with two finished runs (a failed one, then an ok one after a fix) and the ok run's output."""
    repo = write_target(tmp_path_factory.mktemp("history") / "repo", scoring=files.SCORING_BROKEN)
    assert cli("run", repo, "--llm", "toy").returncode == 1
    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    ok = cli("run", repo, "--llm", "toy")
    assert ok.returncode == 0, ok.stderr
    return repo, ok


# -- run -------------------------------------------------------------------------------------------------


def test_run_reports_every_transition_and_a_summary(history: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    repo, proc = history
    lines = proc.stdout.splitlines()
    transitions = [line for line in lines if re.match(r"\[\s*\d+\.\d+s\] \w+ -> \w+", line)]
    moves = [re.findall(r"(\w+) -> (\w+)", line)[0] for line in transitions]
    assert moves[0] == ("clone", "bootstrap") and moves[-1] == ("teardown", "done")
    assert ("evaluate", "benchmark") in moves and len(moves) == 11
    assert "status   ok" in lines and "score    1.0" in lines
    run_dir = Path(next(line for line in lines if line.startswith("run dir")).split(None, 2)[2])
    assert run_dir == by_status(repo)["ok"]
    assert "\r" not in proc.stderr  # no status line when stderr is not a terminal


def test_run_json_prints_only_the_result(make_target: TargetFactory) -> None:
    repo = make_target()
    proc = cli("run", repo, "--llm", "toy", "--mode", "full", "--json", "--env", "AIDER_EVAL_LIMIT=4")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True and result["score"] == 1.0 and result["metrics"]["ok"] is True
    assert Path(result["run_dir"]).is_dir() and result["run_id"] == Path(result["run_dir"]).name
    env = json.loads((repo / ".aider_fsm" / "envs" / "rollout.json").read_text())
    assert (
        env["AIDER_LLM_MODEL"] == "toy"
        and env["AIDER_EVAL_MODE"] == "full"
        and env["AIDER_EVAL_LIMIT"] == "4"
    )


def test_failed_run_exits_1_and_replay_after_a_fix_exits_0(make_target: TargetFactory) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    failed = cli("run", repo, "--llm", "toy")
    assert failed.returncode == 1 and no_traceback(failed)
    assert "status   failed in evaluate" in failed.stdout and "fsm-runner replay" in failed.stdout
    assert re.search(r"evaluate -> failed\s+failed", failed.stdout)
    (run_dir,) = run_dirs(repo)

    dry = cli("replay", run_dir.name, "--dry-run", "--repo", repo)
    assert dry.returncode == 0 and "replayable" in dry.stdout

    (repo / ".aider_fsm" / "scoring.py").write_text(files.SCORING_GOOD)
    fixed = cli("replay", "latest", "--repo", repo)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "failed -> evaluate" in fixed.stdout and "status   ok" in fixed.stdout
    assert run_dirs(repo) == [run_dir] and run_json(run_dir)["redrive_count"] == 1

    again = cli("replay", run_dir)  # a ReplayError: the run is done, there is nothing to replay
    assert again.returncode == 1 and no_traceback(again)
    assert again.stderr == f"error: cannot replay: {run_dir}: the run finished successfully; there is nothing to replay\n"


def test_repair_cmd_fixes_the_failed_phase(make_target: TargetFactory, tmp_path: Path) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    good = tmp_path / "good_scoring.py"
    good.write_text(files.SCORING_GOOD)
    agent = f"cp {shlex.quote(str(good))} {{repo}}/.aider_fsm/scoring.py"
    proc = cli("run", repo, "--llm", "toy", "--repair-cmd", agent, "--repair-iters", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"evaluate -> repair .*\(repairs used 0/1\)", proc.stdout)
    assert "repair -> evaluate" in proc.stdout and "status   ok" in proc.stdout


@pytest.mark.parametrize(
    ("until", "ran", "not_ran"),
    [
        ("health", "health", "rollout"),
        ("rollout", "rollout", "evaluate"),
        ("evaluate", "evaluate", "benchmark"),
    ],
)
def test_run_until_stops_after_the_phase_and_tears_down(
    make_target: TargetFactory, until: str, ran: str, not_ran: str
) -> None:
    repo = make_target()
    proc = cli("run", repo, "--llm", "toy", "--until", until)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"status   stopped after {until}" in proc.stdout
    (run_dir,) = run_dirs(repo)
    assert (run_dir / ran).is_dir() and not (run_dir / not_ran).exists()
    assert (run_dir / "teardown").is_dir()  # the deployment was stopped
    pid = service_pid(repo)
    assert pid is not None and not pid_alive(pid)


def test_run_until_json_reports_where_it_stopped(make_target: TargetFactory) -> None:
    repo = make_target()
    proc = cli("run", repo, "--llm", "toy", "--until", "health", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)  # stdout holds the result document only
    assert result["until"] == "health" and result["ok"] is True
    assert result["phase"] == "health" and result["error"] is None and result["score"] is None
    # clone ran when the run was set up; the rest ran in this call, up to and including health
    assert [p["phase"] for p in result["phases"]] == ["bootstrap", "auth", "tests", "deploy_setup", "health"]
    assert Path(result["run_dir"]) == run_dirs(repo)[0]
    pid = service_pid(repo)
    assert pid is not None and not pid_alive(pid)


@pytest.mark.parametrize(
    ("pipeline", "target", "code", "message"),
    [
        (
            BROKEN_PIPELINE,
            "target",
            2,  # a ContractError
            r"error: \S+/pipeline\.yml:3: tests\.cmdz: unknown key, did you mean cmds\?",
        ),
        (files.PIPELINE, "missing", 1, r"error: target path \S+ does not exist"),  # a TargetError
    ],
)
def test_run_with_a_bad_contract_or_target_says_why(
    make_target: TargetFactory, tmp_path: Path, pipeline: str, target: str, code: int, message: str
) -> None:
    make_target(pipeline=pipeline)
    proc = cli("run", tmp_path / target)
    assert proc.returncode == code and no_traceback(proc)
    assert re.match(message, proc.stderr) and proc.stdout == ""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_exits_with_its_code_after_teardown(make_target: TargetFactory, sig: int, code: int) -> None:
    repo = make_target(pipeline=LONG_ROLLOUT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fsm_runner", "run", str(repo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    while "health -> rollout" not in seen:
        line = proc.stdout.readline()
        assert line, "the run ended before rollout"
        seen += line
    deadline = time.monotonic() + 10
    while not list((run_dirs(repo)[0] / "rollout").glob("*.stdout")) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the rollout command has started
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code and "Traceback" not in err
    assert f"interrupted: received {signal.Signals(sig).name}" in err
    assert re.search(r"rollout -> failed\s+interrupt", seen + out)
    state = run_json(run_dirs(repo)[0])
    assert state["status"] == "interrupted" and state["last_error"]["phase"] == "rollout"  # type: ignore[index]
    pid = service_pid(repo)
    assert pid is not None and not pid_alive(pid)


def test_a_long_phase_ticks_on_a_terminal(make_target: TargetFactory) -> None:
    repo = make_target(pipeline=SLOW_TESTS)
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fsm_runner", "run", str(repo), "--until", "tests"],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            timeout=60,
        )
        os.close(slave)
        status = b""
        while select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            status += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    ticks = re.findall(rb"\r\x1b\[K\.\.\. tests (\d+\.\d)s  \| tick-tock-line", status)
    assert len(ticks) >= 2 and float(ticks[-1]) > float(ticks[0])
    assert status.endswith(b"\r\x1b[K")  # the status line is cleared at the end
    assert "\x1b" not in proc.stdout


# -- contract commands -----------------------------------------------------------------------------------


def test_validate_prints_every_problem_with_file_and_line(make_target: TargetFactory) -> None:
    repo = make_target(pipeline=BROKEN_PIPELINE, bootstrap="version: 2\ncmds: [a]\n")
    (repo / ".aider_fsm" / "actions.yml").write_text("version: 1\nactions:\n  - id: a\n    kind: nope\n")
    proc = cli("validate", repo)
    assert proc.returncode == 2 and no_traceback(proc)
    problems = proc.stdout.splitlines()
    where = [re.match(r"(\S+?):(\d+): ", p).groups() for p in problems]  # type: ignore[union-attr]
    assert where == [
        (str(repo / "pipeline.yml"), "3"),
        (str(repo / "pipeline.yml"), "6"),
        (str(repo / ".aider_fsm" / "bootstrap.yml"), "1"),
        (str(repo / ".aider_fsm" / "actions.yml"), "4"),
    ]
    assert "4 problem(s)" in proc.stderr


def test_validate_a_clean_repo(make_target: TargetFactory, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_target()
    proc = cli("validate", ".", cwd=repo)
    assert (
        proc.returncode == 0 and proc.stdout == f"ok: {repo}: pipeline.yml, .aider_fsm/bootstrap.yml valid\n"
    )
    assert main(["validate", str(repo), "--json"]) == 0 and json.loads(capsys.readouterr().out) == []
    assert main(["validate", str(repo / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_init_writes_a_skeleton_that_validates_and_never_fakes_a_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "new"
    proc = cli("init", repo)
    assert proc.returncode == 0, proc.stderr
    assert (repo / "pipeline.yml").is_file() and (repo / ".aider_fsm" / "bootstrap.yml").is_file()
    assert main(["validate", str(repo)]) == 0

    (repo / "pipeline.yml").write_text("mine\n")
    assert main(["init", str(repo)]) == 2
    assert "already exist" in capsys.readouterr().err and (repo / "pipeline.yml").read_text() == "mine\n"
    assert main(["init", str(repo), "--force"]) == 0 and "version: 1" in (repo / "pipeline.yml").read_text()

    run = cli("run", repo)
    assert run.returncode == 1 and "placeholder from fsm-runner init" in run.stdout


def test_schema_prints_the_pipeline_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    proc = cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"version", "tests", "deploy", "evaluation", "benchmark"} <= set(schema["properties"])
    assert main(["schema", "--file", "bootstrap"]) == 0
    assert "bootstrap" in json.loads(capsys.readouterr().out)["title"]


# -- reading runs ----------------------------------------------------------------------------------------


def test_runs_lists_newest_first(
    history: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = history
    runs = by_status(repo)
    proc = cli("runs", repo)
    assert proc.returncode == 0
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:2] == ["RUN", "ID"] and "FAILED PHASE" in header and "DURATION" in header
    newest, oldest = (row.split() for row in rows)
    assert newest[:5] == [runs["ok"].name, "ok", "-", "1", "1.0"]
    assert oldest[:5] == [runs["failed"].name, "failed", "evaluate", "1", "-"]
    assert all(re.fullmatch(r"\d+\.\d\ds", cells[5]) for cells in (newest, oldest))

    assert main(["runs", str(repo), "--json", "--limit", "1"]) == 0
    (only,) = json.loads(capsys.readouterr().out)
    assert only["run_id"] == runs["ok"].name and only["duration_s"] > 0
    assert main(["runs", str(tmp_path)]) == 0 and "no runs under" in capsys.readouterr().out


def test_show_gives_the_timeline_with_commands_and_evidence(
    history: tuple[Path, subprocess.CompletedProcess[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = history
    failed, ok = by_status(repo)["failed"], by_status(repo)["ok"]
    proc = cli("show", "latest", cwd=repo)
    assert proc.returncode == 0
    assert f"run      {ok.name}" in proc.stdout and "status   ok" in proc.stdout
    assert re.search(r"\n\s+11\s+\d\d:\d\d:\d\d\s+teardown -> done\s+ok\s+\d+\.\d\ds", proc.stdout)
    evidence = re.findall(r"cmd \d+ try \d+  exit 0  \S+  (\S+)", proc.stdout)
    assert "evaluate/cmd02_try01.json" in evidence and all((ok / e).is_file() for e in evidence)

    assert main(["show", failed.name[:-2], "--repo", str(repo)]) == 0  # a unique prefix of the run id
    text = capsys.readouterr().out
    assert "status   failed in evaluate" in text and "guards: has_required_keys=no" in text
    assert "error    guard: guard has_required_keys failed" in text and "evidence " in text

    assert main(["show", str(failed), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["journal"]) == len((failed / "journal.jsonl").read_text().splitlines())
    assert data["summary"]["status"] == "failed" and data["run"]["run_id"] == failed.name

    missing = cli("show", "20000101T000000Z-000000", "--repo", repo)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no run") and no_traceback(missing)


def test_show_and_runs_list_every_round_of_a_session(make_target: TargetFactory, capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_target()
    checkpoints = ("ckpt-1", "ckpt-2", "ckpt-3")
    with fsm_runner.setup(repo) as sess:
        for llm in checkpoints:
            assert sess.evaluate(llm=llm).ok

    assert main(["show", str(sess.run_dir), "--json"]) == 0
    rounds = json.loads(capsys.readouterr().out)["rounds"]
    assert [(r["round"], r["llm"], r["ok"]) for r in rounds] == [(1, "ckpt-1", True), (2, "ckpt-2", True), (3, "ckpt-3", True)]
    for entry in rounds:
        assert entry["metrics"]["llms"] == [entry["llm"]] and entry["score"] == 1.0
        assert entry["phases"][-5:] == ["rollout", "evaluate", "benchmark", "verify", "teardown"]
        samples = sess.run_dir / entry["samples"]
        assert {json.loads(line)["meta"]["llm"] for line in samples.read_text().splitlines()} == {entry["llm"]}

    shown = cli("show", sess.run_dir)
    assert shown.returncode == 0, shown.stderr
    blocks = re.findall(r"^round (\d+)\s+(\S+)\s+llm (\S+)  mode smoke  score (\S+)$", shown.stdout, re.M)
    assert blocks == [("1", "ok", "ckpt-1", "1.0"), ("2", "ok", "ckpt-2", "1.0"), ("3", "ok", "ckpt-3", "1.0")]
    for n in (1, 2, 3):
        assert f"samples  round_{n}/samples.jsonl  (8 samples)" in shown.stdout
        assert f"metrics  round_{n}/metrics.json  ok=true score=1.0 run_id=\"{sess.run_id}\"" in shown.stdout

    listed = cli("runs", repo)
    header, row = listed.stdout.splitlines()
    assert header.split()[4:7] == ["PHASE", "ROUNDS", "SCORE"]
    assert row.split()[:5] == [sess.run_id, "ok", "-", "3", "1.0"] and row.split()[6] == "ckpt-3"


def test_a_damaged_run_is_an_evidence_error_for_show_and_unreadable_for_runs(
    history: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = history
    copy = tmp_path / "repo" / ".aider_fsm" / "artifacts" / by_status(repo)["ok"].name
    shutil.copytree(by_status(repo)["ok"], copy)
    journal = copy / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    lines[2] = json.dumps({**json.loads(lines[2]), "seq": "three"}) + "\n"
    journal.write_text("".join(lines))

    shown = cli("show", copy)
    assert shown.returncode == 1 and no_traceback(shown) and shown.stdout == ""
    (line,) = shown.stderr.splitlines()
    assert line.startswith(f"error: {journal}:3: ") and "seq: expected a whole number, got 'three'" in line

    assert main(["show", str(copy), "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "EvidenceError" and error["message"] == line.removeprefix("error: ")

    assert main(["runs", str(tmp_path / "repo"), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["status"] == "unreadable" and listed["problem"] == error["message"]
    (copy / "run.json").write_text("{torn")
    assert main(["runs", str(tmp_path / "repo")]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == [copy.name, "unreadable"]
    assert cli("show", copy).returncode == 1


def test_diagram_prints_or_writes_the_machine(history: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    repo, _ = history
    proc = cli("diagram")
    assert proc.returncode == 0 and "evaluate" in proc.stdout and "teardown" in proc.stdout
    out = repo.parent / "run.dot"
    dot = cli("diagram", "--run", "latest", "--repo", repo, "--format", "dot", "--output", out)
    assert dot.returncode == 0, dot.stderr
    assert "digraph" in out.read_text() and "evaluate" in out.read_text()


def test_diagram_full_flag_draws_every_transition_and_both_mark_the_failed_run(
    history: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    repo, _ = history
    (failed_journal,) = [
        path
        for path in repo.glob(".aider_fsm/artifacts/*/journal.jsonl")
        if '"dest": "failed"' in path.read_text() or '"dest":"failed"' in path.read_text()
    ]
    readable, full = cli("diagram"), cli("diagram", "--full")
    assert readable.returncode == full.returncode == 0, (readable.stderr, full.stderr)
    arrows = [line for line in readable.stdout.splitlines() if " --> " in line]
    every = [line for line in full.stdout.splitlines() if " --> " in line]
    assert len(arrows) <= 30 < len(every)
    assert "repairable --> repair : " in readable.stdout and "evaluate --> repair : " in full.stdout
    for argv in (["--format", "mermaid"], ["--format", "mermaid", "--full"]):
        marked = cli("diagram", "--run", failed_journal.parent, *argv)
        assert marked.returncode == 0, marked.stderr
        assert re.search(r"^\s*class evaluate failed_at$", marked.stdout, re.M), marked.stdout
        assert re.search(r"^\s*class failed current$", marked.stdout, re.M)
    dot = cli("diagram", "--run", failed_journal.parent, "--format", "dot", "--full")
    assert dot.returncode == 0 and 'ltail="cluster_' not in dot.stdout and '"evaluate" -> "repair"' in dot.stdout
    assert 'ltail="cluster_repairable"' in cli("diagram", "--format", "dot").stdout


def test_diagram_render_without_graphviz_says_how_to_install_it(tmp_path: Path) -> None:
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    out = tmp_path / "machine.svg"
    proc = cli("diagram", "--render", "svg", "--output", out, env={**os.environ, "PATH": str(no_tools)})
    assert proc.returncode == 2 and no_traceback(proc) and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: rendering needs Graphviz's `dot` binary") and "install Graphviz" in line
    assert "apt-get install graphviz" in line and not out.exists()


# -- help and argument errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"usage: fsm-runner {command}" in text and f"example:\n  fsm-runner {command}" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["run", "x", "--env", "NO_EQUALS"], "'NO_EQUALS': expected NAME=VALUE"),
        (["run", "x", "--env", "=1"], "'=...': expected NAME=VALUE, the NAME before = is missing"),
        (["run", "x", "--repair-iters", "-1"], "'-1' is not a whole number >= 0"),
        (["run", "x", "--until", "lunch"], "'lunch' is not a phase (clone, bootstrap,"),
        (["run", "x", "--mode", "huge"], "invalid choice: 'huge'"),
        (["diagram", "--format", "png"], "invalid choice: 'png'"),
        (["diagram", "--render", "svg"], "error: --render writes an image: give the file with --output FILE"),
        (["diagram", "--render", "gif", "--output", "x.gif"], "invalid choice: 'gif'"),
        (["replay", "latest", "--repo", "/nonexistent/repo"], "error: no runs under /nonexistent/repo"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_env_option_never_echoes_its_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "x", "--env", "BAD-NAME=sk-test-123456789"]) == 2
    err = capsys.readouterr().err
    assert "'BAD-NAME': expected NAME=VALUE" in err and "sk-test-123456789" not in err


def test_run_json_reports_a_contract_error_as_json(tmp_path: Path) -> None:
    repo = tmp_path / "bad"
    repo.mkdir()
    (repo / "pipeline.yml").write_text(BROKEN_PIPELINE)
    proc = cli("run", repo, "--json")
    assert proc.returncode == 2 and no_traceback(proc)
    data = json.loads(proc.stdout)
    assert data["ok"] is False and data["error"]["kind"] == "ContractError"
    assert "tests.cmdz: unknown key, did you mean cmds?" in data["error"]["message"]


def test_run_shows_what_the_guardrails_reverted(make_target: TargetFactory, tmp_path: Path) -> None:
    repo = make_target(scoring=files.SCORING_BROKEN)
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import sys, pathlib\n"
        "repo = pathlib.Path(sys.argv[1])\n"
        f"(repo / '.aider_fsm' / 'scoring.py').write_text({files.SCORING_GOOD!r})\n"
        "(repo / 'outside.txt').write_text('x')\n"
    )
    proc = cli("run", repo, "--llm", "m", "--repair-cmd", f"{sys.executable} {agent} {{repo}}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "changed: .aider_fsm/scoring.py" in proc.stdout
    assert "reverted by the guardrails: outside.txt" in proc.stdout
    assert not (repo / "outside.txt").exists()
    shown = cli("show", "latest", "--repo", repo)
    assert "reverted by the guardrails: outside.txt" in shown.stdout


def test_a_target_without_rollout_says_so(make_target: TargetFactory) -> None:
    pipeline = files.PIPELINE.replace("rollout:\n  run_cmds:\n    - python3 stage.py rollout\n    - python3 rollout.py\n", "")
    repo = make_target(pipeline=pipeline)
    proc = cli("run", repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(pipeline.yml has no rollout commands)" in proc.stdout
    assert "without rollout()" not in proc.stdout


@pytest.mark.parametrize(
    ("cmd", "problem"),
    [('"echo a\\0b"', "contains a NUL byte"), ('"echo \\udc80"', "contains '\\udc80', a lone surrogate")],
    ids=["nul", "surrogate"],
)
def test_validate_and_run_refuse_unencodable_commands_with_file_and_line(
    tmp_path: Path, cmd: str, problem: str
) -> None:
    (tmp_path / "pipeline.yml").write_text(f"version: 1\ntests:\n  cmds:\n    - {cmd}\n")
    where = f"{(tmp_path / 'pipeline.yml').resolve()}:4: tests.cmds[0]: {problem}"
    for args in (["validate", tmp_path], ["run", tmp_path]):
        done = subprocess.run([sys.executable, "-m", "fsm_runner", *map(str, args)], capture_output=True, text=True)
        assert done.returncode == 2, done.stdout + done.stderr
        assert where in done.stdout + done.stderr and "internal" not in done.stderr
    assert not (tmp_path / ".aider_fsm").exists()  # refused before any run started


def test_run_refuses_an_env_value_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yml").write_text("version: 1\ntests:\n  cmds: echo\n")
    argv = [sys.executable.encode(), b"-m", b"fsm_runner", b"run", bytes(tmp_path), b"--env", b"BAD=a\xed\xa0\x80"]
    done = subprocess.run(argv, capture_output=True)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, stderr
    assert stderr.startswith("error: env_overrides: BAD contains the byte 0xed, which is not UTF-8"), stderr
    assert "internal" not in stderr and not (tmp_path / ".aider_fsm").exists()


def test_a_secret_variable_that_is_not_utf8_is_masked_and_crashes_nothing(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yml").write_text('version: 1\ntests:\n  cmds: \'echo "got $SOME_TOKEN"\'\n')
    env = {**os.environb, b"SOME_TOKEN": b"se\xffcret-value"}
    argv = [sys.executable, "-m", "fsm_runner", "run", str(tmp_path)]
    done = subprocess.run([*argv, "--until", "tests"], capture_output=True, env=env)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    (out,) = (tmp_path / ".aider_fsm" / "artifacts").glob("*/tests/cmd01_try01.stdout")
    assert out.read_bytes() == b"got ***\n"

    (tmp_path / "pipeline.yml").write_text("version: 1\ntests: {cmds: []}\nbogus: 1\n")
    failed = subprocess.run(argv, capture_output=True, env=env)
    stderr = failed.stderr.decode("utf-8", "replace")
    assert failed.returncode == 2 and stderr.startswith("error: ") and "Traceback" not in stderr, stderr
