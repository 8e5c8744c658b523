"""python -m fsm_runner.junit: a JUnit XML report becomes a metrics file with the pass rate as the score."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsm_runner.errors import ContractError
from fsm_runner.junit import MAX_LISTED, junit_metrics


def convert(
    tmp_path: Path, report: str | Path, *extra: str, out: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if out is None:
        out = tmp_path / "out" / "m.json"
        if not os.path.lexists(out.parent):
            out.parent.mkdir()
    return subprocess.run(
        [sys.executable, "-m", "fsm_runner.junit", str(report), "-o", str(out), *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def case(name: str, child: str = "") -> str:
    return f'<testcase classname="t" name="{name}">{child}</testcase>'


PASS, FAIL, ERROR, SKIP = case("p"), case("f", "<failure message='x'/>"), case("e", "<error/>"), case("s", "<skipped/>")


@pytest.mark.parametrize(
    ("xml", "counts", "score"),
    [
        (f"<testsuite>{PASS * 3}{FAIL}</testsuite>", (4, 3, 1, 0, 0), 0.75),
        (f"<testsuites><testsuite>{PASS}{ERROR}</testsuite><testsuite>{PASS}{SKIP}</testsuite></testsuites>",
         (4, 2, 0, 1, 1), 2 / 3),
        (f"<testsuites><testsuite><testsuite>{PASS}</testsuite>{FAIL}</testsuite></testsuites>", (2, 1, 1, 0, 0), 0.5),
        # a failure and an error in one testcase count once, as failed; unknown children are ignored
        (f"<testsuite>{case('fe', '<failure/><error/>')}{case('o', '<system-out>x</system-out>')}</testsuite>",
         (2, 1, 1, 0, 0), 0.5),
        (f"<?xml version='1.0' encoding='latin-1'?><testsuite>{PASS}</testsuite>", (1, 1, 0, 0, 0), 1.0),
    ],
    ids=["bare-testsuite", "two-suites", "nested-suites", "failure-and-error", "declared-encoding"],
)
def test_counts_every_testcase_once(tmp_path: Path, xml: str, counts: tuple[int, ...], score: float) -> None:
    report = tmp_path / "r.xml"
    report.write_text(xml, encoding="latin-1")
    done = convert(tmp_path, "r.xml")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "out" / "m.json").read_text())
    names = ("total", "passed", "failed", "errors", "skipped")
    assert tuple(metrics[n] for n in names) == counts
    assert metrics["ok"] is True and metrics["score"] == pytest.approx(score)
    assert "error" not in metrics and metrics["report"] == "r.xml"


def test_a_real_pytest_report_matches_pytests_own_counts(tmp_path: Path) -> None:
    (tmp_path / "test_suite.py").write_text(
        "import pytest\n"
        "def test_a(): pass\n"
        "def test_b(): pass\n"
        "def test_c(): assert 0\n"
        "@pytest.mark.skip\n"
        "def test_d(): pass\n"
        "@pytest.mark.xfail\n"
        "def test_e(): assert 0\n"
        "@pytest.fixture\n"
        "def broken():\n"
        "    yield\n"
        "    raise RuntimeError('teardown')\n"
        "def test_f(broken): pass\n"
    )
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=r.xml", "test_suite.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert ran.returncode == 1, ran.stdout  # tests failed: the exit code the documented pattern tolerates
    metrics = junit_metrics(tmp_path / "r.xml")
    # test_f passed but its teardown failed: pytest reports it as one error, and so does its suite's count
    assert (metrics["total"], metrics["passed"], metrics["failed"], metrics["errors"], metrics["skipped"]) == (
        6, 2, 1, 1, 2,
    )
    assert metrics["score"] == 0.5
    assert metrics["failed_tests"] == ["test_suite::test_c", "test_suite::test_f"]


@pytest.mark.parametrize(
    ("xml", "what"),
    [("<testsuite></testsuite>", "no test cases"), (f"<testsuite>{SKIP * 2}</testsuite>", "all 2 test cases were skipped")],
)
def test_no_runnable_test_is_read_but_cannot_score(tmp_path: Path, xml: str, what: str) -> None:
    (tmp_path / "r.xml").write_text(xml)
    done = convert(tmp_path, "r.xml")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "out" / "m.json").read_text())
    assert metrics["ok"] is False and metrics["score"] is None
    assert metrics["error"] == f"r.xml: {what}; there is no pass rate to score"


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    ' <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n]>\n<testsuite>&lol2;</testsuite>\n'
)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.xml", None, "missing.xml: file not found; run the test suite with --junitxml first"),
        ("adir", "dir", "adir: is a directory, not a JUnit XML file"),
        ("r.xml", "<testsuite>\n<testcase>\n</testsuite>\n", "r.xml:3: not valid XML: mismatched tag (column 3)"),
        ("r.xml", "", "r.xml:1: not valid XML: no element found (column 1)"),
        ("r.xml", "{\"ok\": true}", "r.xml:1: not valid XML: not well-formed (invalid token) (column 1)"),
        ("r.xml", "<report><testcase/></report>", "r.xml: the root element is <report>, expected <testsuites> or <testsuite>"),
        ("r.xml", "<testsuites/>", "r.xml: no <testsuite> element; is this a JUnit XML report?"),
        ("r.xml", BILLION_LAUGHS, "r.xml:2: declares a document type (<!DOCTYPE>); a JUnit report needs none and it is refused"),
        ("r.xml", '<!DOCTYPE t SYSTEM "file:///etc/passwd"><testsuite/>',
         "r.xml:1: declares a document type (<!DOCTYPE>); a JUnit report needs none and it is refused"),
    ],
    ids=["missing", "directory", "bad-xml", "empty", "json", "wrong-root", "no-testsuite", "entities", "external-dtd"],
)
def test_unusable_reports_exit_2_with_one_error_line(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    if content == "dir":
        (tmp_path / name).mkdir()
    elif content is not None:
        (tmp_path / name).write_text(content)
    out = tmp_path / "out" / "m.json"
    out.parent.mkdir()
    out.write_text("previous\n")
    done = convert(tmp_path, name)
    assert done.returncode == 2
    assert done.stderr == f"error: {message}\n" and done.stdout == ""
    assert out.read_text() == "previous\n"  # never half-written, never replaced by a bad report
    with pytest.raises(ContractError) as caught:
        junit_metrics(tmp_path / name)
    assert str(caught.value).endswith(message.split(": ", 1)[1])


def test_an_unwritable_output_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "r.xml").write_text(f"<testsuite>{PASS}</testsuite>")
    (tmp_path / "out").write_text("a file where the directory should be")
    done = convert(tmp_path, "r.xml")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "out/m.json" in done.stderr and "Traceback" not in done.stderr


def test_the_failed_list_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "r.xml").write_text(f"<testsuite>{FAIL * (MAX_LISTED + 10)}</testsuite>")
    metrics = junit_metrics(tmp_path / "r.xml")
    assert metrics["failed"] == MAX_LISTED + 10 and len(metrics["failed_tests"]) == MAX_LISTED


def test_a_10k_testcase_report_converts_quickly(tmp_path: Path) -> None:
    cases = "".join(
        case(f"test_{i}", "<failure message='boom'>" + "trace line\n" * 20 + "</failure>" if i % 10 == 0 else "")
        for i in range(10_000)
    )
    (tmp_path / "r.xml").write_text(f"<testsuites><testsuite>{cases}</testsuite></testsuites>")
    start = time.process_time()
    metrics = junit_metrics(tmp_path / "r.xml")
    elapsed = time.process_time() - start
    assert (metrics["total"], metrics["failed"], metrics["score"]) == (10_000, 1_000, 0.9)
    assert elapsed < 5, f"{elapsed:.2f}s for 10k testcases"


@pytest.mark.parametrize("given", ["r.xml", "./sub/../r.xml", "link.xml"])
def test_the_output_is_never_the_report_itself(tmp_path: Path, given: str) -> None:
    report = tmp_path / "r.xml"
    report.write_text(f"<testsuite>{PASS}</testsuite>")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.xml").symlink_to(report)
    done = convert(tmp_path, "r.xml", out=tmp_path / given)
    assert done.returncode == 2 and done.stderr.startswith("error: -o ") and "itself" in done.stderr, done.stderr
    assert report.read_text() == f"<testsuite>{PASS}</testsuite>"


def test_a_missing_output_directory_is_named_and_not_created(tmp_path: Path) -> None:
    (tmp_path / "r.xml").write_text(f"<testsuite>{PASS}</testsuite>")
    missing = tmp_path / "nonexistent" / "dir"
    done = convert(tmp_path, "r.xml", out=missing / "m.json")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: cannot write {missing / 'm.json'}: {missing} does not exist; create it first, or give -o a file "
        "in an existing one\n"
    )
    assert not (tmp_path / "nonexistent").exists()
