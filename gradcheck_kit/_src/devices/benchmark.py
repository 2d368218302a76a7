"""CPU vs CUDA: device benchmarks.

* :func:`benchmark_devices` times forward and forward+backward of a module or
  function on each device (optionally over a size sweep) in rounds
  (:mod:`..timing`: calibrated iterations, warm-up rounds, median, IQR, mean,
  stddev) and reports speedups and the crossover size where the second device
  starts to win. Each round replays the same work: the device's copy is put back
  where it started and every RNG is seeded before the round.
  What it measured is a :class:`.benchmark_results.DeviceBenchmark`.
* :func:`benchmark_callable` is the building block of the pytest plugin's
  ``device_benchmark`` fixture: it hands one device's step to pytest-benchmark's
  ``benchmark`` fixture, grouped so that cpu and cuda sit side by side.

Devices that are not present are reported as skipped, with the reason, never as
failures. The user's module is copied (:func:`.common.prepare`); it is never
moved, and its tensors and every RNG state are left as they were. Every timed
round ends in ``torch.cuda.synchronize()`` on CUDA (every timed call, under
pytest-benchmark, whose clock knows nothing of devices).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch

from .. import recording
from ..errors import DeviceUnavailableError, InvalidArgument, InvalidArgumentType
from ..serial import one_at_a_time
from ..state.rng import replaying_rng, seed_everything
from ..state.snapshot import preserved
from ..timing import ROUNDS_PER_RUN, calibrate, check_round_options, time_rounds
from ..undo import undoing_writes, watching_user_code
from ..validation import check_int, check_type
from .benchmark_results import DeviceBenchmark, DeviceTiming, Phase, PhaseTiming
from .common import (
    Prepared,
    check_callables,
    default_loss,
    device_skip_reason,
    name_of,
    named_tensors,
    parse_device,
    parse_devices,
    prepare,
    synchronize_device,
)

__all__ = ["benchmark_callable", "benchmark_devices"]

_PHASES: Final = ("forward", "forward_backward", "train_step")


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return str(torch.cuda.get_device_name(dev))
    if dev.type == "cpu":
        cpu = platform.processor() or platform.machine() or "cpu"
        return f"{cpu}, {torch.get_num_threads()} threads"
    return str(dev)


def _check_sizes(sizes: object) -> tuple[int, ...] | None:
    if sizes is None:
        return None
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise InvalidArgumentType(
            f"sizes={sizes!r} must be a sequence of ints, e.g. sizes=[64, 256, 1024]."
        )
    if not sizes:
        raise InvalidArgument("sizes=[] is empty; pass None to time one size.")
    for i, size in enumerate(sizes):
        if isinstance(size, bool) or not isinstance(size, int):
            raise InvalidArgumentType(
                f"sizes[{i}]={size!r} must be an int, not {type(size).__name__}."
            )
        check_int(size, f"sizes[{i}]", min_value=1)
    if len(set(sizes)) != len(sizes):
        raise InvalidArgument(f"sizes={list(sizes)!r} repeats a size.")
    return tuple(sizes)


def _leaves(prep: Prepared) -> list[torch.Tensor]:
    return [t for _, t in named_tensors(prep.args, "input") if t.requires_grad] + [
        p for _, p in prep.params
    ]


def _make_step(
    prep: Prepared,
    phase: Phase,
    loss_fn: Callable[[Any], torch.Tensor] | None,
    *,
    synchronize: bool = False,
) -> Callable[[], None]:
    """A no-argument step for ``phase``; with ``synchronize`` it ends synchronised with the device.

    Rounds synchronise at their ends (:func:`..timing.time_rounds`), so steps timed
    that way queue work as a training loop does; pytest-benchmark's clock does not
    synchronise, so its steps must.
    """
    reduce = loss_fn or default_loss
    leaves = _leaves(prep)
    dev, fn, args, opt = prep.device, prep.fn, prep.args, prep.optimizer

    def forward() -> None:
        fn(*args)

    def forward_backward() -> None:
        for leaf in leaves:
            leaf.grad = None
        reduce(fn(*args)).backward()

    def train_step() -> None:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        reduce(fn(*args)).backward()
        if opt is not None:
            opt.step()

    work = {"forward": forward, "forward_backward": forward_backward, "train_step": train_step}[
        phase
    ]
    if not synchronize or dev.type == "cpu":
        return work

    def synchronised() -> None:
        work()
        synchronize_device(dev)

    return synchronised


class _RoundStart:
    """Before each round: the device's copy back as it was prepared, every RNG seeded.

    Parameters and buffers get their values back (in place, so the step's
    references stay valid), gradients are dropped, the optimizer gets its state
    back; then Python ``random``, NumPy and torch (CPU and CUDA) are seeded. So a
    round does the same work every time: the same random draws (DynamicNet's
    depths, dropout masks) on the same weights, however far training had gone.
    """

    def __init__(self, prep: Prepared, seed: int) -> None:
        self._seed = seed
        self._leaves = _leaves(prep)
        tensors = (
            [*prep.module.parameters(), *prep.module.buffers()] if prep.module is not None else []
        )
        self._saved = [(t, t.detach().clone()) for t in tensors]
        self._optimizer = prep.optimizer
        self._optimizer_state = (
            copy.deepcopy(prep.optimizer.state_dict()) if prep.optimizer is not None else None
        )

    def __call__(self) -> None:
        with torch.no_grad():
            for live, saved in self._saved:
                live.copy_(saved)
        for leaf in self._leaves:
            leaf.grad = None
        if self._optimizer is not None and self._optimizer_state is not None:
            # a copy: load_state_dict adopts same-device tensors, which step() then updates
            self._optimizer.load_state_dict(copy.deepcopy(self._optimizer_state))
        seed_everything(self._seed)


def _crossover(
    sizes: tuple[int, ...], speed_by_size: dict[int, dict[Phase, float]], phase: Phase
) -> int | None:
    """The first size from which the last device stays faster (ordered by size)."""
    ordered = sorted(sizes)
    wins = [speed_by_size.get(s, {}).get(phase) for s in ordered]
    if any(w is None for w in wins):
        return None
    crossover: int | None = None
    for size, win in zip(ordered, wins, strict=True):
        if win is not None and win > 1.0:
            crossover = size if crossover is None else crossover
        else:
            crossover = None
    return crossover


# ------------------------------------------------------------------ timing


@dataclass(frozen=True)
class _Rounds:
    """How :func:`benchmark_devices` times each phase (its arguments, checked)."""

    rounds: int | None
    iterations: int | None
    warmup: int
    min_run_time: float


def _no_replay() -> None:
    return None


def _time_phase(
    steps: dict[torch.device, Callable[[], None]],
    starts: dict[torch.device, Callable[[], None]],
    how: _Rounds,
    seed: int,
) -> dict[torch.device, PhaseTiming]:
    """One phase on every present device, all with the same calls per round.

    The same count matters under replay: a round's work is the first
    ``iterations`` draws from the seed (the first depths of a random-depth net),
    so devices with different counts would be timed on different work.
    Calibrated on each device, the smallest count is used on all: the faster
    devices' rounds get shorter than calibrated (more of them fill
    ``min_run_time``), and no device's rounds grow past its own calibration.
    """
    counts: list[int] = []
    for dev, step in steps.items():
        if starts[dev] is _no_replay:
            seed_everything(seed)  # not replayed: seeded once per device and phase
        starts[dev]()
        with watching_user_code():
            step()  # lazy state (CUDA context, cuDNN autotune) before calibration; writes undone
        if how.iterations is None:
            count, _ = calibrate(
                step,
                min_round_time=how.min_run_time / ROUNDS_PER_RUN,
                synchronize=functools.partial(synchronize_device, dev),
                begin_round=starts[dev],
            )
            counts.append(count)
    iterations = how.iterations if how.iterations is not None else min(counts)
    return {
        dev: PhaseTiming.from_rounds(
            time_rounds(
                step,
                synchronize=functools.partial(synchronize_device, dev),
                begin_round=starts[dev],
                rounds=how.rounds,
                iterations=iterations,
                warmup=how.warmup,
                min_run_time=how.min_run_time,
            )
        )
        for dev, step in steps.items()
    }


@one_at_a_time
def benchmark_devices(
    fn_or_module: Callable[..., Any],
    make_inputs: Callable[..., Any],
    *,
    devices: Sequence[str | torch.device] = ("cpu", "cuda"),
    backward: bool = True,
    sizes: Sequence[int] | None = None,
    size_name: str = "size",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
    rounds: int | None = None,
    iterations: int | None = None,
    warmup: int = 2,
    min_run_time: float = 0.2,
    seed: int = 0,
    replay: bool = True,
    name: str | None = None,
) -> DeviceBenchmark:
    """Time forward and forward+backward on each device, in rounds that replay the same work.

    The same inputs (``make_inputs()`` called once per size from RNG seed
    ``seed``, then copied to each device) and the same parameters
    (``copy.deepcopy(module).to(device)``; the caller's module is never moved)
    run on every device.

    Each phase is timed like pytest-benchmark does: one untimed call (lazy
    initialisation), calibration of the calls per round (``iterations``) so
    that a round lasts at least ``min_run_time / 20`` on the slowest device (the
    smallest count is used on all devices of a size, so that they replay the
    same work), ``warmup`` untimed rounds, then the timed rounds; each round is
    timed from a synchronised
    device to a synchronised device (``torch.cuda.synchronize()``), and each
    round's seconds per call is one sample of the median, IQR, mean, stddev,
    min and max in :class:`PhaseTiming`.

    With ``replay`` (the default) every round, calibration and warm-up rounds
    included, starts from the same state: the device's copy of the parameters,
    buffers and optimizer state as prepared, no gradients, and Python
    ``random``, NumPy and torch (CPU and CUDA) seeded with ``seed``. A step that
    draws random numbers (a random depth, dropout) then does the same work in
    every round, and an optimizer step does not drift (or diverge) from round
    to round, so the spread is the machine's, not the workload's; a second
    timer that replays the same way measures the same work. Without it the
    generators are seeded once per device and phase, and state carries over
    between rounds. The caller's RNG states are put back either way.

    Devices not present are reported as skipped.

    Args:
        fn_or_module: an ``nn.Module`` or a function of the inputs.
        make_inputs: ``make_inputs()`` (or ``make_inputs(size)`` with ``sizes``)
            returning a tensor or a tuple of tensors (the positional arguments).
        devices: the devices to compare; speedups are first over last.
        backward: also time forward+backward (``loss_fn(output).backward()``;
            the default loss sums the outputs). The forward phase runs with
            autograd on, as in a training step.
        sizes: a size sweep: each size gives one ``make_inputs(size)``.
        size_name: what a size is, for tables and the report (``"batch"``).
        loss_fn: reduces the output to the scalar that backward starts from.
        optimizer: ``optimizer(params) -> Optimizer``: also time a full training
            step (``zero_grad`` with ``set_to_none``, forward, backward, ``step``)
            as phase ``train_step``.
        rounds: timed rounds per phase; ``None``: as many as fill ``min_run_time``,
            at least 5.
        iterations: calls per round; ``None``: calibrated (see above). Under
            replay a round does the work of the first ``iterations`` draws from
            the seed: for a random workload, fix it (to enough calls to average
            the draws) to time the same work at every size.
        warmup: untimed rounds before the timed ones (caches, allocator, autotuning).
        min_run_time: seconds of timed rounds per phase (when ``rounds`` is ``None``);
            a calibrated round lasts at least a twentieth of it.
        seed: where every device's run (with ``replay``, every round) starts the
            random generators; the caller's RNG states are put back.
        replay: start every round from the same state and seed (see above).
        name: a label (default: the module's class or function's name).

    Returns:
        A :class:`DeviceBenchmark`, also published to the ``--gradcheck`` report.

    Raises:
        InvalidArgument: an unknown device, ``make_inputs`` not callable, sizes not ints, ...

    Examples:
        >>> import torch
        >>> bench = benchmark_devices(
        ...     torch.nn.Linear(8, 4), lambda batch: torch.randn(batch, 8),
        ...     sizes=[4, 16], size_name="batch", min_run_time=0.01, warmup=1)
        >>> [row.size for row in bench.timings if row.device == "cpu"]
        [4, 16]
    """
    check_callables(fn_or_module, make_inputs, loss_fn)
    devs = parse_devices(devices)
    if len(set(devs)) != len(devs):
        raise InvalidArgument(f"devices={tuple(devices)!r} names a device twice.")
    size_tuple = _check_sizes(sizes)
    check_round_options(rounds, iterations, warmup, min_run_time)
    check_int(seed, "seed", min_value=0)
    check_type(bool, replay, "replay")
    how = _Rounds(rounds, iterations, warmup, float(min_run_time))
    if optimizer is not None and not callable(optimizer):
        raise InvalidArgumentType(
            f"optimizer={optimizer!r} must be a callable params -> Optimizer."
        )
    phases: tuple[Phase, ...] = ("forward",)
    if backward:
        phases += ("forward_backward",)
    if optimizer is not None:
        phases += ("train_step",)
    reasons = {d: device_skip_reason(d) for d in devs}
    names = {d: _device_name(d) for d in devs if reasons[d] is None}

    start = time.perf_counter()
    rows: list[DeviceTiming] = []
    # timed calls run unwatched (a dispatch mode would slow them): writes the first
    # warm-up call makes are undone, and later calls write the same tensors
    with preserved(fn_or_module), undoing_writes(only_user_code=True):
        for size in size_tuple or (None,):
            with replaying_rng(seed):
                inputs = make_inputs(size) if size is not None else make_inputs()
                present = [d for d in devs if reasons[d] is None]
                preps = {d: prepare(fn_or_module, inputs, d, optimizer) for d in present}
                starts: dict[torch.device, Callable[[], None]] = {
                    d: _RoundStart(p, seed) if replay else _no_replay for d, p in preps.items()
                }
                timed: dict[torch.device, list[tuple[Phase, PhaseTiming]]] = {
                    d: [] for d in present
                }
                for phase in phases:
                    steps = {d: _make_step(p, phase, loss_fn) for d, p in preps.items()}
                    for d, timing in _time_phase(steps, starts, how, seed).items():
                        timed[d].append((phase, timing))
                del preps, starts, steps
            for dev in devs:
                reason = reasons[dev]
                if reason is not None:
                    rows.append(DeviceTiming(str(dev), size=size, skipped=reason))
                else:
                    rows.append(DeviceTiming(str(dev), names[dev], size, None, tuple(timed[dev])))
    result = DeviceBenchmark(
        name=name_of(fn_or_module, name),
        devices=tuple(str(d) for d in devs),
        timings=tuple(rows),
        phases=phases,
        backward=backward,
        sizes=size_tuple,
        size_name=size_name,
        duration_s=time.perf_counter() - start,
        seed=seed,
        replay=replay,
    )
    if size_tuple:
        speed_by_size = {s: result.speedup(s) for s in size_tuple}
        result = dataclasses.replace(
            result, crossover=_crossover(size_tuple, speed_by_size, result.main_phase)
        )
    recording.publish(result)
    return result


@one_at_a_time
def benchmark_callable(
    benchmark_fixture: Any,
    device: str | torch.device,
    fn_or_module: Callable[..., Any],
    make_inputs: Callable[[], Any],
    *,
    phase: Phase = "forward_backward",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
    group: str | None = None,
    seed: int = 0,
) -> Any:
    """Time one device's step with pytest-benchmark's ``benchmark`` fixture (passed in).

    Sets ``benchmark_fixture.group`` to ``group`` (default: the name of the
    callable and the phase) so that the cpu and cuda cases of a test
    parametrised over devices share one group in pytest-benchmark's table and
    ``--benchmark-json``; ``extra_info`` gets the device, its name and the phase.

    Args:
        benchmark_fixture: pytest-benchmark's ``benchmark`` fixture object.
        device: where to run; a copy of the module and of the inputs goes there.
        fn_or_module: as for :func:`benchmark_devices`.
        make_inputs: ``make_inputs()`` returning the inputs.
        phase: ``"forward"``, ``"forward_backward"`` or ``"train_step"`` (needs ``optimizer``).
        loss_fn: as for :func:`benchmark_devices`.
        optimizer: as for :func:`benchmark_devices`.
        seed: the inputs and the timed calls start the random generators from it,
            once (the rounds are pytest-benchmark's: not replayed); the caller's RNG
            states are put back.
        group: the pytest-benchmark group.

    Returns:
        What ``benchmark_fixture(step)`` returns.

    Raises:
        DeviceUnavailableError: the device is not present (a fixture turns it into a skip).
        InvalidArgument: bad arguments.

    Examples:
        >>> class FakeBenchmark:  # stands in for pytest-benchmark's fixture
        ...     group, extra_info = None, {}
        ...     def __call__(self, step):
        ...         step()
        >>> import torch
        >>> fake = FakeBenchmark()
        >>> benchmark_callable(fake, "cpu", torch.nn.Linear(3, 1), lambda: torch.randn(2, 3))
        >>> fake.group, fake.extra_info["device"]
        ('Linear forward_backward', 'cpu')
    """
    check_callables(fn_or_module, make_inputs, loss_fn)
    dev = parse_device(device, "device")
    if phase not in _PHASES:
        raise InvalidArgument(f"phase={phase!r} is not one of {', '.join(map(repr, _PHASES))}.")
    if phase == "train_step" and optimizer is None:
        raise InvalidArgument("phase='train_step' needs optimizer=lambda params: ...")
    reason = device_skip_reason(dev)
    if reason is not None:
        raise DeviceUnavailableError(reason)
    benchmark_fixture.group = group or f"{name_of(fn_or_module, None)} {phase}"
    benchmark_fixture.extra_info.update(
        {"device": str(dev), "device_name": _device_name(dev), "phase": phase}
    )
    with replaying_rng(seed):
        inputs = make_inputs()
        prep = prepare(fn_or_module, inputs, dev, optimizer)
    # pytest-benchmark reads its clock without synchronising: the step must
    step = _make_step(prep, phase, loss_fn, synchronize=True)
    # seeded once; the rounds are pytest-benchmark's, so they are not replayed
    with replaying_rng(seed):
        step()  # one untimed call: CUDA context, lazy initialisation
        start = time.perf_counter()
        returned = benchmark_fixture(step)
    timing = _benchmark_fixture_timing(benchmark_fixture)
    if timing is not None:
        recording.publish(
            DeviceBenchmark(
                name=benchmark_fixture.group,
                devices=(str(dev),),
                timings=(
                    DeviceTiming(str(dev), _device_name(dev), None, None, ((phase, timing),)),
                ),
                phases=(phase,),
                backward=phase != "forward",
                duration_s=time.perf_counter() - start,
                seed=seed,
                replay=False,
            )
        )
    return returned


def _benchmark_fixture_timing(benchmark_fixture: Any) -> PhaseTiming | None:
    """What pytest-benchmark measured (its ``stats``), or ``None`` when it timed nothing.

    Read by duck typing: pytest-benchmark keeps ``fixture.stats`` (rounds,
    ``iterations``) with the per-iteration times in ``fixture.stats.stats``; it is
    ``None`` under ``--benchmark-disable`` and absent on a stand-in.
    """
    metadata = getattr(benchmark_fixture, "stats", None)
    stats = getattr(metadata, "stats", None)
    try:
        rounds = int(stats.rounds)  # type: ignore[union-attr]
        if rounds < 1:
            return None
        return PhaseTiming(
            median_s=float(stats.median),  # type: ignore[union-attr]
            iqr_s=float(stats.iqr) if rounds > 1 else math.nan,  # type: ignore[union-attr]
            runs=rounds,
            iterations=int(getattr(metadata, "iterations", 1) or 1),
            min_s=float(stats.min),  # type: ignore[union-attr]
            mean_s=float(stats.mean),  # type: ignore[union-attr]
            stddev_s=float(stats.stddev) if rounds > 1 else None,  # type: ignore[union-attr]
        )
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None
