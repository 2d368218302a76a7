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
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gradcheck_kit import __version__
from gradcheck_kit._src import failure_inputs
from gradcheck_kit._src.errors import UnassertedCheckWarning
from gradcheck_kit._src.target_mark import target_spec
from gradcheck_kit.pytest_plugin import torch_routing
from gradcheck_kit.pytest_plugin.collect import TargetFactory
from gradcheck_kit.pytest_plugin.coverage import (
    add_coverage_options,
    configure_coverage,
    coverage_document,
)
from gradcheck_kit.pytest_plugin.fixtures import (
    GradcheckFixture,
    TrainingWatchFixture,
    seeded_rng,
    select_device,
    training_watch_key,
)
from gradcheck_kit.pytest_plugin.options import (
    CheckDefaults,
    add_check_options,
    apply_marker,
    read_defaults,
)
from gradcheck_kit.pytest_plugin.outcomes import (
    github_annotations,
    junit_properties,
    outcome_after_phase,
)
from gradcheck_kit.pytest_plugin.report_paths import check_report_paths
from gradcheck_kit.pytest_plugin.session import GradcheckSession, environment
from gradcheck_kit.pytest_plugin.subset import RunScope, run_scope, subset_path
from gradcheck_kit.report.document import verdict

__all__ = [
    "DEFAULT_JSON_PATH",
    "DEFAULT_REPORT_PATH",
    "MARKER_DESCRIPTION",
    "SKIP_REASON",
    "GradcheckReporter",
    "gradcheck_defaults_key",
    "gradcheck_enabled",
    "gradcheck_session_key",
    "parse_json_path",
    "parse_report_path",
]

DEFAULT_JSON_PATH = "reports/gradcheck.json"
DEFAULT_REPORT_PATH = "reports/gradcheck.html"
SKIP_REASON = "gradient check: run with --gradcheck"
MARKER_DESCRIPTION = (
    "gradcheck(mode=, dtype=, eps=, atol=, rtol=, seed=, rng=, n_probes=, devices=): a "
    "gradient check; skipped unless pytest runs with --gradcheck. The keywords override "
    "the run's options for the gradcheck fixture in this test."
)
# Keys under which an xdist worker hands its results and environment to the controller.
_WORKEROUTPUT_KEY = "gradcheck_results"
_WORKER_ENVIRONMENT_KEY = "gradcheck_environment"
_REPORTER_NAME = "gradcheck-reporter"
# Per-check seeds listed in the report's environment; each record has its own anyway.
_MAX_SEEDS_LISTED = 20

gradcheck_session_key = pytest.StashKey[GradcheckSession]()
"""The run's :class:`GradcheckSession` on ``config.stash``; present only with ``--gradcheck``."""
gradcheck_defaults_key = pytest.StashKey[CheckDefaults]()
"""The run's resolved check options on ``config.stash`` (always present)."""
_json_path_key = pytest.StashKey[Path]()
_outcome_key = pytest.StashKey[str]()
_reporter_key = pytest.StashKey["GradcheckReporter"]()
_inputs_folder_key = pytest.StashKey[failure_inputs.InputsFolder]()


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

    parser.addini("gradcheck", type="bool", default=False, help="Same as --gradcheck")
    group.addoption(
        "--gradcheck",
        action="store_true",
        default=False,
        help=(
            "Run the tests marked @pytest.mark.gradcheck, record every gradient check's "
            "result and write them to the JSON file of --gradcheck-json (ini: gradcheck "
            "= true). Default: %(default)r"
        ),
    )
    parser.addini(
        "gradcheck_no_report", type="bool", default=False, help="Same as --gradcheck-no-report"
    )
    group.addoption(
        "--gradcheck-no-report",
        dest="gradcheck_no_report",
        action="store_true",
        default=False,
        help="Run the checks and print the summary, but write no JSON or HTML file. "
        "Default: %(default)r",
    )
    add_check_options(group, parser)
    add_coverage_options(group, parser)
    torch_routing.add_torch_option(group, parser)
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


def gradcheck_enabled(config: pytest.Config) -> bool:
    """Whether this run checks gradients: ``--gradcheck``, or ``gradcheck = true`` in the ini.

    Examples:
        >>> # conftest.py: do something only in gradient-check runs
        >>> def pytest_configure(config):
        ...     if gradcheck_enabled(config):
        ...         config.addinivalue_line("markers", "slow_grad: a slow gradient check")
    """
    if config.getoption("gradcheck") or config.getini("gradcheck"):
        return True
    return torch_routing.torch_mode(config) is not None  # --gradcheck-torch records too


def _writes_no_files(config: pytest.Config) -> bool:
    return bool(config.getoption("gradcheck_no_report") or config.getini("gradcheck_no_report"))


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


_SLOWEST_LISTED = 3
_WORST_LISTED = 3


def _number(value: Any) -> float:
    """A record's number, 0.0 when absent or not a finite float (strings like 'inf' kept)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _where(record: dict[str, Any]) -> str:
    name = record.get("name") or record.get("kind") or "check"
    test_id = record.get("test_id")
    return f"{name} ({test_id})" if test_id else str(name)


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
        elif _writes_no_files(self.config):
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
        """Print the counts, each real failure, each unasserted one, and where the files are.

        The counts agree with pytest's outcome: a failed check in a test that
        expected it (``pytest.raises``, ``xfail``, or read the result) is
        "failed as expected", not failed. With ``GITHUB_ACTIONS=true`` each failed
        check also becomes an annotation at its test's file and line.
        """
        if self.not_written == "--collect-only":
            return  # collect-only output is read by tools: add nothing to it
        results = self.recorder.results
        by_verdict: dict[str, list[dict[str, Any]]] = {}
        for record in results:
            by_verdict.setdefault(verdict(record), []).append(record)
        failed = by_verdict.get("failed", [])
        unasserted = by_verdict.get("unasserted", [])
        expected = by_verdict.get("expected_failure", [])
        terminalreporter.write_sep("-", "gradcheck")
        noun = "check" if len(results) == 1 else "checks"
        seconds = sum(_number(r.get("duration_s")) for r in results)
        counts = f"{len(results)} {noun}, {len(failed)} failed"
        if expected:
            counts += f", {len(expected)} failed as expected"
        if unasserted:
            counts += f", {len(unasserted)} unasserted"
        terminalreporter.write_line(f"{counts} ({seconds:.2f} s in checks)")
        timed = sorted(results, key=lambda r: -_number(r.get("duration_s")))[:_SLOWEST_LISTED]
        if len(results) > 1:
            terminalreporter.write_line(
                "slowest: "
                + "; ".join(f"{_number(r.get('duration_s')):.2f} s {_where(r)}" for r in timed)
            )
        worst = sorted(failed, key=lambda r: -_number(r.get("max_abs_error")))[:_WORST_LISTED]
        for result in worst:
            if result.get("max_abs_error") is not None:
                hint = f" — {result['hint']}" if result.get("hint") else ""
                terminalreporter.write_line(
                    f"worst: |analytic - numeric| {_number(result['max_abs_error']):.3g} in "
                    f"{_where(result)}{hint}",
                    red=True,
                )
        for result in failed:
            test_id = result.get("test_id") or "(outside any test)"
            terminalreporter.write_line(f"FAILED {result.get('name')} in {test_id}", red=True)
        for result in unasserted:
            terminalreporter.write_line(
                f"UNASSERTED {result.get('name')} in {result.get('test_id')}: failed, and the "
                "test passed without reading the result",
                yellow=True,
            )
        if expected:
            terminalreporter.write_line(
                f"failed as expected: {len(expected)} (in tests that caught the assertion, "
                "read the result or were marked xfail; listed in the report)"
            )
        if self.not_written is not None:
            terminalreporter.write_line(f"results and report: not written ({self.not_written})")
            return
        if not self.scope.full:
            terminalreporter.write_line(
                f"{self.scope.describe()}: written beside the full report, which is left as it was",
                yellow=True,
            )
        terminalreporter.write_line(f"results: {self._shown(self.json_path)}")
        if self.report_error is None:
            terminalreporter.write_line(f"report: {self._shown(self.report_path)}")
        else:
            terminalreporter.write_line(
                f"report: not written ({self.report_error})", red=True, bold=True
            )
        if os.environ.get("GITHUB_ACTIONS") == "true":
            # Workflow commands are read from the step's log; the terminal writer is it.
            for line in github_annotations(results):
                terminalreporter.write_line(line)

    def _shown(self, path: Path) -> Path:
        try:
            return path.relative_to(self.config.invocation_params.dir)
        except ValueError:
            return path


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


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; with ``--gradcheck``, start recording results."""
    config.addinivalue_line("markers", MARKER_DESCRIPTION)
    config.stash[gradcheck_defaults_key] = read_defaults(config)
    configure_coverage(config)
    if not gradcheck_enabled(config):
        return
    config.stash[_json_path_key] = _json_path(config)
    report_path = _path_option(config, "gradcheck_report")
    if not hasattr(config, "workerinput") and not _writes_no_files(config):
        # Now, not after the last test: a path the end of the run cannot write is a usage error.
        check_report_paths(config.stash[_json_path_key], report_path)
    recorder = GradcheckSession(version=__version__)
    recorder.start()
    config.stash[gradcheck_session_key] = recorder
    # A failed check saves its inputs beside the JSON file, for its Reproduce: line.
    inputs_folder = failure_inputs.InputsFolder(
        config.stash[_json_path_key].parent / failure_inputs.INPUTS_FOLDER_NAME,
        root=config.rootpath,
        label=lambda: recorder.current_test_id,
    )
    failure_inputs.open_inputs_folder(inputs_folder)
    config.stash[_inputs_folder_key] = inputs_folder
    if not hasattr(config, "workerinput"):
        reporter = GradcheckReporter(config, recorder, config.stash[_json_path_key], report_path)
        config.stash[_reporter_key] = reporter
        config.pluginmanager.register(reporter, _REPORTER_NAME)
    torch_routing.configure(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop listening, so that a later in-process run starts clean."""
    torch_routing.unconfigure(config)
    recorder = config.stash.get(gradcheck_session_key, None)
    if recorder is not None:
        recorder.stop()
    inputs_folder = config.stash.get(_inputs_folder_key, None)
    if inputs_folder is not None:
        failure_inputs.close_inputs_folder(inputs_folder)
    reporter = config.stash.get(_reporter_key, None)
    if reporter is not None:
        del config.stash[_reporter_key]
        config.pluginmanager.unregister(reporter)


def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> TargetFactory | None:
    """A function marked ``@gradcheck_kit.target`` in a test file is a target, not a test."""
    if target_spec(obj) is None:
        return None
    config = collector.config
    return TargetFactory.from_parent(
        collector,
        name=name,
        factory=obj,
        defaults=config.stash[gradcheck_defaults_key],
        enabled=gradcheck_enabled(config),
        skip_reason=SKIP_REASON,
    )


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Add the ``--gradcheck-targets`` items; without ``--gradcheck``, skip marked tests."""
    if gradcheck_enabled(config):
        defaults = config.stash[gradcheck_defaults_key]
        for spec in defaults.targets:
            collector = TargetFactory.from_parent(
                session,
                name=spec,
                spec=spec,
                defaults=defaults,
                enabled=True,
                skip_reason=SKIP_REASON,
            )
            # genitems reports a failing factory as a collection error, like any module's
            items.extend(session.genitems(collector))
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
            pytest.fail(
                f"gradcheck mark takes no positional arguments, got {marker.args!r}.",
                pytrace=False,
            )
        problem: str | None = None
        try:
            apply_marker(item.config.stash[gradcheck_defaults_key], marker.kwargs)
        except ValueError as exc:
            problem = str(exc)
        if problem is not None:
            # This test alone fails, with the marker's argument named; collection went on.
            pytest.fail(problem, pytrace=False)


def _test_defaults(request: pytest.FixtureRequest) -> CheckDefaults:
    defaults = request.config.stash[gradcheck_defaults_key]
    # the closest mark wins, as pytest's own marks do: apply the farthest first
    for marker in reversed(list(request.node.iter_markers("gradcheck"))):
        defaults = apply_marker(defaults, marker.kwargs)
    return defaults


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> GradcheckFixture:
    """Gradient-check assertions bound to the run's ``--gradcheck-*`` options and the marker.

    ``gradcheck(fn, inputs)`` asserts (``assert_gradients_close``), ``gradcheck.check``
    returns the result, ``gradcheck.module(model, inputs)`` and ``gradcheck.manual(fn,
    manual_grad, inputs)`` check a module and a hand-written derivative. Keyword
    arguments override the options for one call.

    Example::

        @pytest.mark.gradcheck(mode="full")
        def test_tanh(gradcheck):
            gradcheck(torch.tanh, torch.randn(4, dtype=torch.float64, requires_grad=True))
    """
    return GradcheckFixture(_test_defaults(request))


@pytest.fixture
def training_watch(request: pytest.FixtureRequest) -> Iterator[TrainingWatchFixture]:
    """``training_watch(model, optimizer, **options)`` starts ``watch_training`` for the test.

    The watch ends when the test function returns: its findings fail the test
    there, as a failure of the test itself (not an error at teardown). A test
    that failed already keeps its own failure, with the findings added to it.

    Example::

        def test_loop(training_watch):
            training_watch(model, optimizer, accumulation_steps=4)
            train(model, optimizer)      # findings fail the test when it returns
    """
    watch = TrainingWatchFixture()
    request.node.stash[training_watch_key] = watch
    yield watch
    watch.close()  # a watch the call phase did not end (the test never ran)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    """End the test's ``training_watch`` right after the test: its findings fail the call.

    An old-style wrapper, like the plugin's other one: ``wrapper=True`` needs pluggy 1.2,
    newer than what pytest 7 may come with.
    """
    __tracebackhide__ = True
    outcome = yield
    watch = item.stash.get(training_watch_key, None)
    if watch is None:
        return
    if outcome.excinfo is not None:
        # the test's own failure first; the findings ride along as notes on it
        watch.close(outcome.excinfo[1])
        return
    try:
        watch.close()
    except BaseException as exc:
        force = getattr(outcome, "force_exception", None)  # pluggy >= 1.1
        if force is None:
            raise  # older pluggy lets a wrapper's exception through as the call's
        force(exc)


@pytest.fixture
def grad_device(request: pytest.FixtureRequest) -> Any:
    """A ``torch.device``; the test runs once per device of ``--gradcheck-device``.

    ``cpu`` by default, ``all`` gives cpu and cuda; a CUDA case skips with the reason
    where there is no GPU. ``@pytest.mark.gradcheck(devices=["cuda"])`` picks per test.

    Example::

        def test_on_each_device(gradcheck, grad_device):
            x = torch.randn(3, dtype=torch.float64, device=grad_device, requires_grad=True)
            gradcheck(torch.sin, x)
    """
    return select_device(getattr(request, "param", "cpu"))


@pytest.fixture
def grad_rng(request: pytest.FixtureRequest) -> Iterator[Any]:
    """torch, NumPy and ``random`` seeded with ``--gradcheck-seed`` (or the marker's seed).

    Yields a seeded ``torch.Generator``; every global RNG state is restored afterwards.

    Example::

        def test_dropout_model(gradcheck, grad_rng):
            x = torch.randn(4, 3, generator=grad_rng, dtype=torch.float64)
    """
    yield from seeded_rng(_test_defaults(request).seed)


@pytest.fixture
def device_benchmark(request: pytest.FixtureRequest, grad_device: Any) -> Callable[..., Any]:
    """Time a step on this test's ``grad_device`` with pytest-benchmark's ``benchmark``.

    ``device_benchmark(fn_or_module, make_inputs, phase="forward_backward", ...)``
    copies the module and inputs to the device and hands the step to ``benchmark``,
    grouped by callable and phase, so pytest-benchmark's table (and
    ``--benchmark-json``) shows cpu and cuda side by side. With ``--gradcheck-device
    all`` the test runs once per device; a missing GPU skips with the reason.

    Example::

        def test_step_speed(device_benchmark):
            device_benchmark(model, lambda: torch.randn(64, 1000), phase="forward_backward")
    """
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        benchmark = None
    if benchmark is None:
        pytest.fail(
            "device_benchmark needs pytest-benchmark's `benchmark` fixture: install "
            "pytest-benchmark and do not disable it with -p no:benchmark.",
            pytrace=False,
        )

    def run(fn_or_module: Any, make_inputs: Callable[[], Any], **options: Any) -> Any:
        from gradcheck_kit._src.devices import benchmark_callable
        from gradcheck_kit._src.errors import DeviceUnavailableError

        try:
            return benchmark_callable(benchmark, grad_device, fn_or_module, make_inputs, **options)
        except DeviceUnavailableError as exc:
            pytest.skip(str(exc))

    return run


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``grad_device`` over the selected devices (cpu, cuda)."""
    if "grad_device" not in metafunc.fixturenames:
        return
    defaults = metafunc.config.stash[gradcheck_defaults_key]
    try:
        for marker in reversed(list(metafunc.definition.iter_markers("gradcheck"))):
            defaults = apply_marker(defaults, marker.kwargs)
    except ValueError:
        # A bad marker value must not stop collection: the test is parametrised with
        # the run's devices and fails in its setup, naming the argument.
        defaults = metafunc.config.stash[gradcheck_defaults_key]
    devices = list(defaults.devices())
    metafunc.parametrize("grad_device", devices, indirect=True, ids=devices)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Give each check record its test's outcome, and JUnit XML its verdicts.

    Outermost wrapper (``tryfirst``): its second half sees the report after the
    xfail plugin set ``wasxfail``. Before the call's report exists, each check
    of the test becomes a property of it (``--junitxml`` writes them).
    """
    recorder = item.config.stash.get(gradcheck_session_key, None)
    if recorder is not None and call.when == "call":
        item.user_properties.extend(junit_properties(recorder.records_of_test()))
    outcome = yield
    if recorder is None:
        return
    report = outcome.get_result()
    item.stash[_outcome_key] = outcome_after_phase(
        item.stash.get(_outcome_key, None), call.when, report
    )
    if call.when == "teardown":
        file, line, _ = report.location
        records = recorder.finish_test(
            item.stash[_outcome_key], file=file, line=None if line is None else line + 1
        )
        for record in (r for r in records if verdict(r) == "unasserted"):
            item.warn(
                UnassertedCheckWarning(
                    f"{_where(record)} failed, and the test passed without reading its "
                    "result: assert on it (assert result.passed, result.summary()) or call "
                    "the assert_* twin, which raises."
                )
            )


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
