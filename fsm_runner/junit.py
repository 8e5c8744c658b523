"""Turn a JUnit XML report (pytest's ``--junitxml``) into a metrics file: the pass rate as ``score``.

Run as ``python -m fsm_runner.junit REPORT.xml -o METRICS.json`` from an ``evaluation`` that runs a test
suite (docs/integration.md, "Scores from a test suite"). Every ``<testcase>`` under the root ``<testsuites>``
or ``<testsuite>`` counts once: failed when it has a ``<failure>``, else an error when it has an ``<error>``,
else skipped when it has a ``<skipped>`` (pytest writes xfail that way), else passed. ``score`` is
passed / (total - skipped). A report with no runnable test is read, but it cannot score: the metrics say
``ok: false`` with an ``error`` text and ``score: null``, so the phase fails with that text.

The report is streamed through expat (a 10k-testcase file in well under a second, memory independent of its
size), and a document type declaration is refused outright: a test report has no use for entities.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.parsers import expat

from fsm_runner.errors import ContractError, EvidenceError
from fsm_runner.evidence.atomic import write_json_atomic

#: How many failed or errored test ids the metrics list, so a large broken suite stays a small file.
MAX_LISTED = 50
_OUTCOMES = ("failure", "error", "skipped")  # a testcase's children, strongest first
_CHUNK = 1 << 16


class _Refused(Exception):
    """Raised inside an expat callback: the report declares a document type or entities."""


class _Counter:
    """Expat callbacks that count testcases by outcome without building a tree."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.suites = 0
        self.counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        self.failed_tests: list[str] = []
        self._case: str | None = None  # the open testcase's id
        self._found: set[str] = set()  # outcome elements inside it

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if self.root is None:
            self.root = name
        if name == "testsuite":
            self.suites += 1
        elif name == "testcase":
            classname, case = attrs.get("classname", ""), attrs.get("name", "")
            self._case = f"{classname}::{case}" if classname else case
            self._found = set()
        elif self._case is not None and name in _OUTCOMES:
            self._found.add(name)

    def end(self, name: str) -> None:
        if name != "testcase" or self._case is None:
            return
        if "failure" in self._found or "error" in self._found:
            self.counts["failed" if "failure" in self._found else "errors"] += 1
            if len(self.failed_tests) < MAX_LISTED:
                self.failed_tests.append(self._case)
        elif "skipped" in self._found:
            self.counts["skipped"] += 1
        else:
            self.counts["passed"] += 1
        self._case = None


def _refuse(*_args: Any) -> None:
    raise _Refused


def junit_metrics(report: Path | str) -> dict[str, Any]:
    """The metrics of the JUnit XML file ``report``.

    Keys: ``ok``, ``score`` (passed / runnable, None when nothing ran), ``total``, ``passed``, ``failed``,
    ``errors``, ``skipped``, ``failed_tests`` (at most :data:`MAX_LISTED` ids) and ``report``; plus ``error``
    when ``ok`` is false. Raises :class:`ContractError` naming the file (and the line, for bad XML) when the
    report cannot be read as a test report.
    """
    path = Path(report)
    shown = str(report)
    counter = _Counter()
    parser = expat.ParserCreate()
    parser.StartElementHandler = counter.start
    parser.EndElementHandler = counter.end
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except FileNotFoundError:
        raise ContractError("file not found; run the test suite with --junitxml first", path=shown) from None
    except IsADirectoryError:
        raise ContractError("is a directory, not a JUnit XML file", path=shown) from None
    except OSError as exc:
        raise ContractError(f"cannot read: {exc.strerror or exc}", path=shown) from None
    except expat.ExpatError as exc:
        problem = f"not valid XML: {expat.ErrorString(exc.code)} (column {exc.offset + 1})"
        raise ContractError(problem, path=shown, line=exc.lineno) from None
    except _Refused:
        raise ContractError(
            "declares a document type (<!DOCTYPE>); a JUnit report needs none and it is refused",
            path=shown,
            line=parser.CurrentLineNumber,
        ) from None
    if counter.root not in ("testsuites", "testsuite"):
        raise ContractError(
            f"the root element is <{counter.root}>, expected <testsuites> or <testsuite>", path=shown
        )
    if counter.suites == 0:
        raise ContractError("no <testsuite> element; is this a JUnit XML report?", path=shown)
    counts = counter.counts
    total = sum(counts.values())
    runnable = total - counts["skipped"]
    metrics: dict[str, Any] = {
        "ok": runnable > 0,
        "score": counts["passed"] / runnable if runnable else None,
        "total": total,
        **counts,
        "failed_tests": counter.failed_tests,
        "report": shown,
    }
    if not runnable:
        what = "no test cases" if not total else f"all {total} test cases were skipped"
        metrics["error"] = f"{shown}: {what}; there is no pass rate to score"
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fsm_runner.junit REPORT.xml -o METRICS.json``: 0 when the metrics were written (even with
    ``ok: false``), 2 with one ``error:`` line when the report or the output cannot be used."""
    parser = argparse.ArgumentParser(
        prog="python -m fsm_runner.junit",
        description="Write the pass rate of a JUnit XML report (pytest --junitxml) as a metrics JSON file.",
    )
    parser.add_argument("report", help="the JUnit XML file")
    parser.add_argument("-o", "--output", required=True, help="the metrics JSON file to write")
    args = parser.parse_args(argv)
    out = Path(args.output)
    problem = _output_problem(Path(args.report), out)
    if problem is not None:
        sys.stderr.write(f"error: {problem}\n")
        return 2
    try:
        metrics = junit_metrics(args.report)
        write_json_atomic(out, metrics)
    except (ContractError, EvidenceError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"error: cannot write {args.output}: {exc.strerror or exc}\n")
        return 2
    return 0


def _output_problem(report: Path, out: Path) -> str | None:
    """Why the metrics cannot go to ``out``: it is the report itself (writing it would lose the report), or
    its directory is missing (a typo is not silently made into a tree of directories)."""
    same = out.resolve() == report.resolve()
    with contextlib.suppress(OSError):
        same = same or os.path.samefile(out, report)
    if same:
        return f"-o {out} is the report {report} itself; write the metrics to another file"
    parent = out.absolute().parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        return f"cannot write {out}: {parent} {what}; create it first, or give -o a file in an existing one"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
