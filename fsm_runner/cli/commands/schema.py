"""``fsm-runner schema [FILE]``: the JSON Schema of a contract file or of the sweep file, for editors."""

from __future__ import annotations

import argparse

from fsm_runner.cli.errors import EXIT_OK
from fsm_runner.cli.output import emit_json
from fsm_runner.contract import actions_json_schema, bootstrap_json_schema, pipeline_json_schema
from fsm_runner.errors import UsageError
from fsm_runner.sweeps.spec import sweep_json_schema

SCHEMAS = {
    "pipeline": pipeline_json_schema,
    "bootstrap": bootstrap_json_schema,
    "actions": actions_json_schema,
    "sweep": sweep_json_schema,
}


def command(args: argparse.Namespace) -> int:
    if args.which and args.file and args.which != args.file:
        raise UsageError(f"two files named: {args.which} and --file {args.file}; name one")
    emit_json(SCHEMAS[args.which or args.file or "pipeline"]())
    return EXIT_OK
