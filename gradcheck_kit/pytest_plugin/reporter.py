"""The controller's plugin object: gathers every process's records and writes the two files.

Registered by ``plugin.py`` on the xdist controller (or the only process) and
never on a worker, so that no two processes write the same file (pytest-html
does the same). Workers hand their records over with :func:`hand_over`; the
terminal lines are composed in :mod:`.terminal`. Imports no torch, and Jinja2
only when a page is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gradcheck_kit.pytest_plugin.coverage import coverage_document
from gradcheck_kit.pytest_plugin.options import writes_no_files
from gradcheck_kit.pytest_plugin.session import GradcheckSession, environment
from gradcheck_kit.pytest_plugin.subset import RunScope, run_scope, subset_path
from gradcheck_kit.pytest_plugin.terminal import write_checks, write_files

__all__ = ["REPORTER_NAME", "GradcheckReporter", "hand_over", "write_report_files"]

REPORTER_NAME = "gradcheck-reporter"
# Keys under which an xdist worker hands its results and environment to the controller.
_WORKEROUTPUT_KEY = "gradcheck_results"
_WORKER_ENVIRONMENT_KEY = "gradcheck_environment"
# Per-check seeds listed in the report's environment; each record has its own anyway.
_MAX_SEEDS_LISTED = 20


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


def hand_over(config: pytest.Config, recorder: GradcheckSession) -> None:
    """On an xdist worker, put the records and environment where the controller reads them.

    Does nothing in a process that is not a worker.
    """
    workeroutput: dict[str, Any] | None = getattr(config, "workeroutput", None)
    if workeroutput is None:
        return
    workeroutput[_WORKEROUTPUT_KEY] = recorder.results
    workeroutput[_WORKER_ENVIRONMENT_KEY] = environment()


def write_report_files(document: dict[str, Any], json_path: Path, report_path: Path) -> str | None:
    """Replace the JSON file and the HTML page as a pair; the JSON alone if the page fails.

    Returns:
        ``None``, or why the page was not written (the JSON was).
    """
    # Imported here: Jinja2 costs every pytest run without --gradcheck nothing.
    from gradcheck_kit.report.document import dumps_document
    from gradcheck_kit.report.files import write_files_atomic, write_text_atomic
    from gradcheck_kit.report.html import generate_html

    text = dumps_document(document)
    try:
        write_files_atomic([(json_path, text), (report_path, generate_html(document))])
    except Exception as exc:  # a page that cannot be rendered costs the JSON nothing
        write_text_atomic(json_path, text)
        return f"{type(exc).__name__}: {exc}"
    return None


class GradcheckReporter:
    """Writes the JSON file and the HTML report at the end of the run; a plugin object.

    Registered on the xdist controller (or the only process) and never on a
    worker, so that no two processes write the same file. Adds the results the
    workers send, writes both files atomically (JSON first: a page that cannot
    be rendered costs the JSON nothing) and names them in the terminal summary.

    Args:
        config: The run's config.
        recorder: The run's :class:`GradcheckSession`.
        json_path: Where the JSON document goes.
        report_path: Where the HTML page goes.

    Examples:
        >>> # conftest.py: read the paths the run writes to
        >>> def pytest_terminal_summary(config):
        ...     reporter = config.pluginmanager.get_plugin("gradcheck-reporter")
        ...     if reporter is not None:
        ...         print(reporter.report_path)
    """

    def __init__(
        self,
        config: pytest.Config,
        recorder: GradcheckSession,
        json_path: Path,
        report_path: Path,
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.json_path = json_path
        self.report_path = report_path
        self.report_error: str | None = None
        # Why nothing was written (--collect-only, no test ran, --gradcheck-no-report).
        self.not_written: str | None = None
        self.scope = RunScope()
        self._tests_run: set[str] = set()

    def run_facts(self) -> dict[str, Any]:
        """Seeds and options of this run, for the report's environment."""
        option = self.config.option
        options = {
            dest: _json_safe(self._effective(dest, value))
            for dest, value in sorted(vars(option).items())
            if dest.startswith("gradcheck")
        }
        options["gradcheck_json"] = str(self.json_path)
        options["gradcheck_report"] = str(self.report_path)
        workers = getattr(option, "numprocesses", None)
        if workers:
            options["xdist_workers"] = _json_safe(workers)
        options["args"] = [str(a) for a in self.config.invocation_params.args]
        seeds: dict[str, Any] = {}
        for name, dest in (("hypothesis", "hypothesis_seed"), ("randomly", "randomly_seed")):
            value = getattr(option, dest, None)
            if value is not None:
                seeds[name] = _json_safe(value)
        if os.environ.get("PYTHONHASHSEED"):
            seeds["PYTHONHASHSEED"] = os.environ["PYTHONHASHSEED"]
        per_check = sorted({r["seed"] for r in self.recorder.results if type(r.get("seed")) is int})
        if per_check:
            seeds["per_check"] = per_check[:_MAX_SEEDS_LISTED]
        return {"seeds": seeds, "options": options}

    def _effective(self, dest: str, value: Any) -> Any:
        """An option left unset on the command line reads its ini key (or the ini default)."""
        if value is not None:
            return value
        try:
            ini = self.config.getini(dest)
        except ValueError:  # an option without an ini key
            return None
        return ini if ini not in ("", []) else None

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Add the results (and environment) a finished xdist worker sent."""
        workeroutput = getattr(node, "workeroutput", None) or {}
        self.recorder.extend(
            workeroutput.get(_WORKEROUTPUT_KEY, ()),
            workeroutput.get(_WORKER_ENVIRONMENT_KEY),
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Count the tests that ran (here or, under xdist, on a worker)."""
        if report.when == "teardown":
            self._tests_run.add(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Write the JSON document and its HTML page as a pair; a subset run writes beside them.

        Nothing is written on ``--collect-only``, when no test ran (``--fixtures``,
        an interrupted collection) or with ``--gradcheck-no-report``.
        """
        if self.config.option.collectonly:
            self.not_written = "--collect-only"
        elif not self._tests_run:
            self.not_written = "no test ran"
        elif writes_no_files(self.config):
            self.not_written = "--gradcheck-no-report"
        if self.not_written is not None:
            return
        self.scope = run_scope(session, exitstatus, tests_run=len(self._tests_run))
        if not self.scope.full:
            self.json_path = subset_path(self.json_path)
            self.report_path = subset_path(self.report_path)
        document = self.recorder.document(run=self.run_facts())
        document["environment"]["run"] = self.scope.describe()
        coverage = coverage_document(self.config)
        if coverage is not None:
            document["coverage"] = coverage
        self.report_error = write_report_files(document, self.json_path, self.report_path)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print the counts, each real failure, each unasserted one, and where the files are."""
        if self.not_written == "--collect-only":
            return  # collect-only output is read by tools: add nothing to it
        results = self.recorder.results
        write_checks(terminalreporter, results)
        if self.not_written is not None:
            terminalreporter.write_line(f"results and report: not written ({self.not_written})")
            return
        write_files(
            terminalreporter,
            results,
            json_path=self._shown(self.json_path),
            report_path=self._shown(self.report_path),
            report_error=self.report_error,
            subset=None if self.scope.full else self.scope.describe(),
        )

    def _shown(self, path: Path) -> Path:
        try:
            return path.relative_to(self.config.invocation_params.dir)
        except ValueError:
            return path
