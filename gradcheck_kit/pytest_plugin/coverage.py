"""Gradient coverage of a pytest run: ``--gradcheck-cov=PKG`` / ini ``gradcheck_cov``.

Lists every custom ``torch.autograd.Function`` and ``nn.Module`` class that
each named package defines, and marks those that a gradient check of the run
exercised (:mod:`gradcheck_kit._src.coverage` says what counts), with the tests
that did. The terminal gets one line per kind; the JSON document a top-level
``coverage`` object (:mod:`gradcheck_kit.report.coverage`), and the HTML page a
section, when ``--gradcheck`` writes them.

Each package is imported when pytest is configured, so that one that does not
import is a usage error before any test runs; torch is imported then, and only
in runs that ask for coverage. Under pytest-xdist each worker records its own
share and hands it to the controller in ``config.workeroutput``, as the results
travel; the controller lists the classes and prints the lines.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Generator
from typing import Any

import pytest

from gradcheck_kit.report.coverage import (
    add_exercised,
    coverage_section,
    merge_exercised,
    summary_lines,
)

__all__ = [
    "COVERAGE_WORKEROUTPUT_KEY",
    "CoverageRecorder",
    "add_coverage_options",
    "configure_coverage",
    "coverage_document",
    "coverage_packages",
    "gradcheck_coverage_key",
    "parse_package",
]

COVERAGE_WORKEROUTPUT_KEY = "gradcheck_coverage"
_PLUGIN_NAME = "gradcheck-coverage"

gradcheck_coverage_key = pytest.StashKey["CoverageRecorder"]()
"""The run's :class:`CoverageRecorder` on ``config.stash``; only with ``--gradcheck-cov``."""


def parse_package(string: str) -> str:
    """Check a value of ``--gradcheck-cov`` / ``gradcheck_cov``: a dotted module name.

    Raises:
        argparse.ArgumentTypeError: The value is not a dotted Python name.

    Examples:
        >>> parse_package(" mylib.ops ")
        'mylib.ops'
        >>> parse_package("mylib/ops")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: Could not parse value: 'mylib/ops'. Expected a dotted ...
    """
    value = string.strip()
    if not value or not all(part.isidentifier() for part in value.split(".")):
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected a dotted package name such as "
            "mylib or mylib.ops."
        )
    return value


def add_coverage_options(group: Any, parser: pytest.Parser) -> None:
    """Add ``--gradcheck-cov`` (repeatable) to ``group`` and its ini twin ``gradcheck_cov``."""
    parser.addini(
        "gradcheck_cov",
        type="linelist",
        default=[],
        help="Default value for --gradcheck-cov: packages, one a line",
    )
    group.addoption(
        "--gradcheck-cov",
        dest="gradcheck_cov",
        action="append",
        default=None,
        metavar="PKG",
        type=parse_package,
        help=(
            "List the custom autograd Functions and nn.Modules defined in PKG and mark which "
            "a gradient check exercised (repeatable; ini: gradcheck_cov). Default: None"
        ),
    )


def coverage_packages(config: pytest.Config) -> list[str]:
    """The packages to measure: the command line's, else the ini file's, each once.

    Raises:
        pytest.UsageError: An ini value is not a dotted name.
    """
    cli: list[str] | None = config.getoption("gradcheck_cov", None)
    if cli:
        return list(dict.fromkeys(cli))
    packages = []
    for value in config.getini("gradcheck_cov"):
        try:
            packages.append(parse_package(str(value)))
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"gradcheck_cov = {value!r} in the ini file: {exc}") from None
    return list(dict.fromkeys(packages))


def configure_coverage(config: pytest.Config) -> None:
    """Import each package to measure and start recording; nothing without ``--gradcheck-cov``.

    Raises:
        pytest.UsageError: A package does not import; the message names it.
    """
    packages = coverage_packages(config)
    if not packages:
        return
    from gradcheck_kit._src.coverage_classes import import_package

    for package in packages:
        try:
            import_package(package)
        except ImportError as exc:
            raise pytest.UsageError(
                f"--gradcheck-cov={package}: {exc}. Name a package that imports in this "
                "environment (installed, or on sys.path: pytest's pythonpath ini key)."
            ) from None
    recorder = CoverageRecorder(config, packages)
    config.stash[gradcheck_coverage_key] = recorder
    config.pluginmanager.register(recorder, _PLUGIN_NAME)


def coverage_document(config: pytest.Config) -> dict[str, Any] | None:
    """The ``coverage`` object for the run's JSON document; ``None`` without ``--gradcheck-cov``."""
    recorder = config.stash.get(gradcheck_coverage_key, None)
    return None if recorder is None else recorder.section()


class CoverageRecorder:
    """Records which classes of the packages the checks exercise; a plugin object.

    Registered in every process of the run: a worker records and sends its
    share; the controller (or the only process) also lists the classes and
    prints the summary.

    Args:
        config: The run's config.
        packages: The dotted names to measure (already importable).

    Examples:
        >>> # conftest.py: fail the run when a custom Function was left unchecked
        >>> def pytest_sessionfinish(session):
        ...     recorder = session.config.pluginmanager.get_plugin("gradcheck-coverage")
        ...     if recorder is not None:
        ...         functions = recorder.section()["functions"]
        ...         assert functions["checked"] == functions["total"]
    """

    def __init__(self, config: pytest.Config, packages: list[str]) -> None:
        from gradcheck_kit._src import coverage

        self.config = config
        self.packages = packages
        self.exercised: dict[str, dict[str, Any]] = {}
        self.current_test_id: str | None = None
        self._section: dict[str, Any] | None = None
        self._stop: Callable[[], None] | None = coverage.listen(self._record)

    def _record(self, kind: str, cls: type) -> None:
        from gradcheck_kit._src.coverage_classes import class_name, in_package

        if any(in_package(str(cls.__module__), p) for p in self.packages):
            add_exercised(self.exercised, class_name(cls), kind, self.current_test_id)

    def section(self) -> dict[str, Any]:
        """The ``coverage`` object: the classes listed now, against everything exercised."""
        if self._section is None:
            from gradcheck_kit._src.coverage_classes import classes_defined_in

            listings = []
            for package in self.packages:
                found = classes_defined_in(package)
                listings.append(
                    {
                        "package": package,
                        "classes": [
                            {"name": c.name, "kind": c.kind, "private": c.private}
                            for c in found.classes
                        ],
                        "import_errors": found.import_errors,
                    }
                )
            self._section = coverage_section(listings, self.exercised)
        return self._section

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, Any, None]:
        """Label what is exercised from setup to teardown with this test's id."""
        self.current_test_id = item.nodeid
        try:
            yield
        finally:
            self.current_test_id = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Add what a finished xdist worker exercised."""
        workeroutput = getattr(node, "workeroutput", None) or {}
        merge_exercised(self.exercised, workeroutput.get(COVERAGE_WORKEROUTPUT_KEY) or {})

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """On an xdist worker, hand this worker's share to the controller."""
        workeroutput: dict[str, Any] | None = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[COVERAGE_WORKEROUTPUT_KEY] = self.exercised

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print one line per kind, and each submodule that could not be listed."""
        if hasattr(self.config, "workerinput") or self.config.option.collectonly:
            return
        section = self.section()
        terminalreporter.write_sep("-", "gradcheck coverage")
        for line in summary_lines(section):
            terminalreporter.write_line(line)
        for error in section["import_errors"]:
            terminalreporter.write_line(
                f"not listed: {error['module']} did not import ({error['error']})", yellow=True
            )

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Stop listening, so that a later in-process run starts clean."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        if config.stash.get(gradcheck_coverage_key, None) is self:
            del config.stash[gradcheck_coverage_key]
