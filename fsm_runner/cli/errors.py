"""The CLI's one error handler: every exception a command raises becomes one message and one exit code.

=====================================  ====
a command that ran and succeeded       0
a failed run, or a target, evidence    1
or replay error
a contract or usage error              2
anything unexpected (a bug)            3   one ``error:`` line naming the file that holds the traceback
SIGINT / SIGTERM                       130 / 143
=====================================  ====

No command prints a traceback, whatever the files on disk contain.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping

from fsm_runner.cli.output import emit_json, print_error
from fsm_runner.engine.lifecycle import Interrupted, sigterm_raises
from fsm_runner.errors import ContractError, FsmRunnerError, UsageError
from fsm_runner.evidence.records import strip_credentials
from fsm_runner.evidence.redaction import Redactor

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def exit_code_of(exc: FsmRunnerError) -> int:
    return EXIT_USAGE if isinstance(exc, (ContractError, UsageError)) else EXIT_FAILED


def run_handled(args: argparse.Namespace, handler: Callable[[argparse.Namespace], int]) -> int:
    """Run one command's handler, turning whatever it raises into a message and an exit code."""
    json_mode = bool(getattr(args, "json", False))
    try:
        with sigterm_raises():
            return handler(args)
    except Interrupted as exc:
        print_error(f"interrupted: {exc}")
        return 128 + exc.signum
    except KeyboardInterrupt:
        print_error("interrupted: received SIGINT")
        return 128 + signal.SIGINT
    except FsmRunnerError as exc:
        _report(json_mode, type(exc).__name__, str(exc), _given_env(args))
        if isinstance(exc, ContractError) and args.command == "run":
            print_error("hint: `fsm-runner validate TARGET` lists every problem of the contract")
        return exit_code_of(exc)
    except BrokenPipeError:  # `fsm-runner runs | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: keep the traceback, show one line
        where = _save_traceback(exc)
        message = f"internal error ({type(exc).__name__}: {exc}); {where}"
        _report(json_mode, "internal", message, _given_env(args))
        return EXIT_INTERNAL


def _given_env(args: argparse.Namespace) -> dict[str, str]:
    """The ``--env K=V`` pairs of the command line (their secrets are masked like the environment's)."""
    pairs = getattr(args, "env", None) or []
    return {k: v for k, v in pairs if isinstance(k, str) and isinstance(v, str)}


def _report(json_mode: bool, kind: str, message: str, env: Mapping[str, str] | None = None) -> None:
    """One ``error:`` line (and the JSON error object with ``--json``); a closed stdout cannot stop it.

    The message may quote what a target or a command said: the secrets of the caller's environment and of
    ``--env`` (``env``) are masked, and a URL's credentials stripped, as in the evidence.
    """
    try:
        redactor = Redactor.from_env({**os.environ, **(env or {})})
        message = strip_credentials(redactor.mask(message))
    except Exception as exc:  # never the unmasked message, never a traceback instead of the error line
        message = f"{kind}: the message cannot be shown, masking its secrets failed ({type(exc).__name__})"
    if json_mode:
        with contextlib.suppress(OSError, ValueError):
            emit_json({"ok": False, "error": {"kind": kind, "message": message}})
    with contextlib.suppress(OSError, ValueError):
        print_error(f"error: {message}")


def _save_traceback(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, path = tempfile.mkstemp(
            prefix=f"fsm-runner-crash-{time.strftime('%Y%m%dT%H%M%S')}-", suffix=".txt"
        )
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        return "the traceback could not be saved"
    return f"the traceback is in {path}; please report it"
