"""The ``gradcheck`` pytest plugin (the ``pytest11`` entry point): options, marker, hooks.

Wiring only. pytest imports this module in every run of every project that
installs gradcheck_kit, so it must stay light: no torch, nothing that imports
torch. The work lives beside it:

* :mod:`.options`: the ``--gradcheck-*`` options and ini keys, the marker's keywords;
* :mod:`.fixtures`: ``gradcheck``, ``training_watch``, ``grad_device``, ``grad_rng``,
  ``device_benchmark``, ``ddp_world`` (imported here, which registers them);
* :mod:`.ranks`: a test marked ``gradcheck(world_size=N)`` runs on N ranks;
* :mod:`.session`: the run's records; :mod:`.reporter`: the JSON file and HTML
  report, written by the xdist controller alone; :mod:`.terminal`: the summary;
* :mod:`.hookspec`: the plugin's own hooks (``pytest_gradcheck_record``), asked by
  :mod:`.extra`.

What it adds:

* ``--gradcheck``: run the tests marked ``@pytest.mark.gradcheck`` (skipped
  otherwise), record every result that a check publishes and write them all to
  one JSON file at the end of the run, with a summary in the terminal.
* ``--gradcheck-json PATH`` / ini ``gradcheck_json``: where that file goes.
* ``--gradcheck-report PATH`` / ini ``gradcheck_report``: where the HTML report
  of the same results goes (``gradcheck_kit.report``).

Under pytest-xdist the workers record and send their results (and what they ran
on) to the controller (``config.workeroutput``). Only the controller registers
the :class:`~.reporter.GradcheckReporter` plugin object, which alone writes the files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import pytest

from gradcheck_kit import __version__
from gradcheck_kit._src import failure_inputs
from gradcheck_kit._src.target_mark import target_spec
from gradcheck_kit.pytest_plugin import hookspec, torch_routing
from gradcheck_kit.pytest_plugin.collect import TargetFactory
from gradcheck_kit.pytest_plugin.coverage import add_coverage_options, configure_coverage
from gradcheck_kit.pytest_plugin.extra import add_extra_fields

# pytest registers the fixtures it finds in a plugin module's namespace: importing is registering.
from gradcheck_kit.pytest_plugin.fixtures import (  # noqa: F401
    ddp_world,
    device_benchmark,
    grad_device,
    grad_rng,
    gradcheck,
    training_watch,
    training_watch_key,
)
from gradcheck_kit.pytest_plugin.options import (
    DEFAULT_JSON_PATH,
    DEFAULT_REPORT_PATH,
    RankOptions,
    add_check_options,
    add_output_options,
    apply_marker,
    apply_markers,
    gradcheck_defaults_key,
    rank_options,
    read_defaults,
    read_path,
    writes_no_files,
)
from gradcheck_kit.pytest_plugin.outcomes import (
    junit_properties,
    outcome_after_phase,
    unasserted_warnings,
)
from gradcheck_kit.pytest_plugin.ranks import run_test_on_ranks
from gradcheck_kit.pytest_plugin.report_paths import check_report_paths
from gradcheck_kit.pytest_plugin.reporter import REPORTER_NAME, GradcheckReporter, hand_over
from gradcheck_kit.pytest_plugin.session import GradcheckSession

__all__ = [
    "DEFAULT_JSON_PATH",
    "DEFAULT_REPORT_PATH",
    "MARKER_DESCRIPTION",
    "SKIP_REASON",
    "GradcheckReporter",
    "gradcheck_defaults_key",
    "gradcheck_enabled",
    "gradcheck_session_key",
]

SKIP_REASON = "gradient check: run with --gradcheck"
MARKER_DESCRIPTION = (
    "gradcheck(mode=, dtype=, eps=, atol=, rtol=, seed=, rng=, n_probes=, devices=, "
    "world_size=, backend=, timeout=): a gradient check; skipped unless pytest runs with "
    "--gradcheck. The keywords override the run's options for the gradcheck fixture in "
    "this test; world_size=N runs the test's body on N torch.distributed ranks (backend= "
    "'gloo', timeout= seconds for the whole run)."
)

gradcheck_session_key = pytest.StashKey[GradcheckSession]()
"""The run's :class:`GradcheckSession` on ``config.stash``; present only with ``--gradcheck``."""
_outcome_key = pytest.StashKey[str]()
_reporter_key = pytest.StashKey[GradcheckReporter]()
_inputs_folder_key = pytest.StashKey[failure_inputs.InputsFolder]()
_ranks_key = pytest.StashKey[RankOptions]()


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Register the hooks; add the ``gradient checks`` options, each mirrored as an ini key."""
    pluginmanager.add_hookspecs(hookspec)
    group = parser.getgroup("gradcheck", "gradient checks")
    add_output_options(group, parser)
    add_check_options(group, parser)
    add_coverage_options(group, parser)
    torch_routing.add_torch_option(group, parser)


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


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; with ``--gradcheck``, start recording results."""
    config.addinivalue_line("markers", MARKER_DESCRIPTION)
    config.stash[gradcheck_defaults_key] = read_defaults(config)
    configure_coverage(config)
    if not gradcheck_enabled(config):
        return
    json_path = read_path(config, "gradcheck_json")
    report_path = read_path(config, "gradcheck_report")
    if not hasattr(config, "workerinput") and not writes_no_files(config):
        # Now, not after the last test: a path the end of the run cannot write is a usage error.
        check_report_paths(json_path, report_path)
    recorder = GradcheckSession(version=__version__)
    recorder.start()
    config.stash[gradcheck_session_key] = recorder
    # A failed check saves its inputs beside the JSON file, for its Reproduce: line.
    inputs_folder = failure_inputs.InputsFolder(
        json_path.parent / failure_inputs.INPUTS_FOLDER_NAME,
        root=config.rootpath,
        label=lambda: recorder.current_test_id,
    )
    failure_inputs.open_inputs_folder(inputs_folder)
    config.stash[_inputs_folder_key] = inputs_folder
    if not hasattr(config, "workerinput"):
        reporter = GradcheckReporter(config, recorder, json_path, report_path)
        config.stash[_reporter_key] = reporter
        config.pluginmanager.register(reporter, REPORTER_NAME)
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``grad_device`` over the selected devices (cpu, cuda)."""
    if "grad_device" not in metafunc.fixturenames:
        return
    defaults = metafunc.config.stash[gradcheck_defaults_key]
    # A bad marker value must not stop collection: the test is parametrised with
    # the run's devices and fails in its setup, naming the argument.
    with contextlib.suppress(ValueError):
        defaults = apply_markers(defaults, metafunc.definition)
    devices = list(defaults.devices())
    metafunc.parametrize("grad_device", devices, indirect=True, ids=devices)


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
    ranks: RankOptions | None = None
    rank_problem: str | None = None
    try:
        ranks = rank_options(item)
    except ValueError as exc:
        rank_problem = str(exc)
    if rank_problem is not None:
        pytest.fail(rank_problem, pytrace=False)
    if ranks is not None:
        item.stash[_ranks_key] = ranks


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A test marked ``gradcheck(world_size=N)`` runs on N ranks instead of here."""
    options = pyfuncitem.stash.get(_ranks_key, None)
    if options is None:
        return None
    recorder = pyfuncitem.config.stash.get(gradcheck_session_key, None)
    run_test_on_ranks(pyfuncitem, options, recorder)
    return True


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


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Give each check record its test's outcome and extra fields, and JUnit XML its verdicts.

    Outermost wrapper (``tryfirst``): its second half sees the report after the
    xfail plugin set ``wasxfail``. Before the call's report exists, each check
    of the test becomes a property of it (``--junitxml`` writes them). After the
    teardown, the project's ``pytest_gradcheck_record`` hooks see each record.
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
        add_extra_fields(records, item=item, config=item.config)
        for warning in unasserted_warnings(records):
            item.warn(warning)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the fixtures' teardown (which may publish too), results belong to no test."""
    recorder = item.config.stash.get(gradcheck_session_key, None)
    if recorder is not None:
        recorder.current_test_id = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
    """Offer the records made outside tests to the hooks; a worker hands its records over.

    ``tryfirst``: before :class:`~.reporter.GradcheckReporter` writes the files.
    """
    config = session.config
    recorder = config.stash.get(gradcheck_session_key, None)
    if recorder is None:
        return
    add_extra_fields(recorder.take_records_outside_tests(), item=None, config=config)
    hand_over(config, recorder)
