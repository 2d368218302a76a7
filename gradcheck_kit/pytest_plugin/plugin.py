"""The ``gradcheck`` pytest plugin (the ``pytest11`` entry point): options, marker, hooks.

Wiring only. pytest imports this module in every run of every project that
installs gradcheck_kit, so it must stay light: no torch, nothing that imports
torch. Run-wide state and the JSON file live in :mod:`.session`.

What it adds:

* ``--gradcheck``: run the tests marked ``@pytest.mark.gradcheck`` (skipped
  otherwise), record every result that a check publishes and write them all to
  one JSON file at the end of the run, with a summary in the terminal.
* ``--gradcheck-json PATH`` / ini ``gradcheck_json``: where that file goes.
* ``--gradcheck-report PATH`` / ini ``gradcheck_report``: where the HTML report
  of the same results goes (``gradcheck_kit.report``).

Under pytest-xdist the workers record and send their results (and what they ran
on) to the controller (``config.workeroutput``). Only the controller registers
the :class:`GradcheckReporter` plugin object, which alone writes the files.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from gradcheck_kit import __version__
from gradcheck_kit.pytest_plugin.session import GradcheckSession, environment

__all__ = [
    "DEFAULT_JSON_PATH",
    "DEFAULT_REPORT_PATH",
    "MARKER_DESCRIPTION",
    "SKIP_REASON",
    "GradcheckReporter",
    "gradcheck_session_key",
    "parse_json_path",
    "parse_report_path",
]

DEFAULT_JSON_PATH = "reports/gradcheck.json"
DEFAULT_REPORT_PATH = "reports/gradcheck.html"
SKIP_REASON = "gradient check: run with --gradcheck"
MARKER_DESCRIPTION = (
    "gradcheck: a gradient check; skipped unless pytest runs with --gradcheck, "
    "which also records its results in the JSON report."
)
# Keyword arguments the marker accepts; none yet. Anything else is a mistake in the test.
_MARKER_KWARGS: frozenset[str] = frozenset()
# Keys under which an xdist worker hands its results and environment to the controller.
_WORKEROUTPUT_KEY = "gradcheck_results"
_WORKER_ENVIRONMENT_KEY = "gradcheck_environment"
_REPORTER_NAME = "gradcheck-reporter"
# Per-check seeds listed in the report's environment; each record has its own anyway.
_MAX_SEEDS_LISTED = 20

gradcheck_session_key = pytest.StashKey[GradcheckSession]()
"""The run's :class:`GradcheckSession` on ``config.stash``; present only with ``--gradcheck``."""
_json_path_key = pytest.StashKey[Path]()
_reporter_key = pytest.StashKey["GradcheckReporter"]()


def parse_json_path(string: str) -> str:
    """Check the value of ``--gradcheck-json`` / ``gradcheck_json``.

    Args:
        string: The path as written by the user.

    Returns:
        ``string`` without surrounding blanks.

    Raises:
        argparse.ArgumentTypeError: The value is empty or names a folder.

    Examples:
        >>> parse_json_path(" out/results.json ")
        'out/results.json'
        >>> parse_json_path("out/")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: Could not parse value: 'out/'. Expected a file, not a folder.
    """
    value = string.strip()
    if not value:
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected a file path."
        )
    if value.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(
            f"Could not parse value: {string!r}. Expected a file, not a folder."
        )
    return value


def parse_report_path(string: str) -> str:
    """Check the value of ``--gradcheck-report`` / ``gradcheck_report``.

    Args:
        string: The path as written by the user.

    Returns:
        ``string`` without surrounding blanks.

    Raises:
        argparse.ArgumentTypeError: The value is empty or names a folder.

    Examples:
        >>> parse_report_path("ci/gradcheck.html")
        'ci/gradcheck.html'
    """
    return parse_json_path(string)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the ``gradient checks`` option group, each ``--gradcheck-*`` mirrored as ini."""
    group = parser.getgroup("gradcheck", "gradient checks")

    def add_option_ini(option: str, dest: str, default: str | None = None, **kwargs: Any) -> None:
        # Like _pytest/logging.py: the option defaults to None, so that an unset
        # option falls back to the ini key, which falls back to `default`.
        parser.addini(dest, default=default, type="string", help=f"Default value for {option}")
        group.addoption(option, dest=dest, **kwargs)

    group.addoption(
        "--gradcheck",
        action="store_true",
        default=False,
        help=(
            "Run the tests marked @pytest.mark.gradcheck, record every gradient check's "
            "result and write them to the JSON file of --gradcheck-json. Default: %(default)r"
        ),
    )
    add_option_ini(
        "--gradcheck-json",
        dest="gradcheck_json",
        default=DEFAULT_JSON_PATH,
        metavar="PATH",
        type=parse_json_path,
        help=(
            "Where --gradcheck writes its results (relative to the current directory; "
            "the ini value is relative to the rootdir). "
            f"Default: {DEFAULT_JSON_PATH!r} in the rootdir"
        ),
    )
    add_option_ini(
        "--gradcheck-report",
        dest="gradcheck_report",
        default=DEFAULT_REPORT_PATH,
        metavar="PATH",
        type=parse_report_path,
        help=(
            "Where --gradcheck writes the HTML report of the same results, one "
            "self-contained file (relative to the current directory; the ini value is "
            f"relative to the rootdir). Default: {DEFAULT_REPORT_PATH!r} in the rootdir"
        ),
    )


def _path_option(config: pytest.Config, dest: str) -> Path:
    """CLI beats ini beats default; a bad ini value is a usage error that names it."""
    cli_value: str | None = config.getoption(dest)
    if cli_value is not None:
        return Path(os.path.abspath(config.invocation_params.dir / cli_value))
    ini_value = str(config.getini(dest))
    try:
        value = parse_json_path(ini_value)
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"{dest} = {ini_value!r} in the ini file: {exc}") from None
    return Path(os.path.abspath(config.rootpath / os.path.expanduser(value)))


def _json_path(config: pytest.Config) -> Path:
    return _path_option(config, "gradcheck_json")


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


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

    def run_facts(self) -> dict[str, Any]:
        """Seeds and options of this run, for the report's environment."""
        option = self.config.option
        options = {
            dest: _json_safe(value)
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

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """Add the results (and environment) a finished xdist worker sent."""
        workeroutput = getattr(node, "workeroutput", None) or {}
        self.recorder.extend(
            workeroutput.get(_WORKEROUTPUT_KEY, ()),
            workeroutput.get(_WORKER_ENVIRONMENT_KEY),
        )

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the JSON document, then the HTML page of it."""
        document = self.recorder.document(run=self.run_facts())
        self.recorder.write_json(self.json_path, document)
        try:
            self.recorder.write_html(self.report_path, document)
        except Exception as exc:  # the JSON is written; say why the page is not
            self.report_error = f"{type(exc).__name__}: {exc}"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print ``N checks, F failed``, each failed check, and where the files are."""
        results, failed = self.recorder.results, self.recorder.failed
        terminalreporter.write_sep("-", "gradcheck")
        noun = "check" if len(results) == 1 else "checks"
        terminalreporter.write_line(f"{len(results)} {noun}, {len(failed)} failed")
        for result in failed:
            test_id = result.get("test_id") or "(outside any test)"
            terminalreporter.write_line(f"FAILED {result.get('name')} in {test_id}", red=True)
        terminalreporter.write_line(f"results: {self._shown(self.json_path)}")
        if self.report_error is None:
            terminalreporter.write_line(f"report: {self._shown(self.report_path)}")
        else:
            terminalreporter.write_line(
                f"report: not written ({self.report_error})", red=True, bold=True
            )

    def _shown(self, path: Path) -> Path:
        try:
            return path.relative_to(self.config.invocation_params.dir)
        except ValueError:
            return path


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; with ``--gradcheck``, start recording results."""
    config.addinivalue_line("markers", MARKER_DESCRIPTION)
    if not config.getoption("gradcheck"):
        return
    config.stash[_json_path_key] = _json_path(config)
    report_path = _path_option(config, "gradcheck_report")
    recorder = GradcheckSession(version=__version__)
    recorder.start()
    config.stash[gradcheck_session_key] = recorder
    if not hasattr(config, "workerinput"):
        reporter = GradcheckReporter(config, recorder, config.stash[_json_path_key], report_path)
        config.stash[_reporter_key] = reporter
        config.pluginmanager.register(reporter, _REPORTER_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop listening, so that a later in-process run starts clean."""
    recorder = config.stash.get(gradcheck_session_key, None)
    if recorder is not None:
        recorder.stop()
    reporter = config.stash.get(_reporter_key, None)
    if reporter is not None:
        del config.stash[_reporter_key]
        config.pluginmanager.unregister(reporter)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``--gradcheck``, skip the tests marked ``gradcheck``."""
    if config.getoption("gradcheck"):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("gradcheck") is not None:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Label what is published from here on with this test; reject unknown marker arguments."""
    recorder = item.config.stash.get(gradcheck_session_key, None)
    if recorder is not None:
        recorder.current_test_id = item.nodeid
    for marker in item.iter_markers("gradcheck"):
        if marker.args:
            raise ValueError(f"gradcheck mark takes no positional arguments, got {marker.args!r}.")
        for name in marker.kwargs:
            if name not in _MARKER_KWARGS:
                raise ValueError(f"gradcheck mark can't have {name!r} keyword argument.")


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the fixtures' teardown (which may publish too), results belong to no test."""
    recorder = item.config.stash.get(gradcheck_session_key, None)
    if recorder is not None:
        recorder.current_test_id = None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
    """On an xdist worker, hand the results and environment to the controller.

    The controller's (or single process's) files are written by :class:`GradcheckReporter`.
    """
    config = session.config
    recorder = config.stash.get(gradcheck_session_key, None)
    workeroutput: dict[str, Any] | None = getattr(config, "workeroutput", None)
    if recorder is None or workeroutput is None:
        return
    workeroutput[_WORKEROUTPUT_KEY] = recorder.results
    workeroutput[_WORKER_ENVIRONMENT_KEY] = environment()
