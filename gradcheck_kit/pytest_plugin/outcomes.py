"""What pytest made of a test, in the words of a check record, and the run's CI outputs.

A failed check is a failure of the run only when its test failed too; in a test
that caught the assertion (``pytest.raises``), read the result, or was marked
``xfail``, the failure was expected (:func:`gradcheck_kit.report.document.verdict`).
This module turns pytest's phase reports into the test's outcome, the checks'
verdicts into JUnit XML properties, failed checks into GitHub Actions
annotations, and unread failures into warnings. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gradcheck_kit._src.errors import UnassertedCheckWarning
from gradcheck_kit.report.document import verdict

__all__ = [
    "outcome_after_phase",
    "record_label",
    "unasserted_warnings",
    "junit_properties",
    "github_annotations",
    "JUNIT_PROPERTY_PREFIX",
]

JUNIT_PROPERTY_PREFIX = "gradcheck"
_ANNOTATED_VERDICTS = {"failed": "error", "unasserted": "warning"}
# GitHub keeps 10 annotations of a kind per step; more only lengthen the log.
_MAX_ANNOTATIONS = 50
_PROPERTY_TEXT_LIMIT = 300


def outcome_after_phase(previous: str | None, when: str, report: Any) -> str:
    """The test's outcome so far, after the report of one more phase.

    Args:
        previous: The outcome after the earlier phases (``None`` before setup).
        when: ``"setup"``, ``"call"`` or ``"teardown"``.
        report: pytest's ``TestReport`` of that phase, after the xfail plugin
            had its say (``wasxfail``).

    Returns:
        One of ``passed``, ``failed``, ``error``, ``skipped``, ``xfailed``,
        ``xpassed``: a failed setup or teardown is an ``error``, as pytest
        counts it, and a failure is never overridden by a later phase.

    Examples:
        >>> from types import SimpleNamespace as R
        >>> ok = R(passed=True, failed=False, skipped=False)
        >>> bad = R(passed=False, failed=True, skipped=False)
        >>> outcome_after_phase(outcome_after_phase("passed", "call", bad), "teardown", ok)
        'failed'
        >>> outcome_after_phase("passed", "call", R(passed=False, failed=False, skipped=True,
        ...                                     wasxfail="known bug"))
        'xfailed'
    """
    if previous in ("failed", "error"):
        return previous
    xfail = hasattr(report, "wasxfail")
    if report.failed:
        return "failed" if when == "call" else "error"
    if report.skipped:
        return "xfailed" if xfail else "skipped"
    if when == "call":
        return "xpassed" if xfail else "passed"
    # setup or teardown passed: the call (or the skip at setup) decides
    return previous or "passed"


def record_label(record: Mapping[str, Any]) -> str:
    """A record as people name it: the check's name and, in brackets, its test.

    Examples:
        >>> record_label({"name": "sin", "test_id": "test_ops.py::test_sin"})
        'sin (test_ops.py::test_sin)'
        >>> record_label({"kind": "training"})
        'training'
    """
    name = record.get("name") or record.get("kind") or "check"
    test_id = record.get("test_id")
    return f"{name} ({test_id})" if test_id else str(name)


def unasserted_warnings(records: Iterable[Mapping[str, Any]]) -> list[UnassertedCheckWarning]:
    """One warning per failed check whose test passed without reading the result.

    Examples:
        >>> [str(w)[:20] for w in unasserted_warnings([{"name": "sin", "passed": False,
        ...     "test": {"outcome": "passed", "looked_at": False}}])]
        ['sin failed, and the ']
    """
    return [
        UnassertedCheckWarning(
            f"{record_label(record)} failed, and the test passed without reading its "
            "result: assert on it (assert result.passed, result.summary()) or call "
            "the assert_* twin, which raises."
        )
        for record in records
        if verdict(record) == "unasserted"
    ]


def _one_line(text: Any, limit: int) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _failure_text(record: Mapping[str, Any]) -> str:
    for key in ("hint", "summary", "message"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value
    error = record.get("max_abs_error")
    return f"max |analytic - numeric| {error}" if error is not None else ""


def junit_properties(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """One JUnit XML property per check: ``gradcheck <name>`` = its own verdict.

    The value is the check's verdict before pytest judged the test (``passed``,
    ``no verdict``, or ``failed: <why>``); the test's own result is JUnit's.

    Examples:
        >>> junit_properties([{"name": "sin", "passed": True},
        ...                   {"name": "cos", "passed": False, "hint": "a sign error?"}])
        [('gradcheck sin', 'passed'), ('gradcheck cos', 'failed: a sign error?')]
    """
    properties = []
    for record in records:
        name = f"{JUNIT_PROPERTY_PREFIX} {_one_line(record.get('name') or record.get('kind'), 120)}"
        passed = record.get("passed")
        if passed is True:
            value = "passed"
        elif passed is False:
            why = _failure_text(record)
            value = _one_line(f"failed: {why}" if why else "failed", _PROPERTY_TEXT_LIMIT)
        else:
            value = "no verdict"
        properties.append((name, value))
    return properties


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """GitHub Actions workflow commands: ``::error`` per failed check, ``::warning`` per unasserted.

    Each names the test's file and line (``record["test"]``), so GitHub shows it
    on the pull request's diff; expected failures get none.

    Examples:
        >>> github_annotations([{"name": "sin", "passed": False, "hint": "50%: factor 2",
        ...     "test_id": "t.py::test_sin",
        ...     "test": {"outcome": "failed", "file": "t.py", "line": 3}}])
        ['::error file=t.py,line=3,title=gradcheck%3A sin::t.py::test_sin: 50%25: factor 2']
    """
    lines = []
    for record in records:
        level = _ANNOTATED_VERDICTS.get(verdict(record))
        if level is None:
            continue
        raw_test = record.get("test")
        test: Mapping[str, Any] = raw_test if isinstance(raw_test, Mapping) else {}
        where = ""
        if isinstance(test.get("file"), str) and isinstance(test.get("line"), int):
            where = f"file={_escape_property(test['file'])},line={test['line']},"
        name = _one_line(record.get("name") or record.get("kind") or "check", 120)
        title = f"gradcheck: {name}" if level == "error" else f"gradcheck: unasserted {name}"
        why = _failure_text(record)
        if level == "warning":
            why = "the test passed without reading this failed result. " + why
        test_id = record.get("test_id")
        text = f"{test_id}: {why}" if test_id else why
        lines.append(f"::{level} {where}title={_escape_property(title)}::{_escape_data(text)}")
        if len(lines) == _MAX_ANNOTATIONS:
            break
    return lines
