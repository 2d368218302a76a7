"""The plugin's fixtures, and what they hand to a test: a checker bound to the run's options.

``plugin.py`` imports the fixture functions, which registers them. Imports no
torch at module level: pytest imports the plugin in every run, and these
objects import the checks only when a test uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pytest

from gradcheck_kit.pytest_plugin.options import (
    CheckDefaults,
    apply_markers,
    gradcheck_defaults_key,
    rank_options,
)

__all__ = [
    "DDPWorld",
    "GradcheckFixture",
    "TrainingWatchFixture",
    "seeded_rng",
    "select_device",
    "training_watch_key",
    "gradcheck",
    "training_watch",
    "grad_device",
    "grad_rng",
    "device_benchmark",
    "ddp_world",
]


class GradcheckFixture:
    """The ``gradcheck`` fixture: assertions bound to the run's options and this test's marker.

    ``--gradcheck-mode/-dtype/-seed/-atol/-rtol`` (or their ini keys) and
    ``@pytest.mark.gradcheck(...)`` give the defaults; keyword arguments of a call
    win over both. Every check is recorded with the test's id for the JSON/HTML
    report when pytest runs with ``--gradcheck``.

    Examples:
        >>> # test_my_ops.py
        >>> def test_tanh(gradcheck):
        ...     import torch
        ...     x = torch.randn(4, dtype=torch.float64, requires_grad=True)
        ...     gradcheck(torch.tanh, x)             # raises GradientMismatchError if wrong
        ...     result = gradcheck.check(torch.tanh, x)   # returns the result, never raises
        ...     assert result.passed
    """

    def __init__(self, defaults: CheckDefaults) -> None:
        self.defaults = defaults

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options every call starts from."""
        return self.defaults.as_kwargs()

    def __call__(self, fn: Callable[..., Any], inputs: Any, **overrides: Any) -> Any:
        """Assert ``fn``'s gradients at ``inputs`` (like ``assert_gradients_close``)."""
        __tracebackhide__ = True
        from gradcheck_kit._src.asserts import assert_gradients_close

        return assert_gradients_close(fn, inputs, **{**self.options, **overrides})

    def check(self, fn: Callable[..., Any], inputs: Any, **overrides: Any) -> Any:
        """Check without raising (like ``check_gradients``); returns the result."""
        from gradcheck_kit._src.gradcheck import check_gradients

        return check_gradients(fn, inputs, **{**self.options, **overrides})

    def module(self, module: Any, inputs: Any, **overrides: Any) -> Any:
        """Assert a module's gradients (like ``assert_module_gradients``)."""
        __tracebackhide__ = True
        from gradcheck_kit._src.asserts import assert_module_gradients

        return assert_module_gradients(module, inputs, **{**self.options, **overrides})

    def manual(
        self,
        fn: Callable[..., Any],
        manual_grad: Callable[..., Any] | None = None,
        inputs: Any = None,
        **overrides: Any,
    ) -> Any:
        """Assert a hand-written derivative (like ``assert_matches_manual``)."""
        __tracebackhide__ = True
        from gradcheck_kit._src.manual import assert_matches_manual

        options = {k: v for k, v in self.options.items() if k != "n_probes"}
        return assert_matches_manual(fn, manual_grad, inputs, **{**options, **overrides})


class TrainingWatchFixture:
    """The ``training_watch`` fixture: ``watch_training`` closed at the end of the test.

    Call it with the model and optimizer (and any ``watch_training`` option) once
    they exist; it starts watching at once and returns the watcher. When the test
    function returns the watcher is closed, so a finding fails the test (in its
    call phase) even when the test never leaves a ``with`` block of its own.

    Examples:
        >>> # test_training.py
        >>> def test_loop(training_watch):
        ...     import torch
        ...     model = torch.nn.Linear(3, 1)
        ...     opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ...     training_watch(model, opt)
        ...     for _ in range(3):
        ...         opt.zero_grad()
        ...         model(torch.randn(8, 3)).pow(2).mean().backward()
        ...         opt.step()
    """

    def __init__(self) -> None:
        self._open: list[AbstractContextManager[Any]] = []

    def __call__(self, model: Any, optimizer: Any, **options: Any) -> Any:
        """Start watching ``model`` trained by ``optimizer``; returns the watcher."""
        from gradcheck_kit._src.training.watcher import watch_training

        watcher = watch_training(model, optimizer, **options)
        entered = watcher.__enter__()
        self._open.append(watcher)
        return entered

    def close(self, error: BaseException | None = None) -> None:
        """Exit every watcher still open, newest first; findings raise here.

        Args:
            error: The exception the test raised, if any: then the findings are
                added to it as notes, and nothing else is raised.
        """
        __tracebackhide__ = True
        while self._open:
            watcher = self._open.pop()
            if error is None:
                watcher.__exit__(None, None, None)
            else:
                watcher.__exit__(type(error), error, error.__traceback__)


@dataclass(frozen=True)
class DDPWorld:
    """The ``ddp_world`` fixture: this rank and the group of a ``gradcheck(world_size=N)`` test.

    ``rank`` is read from ``torch.distributed`` when asked, so the same object
    (set up once in the pytest process, sent to every rank) gives each rank its own.

    Examples:
        >>> world = DDPWorld(world_size=2, backend="gloo")
        >>> world.world_size, world.backend
        (2, 'gloo')
    """

    world_size: int
    backend: str

    @property
    def rank(self) -> int:
        """This process's rank in the group, ``0 .. world_size - 1``.

        Raises:
            RuntimeError: read outside the test's body (in a fixture, which runs once
                in the pytest process, not on the ranks).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "ddp_world.rank is known only on a rank, in the body of a test marked "
                "gradcheck(world_size=N); fixtures run once, in the pytest process."
            )
        return int(dist.get_rank())

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (where a test would write a file, say)."""
        return self.rank == 0


training_watch_key = pytest.StashKey[TrainingWatchFixture]()
"""The test's ``training_watch`` on ``item.stash``, so that the call phase can end it."""


def seeded_rng(seed: int) -> Iterator[Any]:
    """Seed torch, NumPy and ``random`` with ``seed``; restore their states afterwards.

    Yields a ``torch.Generator`` seeded with ``seed`` for explicit use.
    """
    import torch

    from gradcheck_kit._src.state.rng import capture_rng_state, restore_rng_state, seed_everything

    saved = capture_rng_state()
    seed_everything(seed)
    try:
        yield torch.Generator().manual_seed(seed)
    finally:
        restore_rng_state(saved)


def select_device(name: str) -> Any:
    """``torch.device(name)``, or skip the test with the reason when it is not usable."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip(
            "CUDA device not available: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda or 'no'})"
        )
    return torch.device(name)


def _test_defaults(request: pytest.FixtureRequest) -> CheckDefaults:
    return apply_markers(request.config.stash[gradcheck_defaults_key], request.node)


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
        from gradcheck_kit._src.devices.benchmark import benchmark_callable
        from gradcheck_kit._src.errors import DeviceUnavailableError

        try:
            return benchmark_callable(benchmark, grad_device, fn_or_module, make_inputs, **options)
        except DeviceUnavailableError as exc:
            pytest.skip(str(exc))

    return run


@pytest.fixture
def ddp_world(request: pytest.FixtureRequest) -> DDPWorld:
    """This rank and its group, in a test marked ``@pytest.mark.gradcheck(world_size=N)``.

    ``ddp_world.rank``, ``.world_size``, ``.backend`` and ``.is_main`` (rank 0). The
    test's body runs on every rank inside the initialised process group, so
    ``torch.distributed.get_rank()`` works there too; this fixture only says it plainly.

    Example::

        @pytest.mark.gradcheck(world_size=2)
        def test_sum(ddp_world):
            t = torch.tensor([float(ddp_world.rank)])
            dist.all_reduce(t)
            assert t.item() == 1.0
    """
    options = rank_options(request.node)
    if options is None:
        pytest.fail(
            "ddp_world belongs to a test on several ranks: mark it "
            "@pytest.mark.gradcheck(world_size=N) (N >= 2).",
            pytrace=False,
        )
    return DDPWorld(world_size=options.world_size, backend=options.backend)
