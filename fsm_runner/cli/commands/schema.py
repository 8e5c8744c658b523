"""``fsm-runner schema``: the JSON Schema of a contract file, for editors."""

from __future__ import annotations

import argparse

from fsm_runner.cli.errors import EXIT_OK
from fsm_runner.cli.output import emit_json
from fsm_runner.contract import actions_json_schema, bootstrap_json_schema, pipeline_json_schema

SCHEMAS = {
    "pipeline": pipeline_json_schema,
    "bootstrap": bootstrap_json_schema,
    "actions": actions_json_schema,
}


def command(args: argparse.Namespace) -> int:
    emit_json(SCHEMAS[args.file]())
    return EXIT_OK
