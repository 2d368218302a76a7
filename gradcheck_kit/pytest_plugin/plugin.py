"""The ``gradcheck`` pytest plugin (the ``pytest11`` entry point): options, marker, hooks.

Wiring only. pytest imports this module in every run of every project that
installs gradcheck_kit, so it must stay light: no torch, nothing that imports
torch. Run-wide state and the JSON file live in :mod:`.session`.

What it adds:

* ``--gradcheck``: run the tests marked ``@pytest.mark.gradcheck`` (skipped
  otherwise), record every result that a check publishes and write them all to
  one JSON file at the end of the run, with a summary in the terminal.
* ``--gradcheck-json PATH`` / ini ``gradcheck_json``: where that file goes.

Under pytest-xdist the workers record and send their results to the controller
(``config.workeroutput``), which alone writes the file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pytest

from gradcheck_kit import __version__
from gradcheck_kit.pytest_plugin.session import GradcheckSession

__all__ = [
    "DEFAULT_JSON_PATH",
    "MARKER_DESCRIPTION",
    "SKIP_REASON",
    "gradcheck_session_key",
    "parse_json_path",
]

DEFAULT_JSON_PATH = "reports/gradcheck.json"
SKIP_REASON = "gradient check: run with --gradcheck"
MARKER_DESCRIPTION = (
    "gradcheck: a gradient check; skipped unless pytest runs with --gradcheck, "
    "which also records its results in the JSON report."
)
# Keyword arguments the marker accepts; none yet. Anything else is a mistake in the test.
_MARKER_KWARGS: frozenset[str] = frozenset()
# Key under which an xdist worker hands its results to the controller.
_WORKEROUTPUT_KEY = "gradcheck_results"

gradcheck_session_key = pytest.StashKey[GradcheckSession]()
"""The run's :class:`GradcheckSession` on ``config.stash``; present only with ``--gradcheck``."""
_json_path_key = pytest.StashKey[Path]()


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


def _json_path(config: pytest.Config) -> Path:
    """CLI beats ini beats default; a bad ini value is a usage error that names it."""
    cli_value: str | None = config.getoption("gradcheck_json")
    if cli_value is not None:
        return Path(os.path.abspath(config.invocation_params.dir / cli_value))
    ini_value = str(config.getini("gradcheck_json"))
    try:
        value = parse_json_path(ini_value)
    except argparse.ArgumentTypeError as exc:
        raise pytest.UsageError(f"gradcheck_json = {ini_value!r} in the ini file: {exc}") from None
    return Path(os.path.abspath(config.rootpath / os.path.expanduser(value)))


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; with ``--gradcheck``, start recording results."""
    config.addinivalue_line("markers", MARKER_DESCRIPTION)
    if not config.getoption("gradcheck"):
        return
    config.stash[_json_path_key] = _json_path(config)
    recorder = GradcheckSession(version=__version__)
    recorder.start()
    config.stash[gradcheck_session_key] = recorder


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop listening, so that a later in-process run starts clean."""
    recorder = config.stash.get(gradcheck_session_key, None)
    if recorder is not None:
        recorder.stop()


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
    """Write the JSON file (controller), or hand the results to the controller (xdist worker)."""
    config = session.config
    recorder = config.stash.get(gradcheck_session_key, None)
    if recorder is None:
        return
    workeroutput: dict[str, Any] | None = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[_WORKEROUTPUT_KEY] = recorder.results
        return
    recorder.write_json(config.stash[_json_path_key])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the xdist controller, add the results a finished worker sent."""
    recorder = node.config.stash.get(gradcheck_session_key, None)
    workeroutput = getattr(node, "workeroutput", None) or {}
    if recorder is not None:
        recorder.extend(workeroutput.get(_WORKEROUTPUT_KEY, ()))


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Print ``N checks, F failed``, each failed check, and where the JSON file is."""
    recorder = config.stash.get(gradcheck_session_key, None)
    if recorder is None or hasattr(config, "workerinput"):
        return
    results, failed = recorder.results, recorder.failed
    terminalreporter.write_sep("-", "gradcheck")
    noun = "check" if len(results) == 1 else "checks"
    terminalreporter.write_line(f"{len(results)} {noun}, {len(failed)} failed")
    for result in failed:
        test_id = result.get("test_id") or "(outside any test)"
        terminalreporter.write_line(f"FAILED {result.get('name')} in {test_id}", red=True)
    path = config.stash[_json_path_key]
    try:
        shown = path.relative_to(config.invocation_params.dir)
    except ValueError:
        shown = path
    terminalreporter.write_line(f"results: {shown}")
