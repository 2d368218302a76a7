"""Run one test's body on N ranks of a ``torch.distributed`` group: ``gradcheck(world_size=N)``.

The parent (the pytest process) sets the fixtures up once, as for any test,
then :func:`run_test_on_ranks` starts N processes with
:func:`~gradcheck_kit._src.distributed.launch.run_on_ranks`. Each rank imports
the test's module from its file (under the name pytest gave it, with pytest's
assertion rewriting), unpickles the fixture values and calls the test inside
the initialised process group. A rank that fails, hangs or dies fails the test
once, naming the rank. The checks a rank publishes come back to the parent's
records, each with ``extra["rank"]``.

Imports no torch at module level: ``plugin.py`` imports this module in every run.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pickle
import sys
import tempfile
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from gradcheck_kit._src import recording
from gradcheck_kit.pytest_plugin.fixtures import TrainingWatchFixture
from gradcheck_kit.pytest_plugin.options import RankOptions
from gradcheck_kit.pytest_plugin.session import GradcheckSession
from gradcheck_kit.report.safe_records import safe_record, stub_record

__all__ = [
    "Package",
    "RankedTest",
    "load_test_module",
    "packages_of",
    "rank_main",
    "run_test_on_ranks",
]

_RECORDS_FILE = "records-{rank}.pickle"


Package = tuple[str, "str | None", tuple[str, ...]]
"""A package above a test module: its name, ``__init__.py`` (None: a namespace), ``__path__``."""


@dataclass(frozen=True)
class RankedTest:
    """What a rank needs to find and call the test; sent to every rank by pickle.

    ``payload`` is the pickled ``(instance, kwargs)``: it is unpickled only once
    the test's module is imported, since the values may be of the module's classes.
    """

    nodeid: str
    module_name: str
    module_file: str
    class_name: str | None
    function_name: str
    packages: tuple[Package, ...]
    payload: bytes
    rewrite_asserts: bool
    records_folder: str


def packages_of(module_name: str) -> tuple[Package, ...]:
    """The packages above ``module_name`` as this process imported them, outermost first.

    Examples:
        >>> packages_of("gradcheck_kit.pytest_plugin.ranks")[0][0]
        'gradcheck_kit'
    """
    parts = module_name.split(".")[:-1]
    found: list[Package] = []
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        package = sys.modules.get(name)
        if package is None:
            break
        file = getattr(package, "__file__", None)
        found.append((name, file, tuple(getattr(package, "__path__", ()))))
    return tuple(found)


def load_test_module(
    name: str, file: str, *, packages: tuple[Package, ...] = (), rewrite_asserts: bool = True
) -> Any:
    """The test module ``name`` from ``file``, imported as pytest imported it in the parent.

    pytest's import modes (``prepend``, ``importlib``) give a test module a name that a
    plain ``import`` may not find, its packages included. So the packages above it
    come from where the parent found them (``packages``, see :func:`packages_of`) and
    the file is run as module ``name``, registered in ``sys.modules`` so that pickled
    values of its classes resolve, with pytest's assertion rewriting unless the run
    said ``--assert=plain``. A module already imported from ``file`` is used as it is.
    """
    module = sys.modules.get(name)
    if module is not None and _same_file(getattr(module, "__file__", None), file):
        return module
    for package_name, init_file, search in packages:
        if package_name not in sys.modules:
            _register(package_name, _load_package(package_name, init_file, list(search)))
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None:
        raise ImportError(f"cannot import the test module {name!r} from {file}")
    module = importlib.util.module_from_spec(spec)
    code = _compile(Path(file).read_bytes(), file, rewrite_asserts)
    _register(name, module)
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _load_package(name: str, init_file: str | None, search: list[str]) -> Any:
    if init_file is None:  # a namespace package, or one pytest made up for the name
        package = types.ModuleType(name)
        package.__path__ = search
        return package
    spec = importlib.util.spec_from_file_location(
        name, init_file, submodule_search_locations=search
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the package {name!r} from {init_file}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package  # before it runs, as import does: it may import itself
    try:
        spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[name]
        raise
    return package


def _register(name: str, module: Any) -> None:
    sys.modules[name] = module
    parent, _, attribute = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], attribute, module)


def _same_file(a: str | None, b: str) -> bool:
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False


def _compile(source: bytes, file: str, rewrite_asserts: bool) -> Any:
    if rewrite_asserts:
        try:  # the explanation of a failed `assert` that pytest would show
            from _pytest.assertion.rewrite import rewrite_asserts as rewrite

            tree = ast.parse(source, filename=file)
            rewrite(tree, source, file, None)
            return compile(tree, file, "exec", dont_inherit=True)
        except Exception:
            pass  # another pytest's internals: plain asserts still fail the test
    return compile(source, file, "exec", dont_inherit=True)


class _RankRecords:
    """Keeps what the checks publish on this rank, to send to the parent's records."""

    def __init__(self, test_id: str) -> None:
        self.test_id = test_id
        self.kept: list[tuple[dict[str, Any], Any]] = []

    def __call__(self, result: Any) -> None:
        try:
            data = safe_record(result.with_test_id(self.test_id).to_dict())
        except Exception as exc:
            data = stub_record({"test_id": self.test_id}, exc)
        recording.watch(result)  # only now: the check's own reads do not count
        self.kept.append((data, result))

    def save(self, path: Path) -> None:
        rows = [(data, recording.was_read(result)) for data, result in self.kept]
        path.write_bytes(pickle.dumps(rows))


def rank_main(rank: int, world_size: int, test: RankedTest) -> tuple[str, str] | None:
    """One rank of a test (run by ``run_on_ranks``): import it, call it, keep its records.

    Returns:
        ``None``, or ``("skipped", reason)`` where the test called ``pytest.skip``.
    """
    records = _RankRecords(test.nodeid)
    unsubscribe = recording.subscribe(records)
    try:
        module = load_test_module(
            test.module_name,
            test.module_file,
            packages=test.packages,
            rewrite_asserts=test.rewrite_asserts,
        )
        instance, kwargs = pickle.loads(test.payload)
        if test.class_name is None:
            function = getattr(module, test.function_name)
        else:
            function = getattr(instance, test.function_name)
        watches = [v for v in kwargs.values() if isinstance(v, TrainingWatchFixture)]
        try:
            function(**kwargs)
        except pytest.skip.Exception as exc:
            return ("skipped", str(exc.msg))
        except BaseException as exc:
            for watch in watches:  # the test's own failure first, the findings as notes
                watch.close(exc)
            raise
        for watch in watches:  # the training_watch fixture's findings fail the rank
            watch.close()
        return None
    finally:
        unsubscribe()
        records.save(Path(test.records_folder) / _RECORDS_FILE.format(rank=rank))


def _payload(item: pytest.Function, kwargs: Mapping[str, Any], options: RankOptions) -> bytes:
    """``(instance, kwargs)`` pickled, or the test fails naming the fixture that cannot be."""
    instance = getattr(item, "instance", None)
    try:
        return pickle.dumps((instance, dict(kwargs)))
    except Exception as exc:
        error: Exception = exc
    # which value: each alone, the fixtures first, then the class's instance (`self`)
    parts = [(f"fixture {n!r} ({type(v).__name__})", v) for n, v in kwargs.items()]
    parts.append((f"the test's class instance ({type(instance).__name__})", instance))
    culprit = "the fixture values together"
    for what, value in parts:
        problem = _pickle_problem(value)
        if problem is not None:
            culprit, error = what, problem
            break
    # outside any `except`: the failure shows no chain of pickle's internals
    _fail_unsendable(item, culprit, error, options)
    return b""  # pragma: no cover (pytest.fail raised)


def _pickle_problem(value: Any) -> Exception | None:
    try:
        pickle.dumps(value)
    except Exception as exc:
        return exc
    return None


def _fail_unsendable(
    item: pytest.Item, what: str, exc: Exception, options: RankOptions
) -> NoReturn:
    pytest.fail(
        f"{what} of {item.name} cannot be sent to the ranks: {type(exc).__name__}: {exc}.\n"
        f"A test marked gradcheck(world_size={options.world_size}) runs its body in "
        f"{options.world_size} new processes, and every fixture value it takes travels "
        "there by pickle. Use that fixture in another fixture (they run once, in the pytest "
        "process) and pass the test a picklable value, or build the object in the test.",
        pytrace=False,
    )


def run_test_on_ranks(
    item: pytest.Function, options: RankOptions, recorder: GradcheckSession | None
) -> None:
    """Call ``item``'s test function on ``options.world_size`` ranks; fail it once if one fails.

    Args:
        item: The test; its fixtures are set up (``item.funcargs``).
        options: The marker's ``world_size``, ``backend`` and ``timeout``.
        recorder: The run's records (``--gradcheck``): the ranks' checks join them.
    """
    __tracebackhide__ = True
    from gradcheck_kit._src.distributed.launch import run_on_ranks
    from gradcheck_kit._src.errors import InvalidArgument, RankFailedError

    argnames = item._fixtureinfo.argnames
    kwargs = {name: item.funcargs[name] for name in argnames}
    module = item.module
    if module is None or getattr(module, "__file__", None) is None:
        pytest.fail(f"{item.nodeid}: a test on several ranks must live in a module file.")
    function_name = getattr(item, "originalname", item.name)
    rewrite = item.config.getoption("assertmode", "rewrite") == "rewrite"
    with tempfile.TemporaryDirectory(prefix="gradcheck_kit_rank_records_") as folder:
        test = RankedTest(
            nodeid=item.nodeid,
            module_name=module.__name__,
            module_file=str(module.__file__),
            class_name=None if item.cls is None else item.cls.__qualname__,
            function_name=function_name,
            packages=packages_of(module.__name__),
            payload=_payload(item, kwargs, options),
            rewrite_asserts=rewrite,
            records_folder=folder,
        )
        failure: str | None = None
        skipped: dict[int, str] = {}
        try:
            run = run_on_ranks(
                rank_main,
                options.world_size,
                args=(test,),
                backend=options.backend,
                timeout=options.timeout,
            )
        except InvalidArgument as exc:  # a backend that cannot run here, named
            failure = f"gradcheck mark: {exc}"
        except RankFailedError as exc:
            failure = str(exc)
        else:
            skipped = {
                rank: value[1]
                for rank, value in enumerate(run.values)
                if isinstance(value, tuple) and value[:1] == ("skipped",)
            }
        if recorder is not None:
            _add_rank_records(recorder, Path(folder), options.world_size)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    if skipped:
        _skip(skipped, options.world_size)


def _skip(reasons: Mapping[int, str], world_size: int) -> NoReturn:
    """Skip the test, at its own line (as a skip mark would), saying on which ranks."""
    if len(set(reasons.values())) == 1:
        where = "every rank" if len(reasons) == world_size else f"ranks {sorted(reasons)}"
        text = f"{next(iter(reasons.values()))} (on {where})"
    else:
        text = "; ".join(f"rank {rank}: {reason}" for rank, reason in reasons.items())
    try:  # pytest >= 7.4: report the test's location, not this line's
        exc = pytest.skip.Exception(text, _use_item_location=True)
    except TypeError:
        exc = pytest.skip.Exception(text)
    raise exc


def _add_rank_records(recorder: GradcheckSession, folder: Path, world_size: int) -> None:
    for rank in range(world_size):
        path = folder / _RECORDS_FILE.format(rank=rank)
        if not path.is_file():
            continue  # the rank died or was stopped before it could save them
        try:
            rows = pickle.loads(path.read_bytes())
        except Exception:
            continue
        for data, looked_at in rows:
            recorder.record_from_rank(data, rank=rank, looked_at=looked_at)
