"""The skeleton ``fsm-runner init`` writes: its commented sections are valid once uncommented."""

from __future__ import annotations

import re
from pathlib import Path

from fsm_runner.contract import load_pipeline
from fsm_runner.contract.skeleton import write_skeleton


def test_the_deploy_section_serves_and_probes_the_runs_port(tmp_path: Path) -> None:
    [pipeline, _] = write_skeleton(tmp_path)
    text = pipeline.read_text()
    deploy = re.search(r"^# deploy:.*?(?=^#\s*$|^# \w+:|\Z)", text, flags=re.S | re.M)
    assert deploy is not None
    uncommented = re.sub(r"^# ?", "", deploy.group(0), flags=re.M)
    pipeline.write_text(text + "\n" + uncommented)
    spec = load_pipeline(tmp_path).deploy
    assert spec is not None
    assert '--port "$AIDER_FSM_PORT"' in spec.setup_cmds[0]
    assert spec.health_cmds == ('curl -fsS "http://127.0.0.1:$AIDER_FSM_PORT/health"',)
    assert not any("pkill" in cmd for cmd in spec.teardown_cmds)  # would stop other runs' services too
