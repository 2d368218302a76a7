"""The ``gradcheck`` section of pytest's terminal summary: counts, failures, where the files went.

Formatting only: the lines are composed from the run's records (plain dicts) and
written to pytest's terminal reporter; nothing here decides a verdict
(:func:`gradcheck_kit.report.document.verdict` does) or writes a file
(:mod:`.reporter` does). Imports no torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from gradcheck_kit.pytest_plugin.outcomes import github_annotations, record_label
from gradcheck_kit.report.document import verdict

__all__ = ["TerminalWriter", "write_checks", "write_files"]

SLOWEST_LISTED = 3
WORST_LISTED = 3


class TerminalWriter(Protocol):
    """What these functions need of ``pytest.TerminalReporter`` (a fake will do in tests)."""

    def write_sep(self, sep: str, title: str | None = None, **markup: bool) -> None:
        """Write a separator line with a title."""

    def write_line(self, line: str, **markup: bool) -> None:
        """Write one line (``red=True``, ``yellow=True``, ``bold=True``)."""


def _number(value: Any) -> float:
    """A record's number, 0.0 when absent or not a number (strings like 'inf' read as floats)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def write_checks(terminal: TerminalWriter, results: Sequence[Mapping[str, Any]]) -> None:
    """Write the section's title, the counts, the slowest and worst checks, and each failure.

    The counts agree with pytest's outcome: a failed check in a test that
    expected it (``pytest.raises``, ``xfail``, or read the result) is "failed as
    expected", not failed; a failed check a passing test never read is
    "unasserted".

    Examples:
        >>> class Out:
        ...     def write_sep(self, sep, title=None, **markup):
        ...         print(sep * 3, title)
        ...     def write_line(self, line, **markup):
        ...         print(line)
        >>> write_checks(Out(), [{"name": "sin", "passed": True, "duration_s": 0.5}])
        --- gradcheck
        1 check, 0 failed (0.50 s in checks)
    """
    by_verdict: dict[str, list[Mapping[str, Any]]] = {}
    for record in results:
        by_verdict.setdefault(verdict(record), []).append(record)
    failed = by_verdict.get("failed", [])
    unasserted = by_verdict.get("unasserted", [])
    expected = by_verdict.get("expected_failure", [])
    terminal.write_sep("-", "gradcheck")
    noun = "check" if len(results) == 1 else "checks"
    seconds = sum(_number(r.get("duration_s")) for r in results)
    counts = f"{len(results)} {noun}, {len(failed)} failed"
    if expected:
        counts += f", {len(expected)} failed as expected"
    if unasserted:
        counts += f", {len(unasserted)} unasserted"
    terminal.write_line(f"{counts} ({seconds:.2f} s in checks)")
    timed = sorted(results, key=lambda r: -_number(r.get("duration_s")))[:SLOWEST_LISTED]
    if len(results) > 1:
        terminal.write_line(
            "slowest: "
            + "; ".join(f"{_number(r.get('duration_s')):.2f} s {record_label(r)}" for r in timed)
        )
    worst = sorted(failed, key=lambda r: -_number(r.get("max_abs_error")))[:WORST_LISTED]
    for result in worst:
        if result.get("max_abs_error") is not None:
            hint = f" — {result['hint']}" if result.get("hint") else ""
            terminal.write_line(
                f"worst: |analytic - numeric| {_number(result['max_abs_error']):.3g} in "
                f"{record_label(result)}{hint}",
                red=True,
            )
    for result in failed:
        test_id = result.get("test_id") or "(outside any test)"
        terminal.write_line(f"FAILED {result.get('name')} in {test_id}", red=True)
    for result in unasserted:
        terminal.write_line(
            f"UNASSERTED {result.get('name')} in {result.get('test_id')}: failed, and the "
            "test passed without reading the result",
            yellow=True,
        )
    if expected:
        terminal.write_line(
            f"failed as expected: {len(expected)} (in tests that caught the assertion, "
            "read the result or were marked xfail; listed in the report)"
        )


def write_files(
    terminal: TerminalWriter,
    results: Sequence[Mapping[str, Any]],
    *,
    json_path: Path,
    report_path: Path,
    report_error: str | None = None,
    subset: str | None = None,
) -> None:
    """Write where the JSON file and the HTML report went (paths as given: shorten them first).

    With ``GITHUB_ACTIONS=true`` each failed check also becomes an annotation at
    its test's file and line: workflow commands are read from the step's log,
    which the terminal is.

    Args:
        terminal: pytest's terminal reporter.
        results: The run's records, for the annotations.
        json_path: Where the JSON document was written.
        report_path: Where the HTML page was written, unless ``report_error``.
        report_error: Why the page was not written (the JSON was).
        subset: How a run of part of the suite was chosen, when it was: its files
            went beside the full run's.

    Examples:
        >>> class Out:
        ...     def write_line(self, line, **markup):
        ...         print(line)
        >>> write_files(Out(), [], json_path=Path("r.json"), report_path=Path("r.html"))
        results: r.json
        report: r.html
    """
    if subset is not None:
        terminal.write_line(
            f"{subset}: written beside the full report, which is left as it was", yellow=True
        )
    terminal.write_line(f"results: {json_path}")
    if report_error is None:
        terminal.write_line(f"report: {report_path}")
    else:
        terminal.write_line(f"report: not written ({report_error})", red=True, bold=True)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in github_annotations(results):
            terminal.write_line(line)
