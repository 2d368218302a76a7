"""Time a no-argument step in rounds: calibrated iterations, warm-up rounds, round statistics.

The loop pytest-benchmark runs, for steps that may be asynchronous (CUDA) and random:

1. Calibration: rounds of 1, then more iterations until one round lasts at least
   ``min_round_time`` (so the clock's resolution and the synchronisations at both
   ends of a round are small beside it). These rounds are not counted.
2. ``warmup`` rounds of that many iterations, not counted either.
3. Timed rounds: exactly ``rounds``, or (``rounds=None``) until ``min_run_time``
   seconds were timed and at least :data:`MIN_ROUNDS` rounds were run.

Every round calls ``begin_round()`` first, outside the clock: the caller puts the
step's state back and seeds its random generators there, so that each round does
the same work. A round is timed from a synchronised device to a synchronised
device (``synchronize()`` before reading the clock at both ends), so it counts all
the device work its iterations queued, and the device may overlap iterations as
in a training loop. Each round's time divided by its iterations is one sample;
:class:`RoundTimes` gives their median, IQR, mean, stddev, min and max.

Why not ``torch.utils.benchmark.Timer``: its public API cannot run a stated number
of rounds of a stated number of iterations (``timeit(number)`` adds a warm-up of
``number // 100`` calls, ``blocked_autorange`` chooses both counts itself), and it
synchronises only the current accelerator. Its other service, setting the thread
count, is a no-op when the count is the caller's own.

This module imports no torch: the caller hands in ``synchronize``.

Examples:
    >>> draws = []
    >>> times = time_rounds(lambda: draws.append(1), rounds=4, iterations=3, warmup=1)
    >>> times.rounds, times.iterations, len(draws)  # calibration skipped: iterations given
    (4, 3, 15)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .errors import InvalidArgument
from .validation import check_int, check_positive

__all__ = [
    "MIN_ROUNDS",
    "ROUNDS_PER_RUN",
    "RoundTimes",
    "calibrate",
    "check_round_options",
    "time_rounds",
]

# pytest-benchmark's default min_rounds: fewer rounds make a poor median and no IQR.
MIN_ROUNDS: Final = 5
# A calibrated round lasts at least min_run_time / ROUNDS_PER_RUN: about this many rounds fit.
ROUNDS_PER_RUN: Final = 20
# Calibration stops growing a round here, whatever the step's time.
_MAX_ITERATIONS: Final = 1_000_000
# Calibration tries at most this many round lengths (each longer than the last).
_MAX_CALIBRATION_ROUNDS: Final = 12
# A measured round shorter than this is taken as this long when scaling up
# (perf_counter's resolution is well below; a 0 would divide by zero).
_CLOCK_FLOOR_S: Final = 1e-7


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class RoundTimes:
    """What :func:`time_rounds` measured: seconds per iteration, one value per timed round.

    Examples:
        >>> t = RoundTimes((0.004, 0.001, 0.002, 0.003), iterations=10, warmup_rounds=1)
        >>> t.rounds, t.median, t.min, t.max
        (4, 0.0025, 0.001, 0.004)
        >>> round(t.iqr, 6), round(t.mean, 6)
        (0.0015, 0.0025)
    """

    seconds: tuple[float, ...]
    iterations: int
    warmup_rounds: int
    calibration_rounds: int = 0

    @property
    def rounds(self) -> int:
        """How many rounds were timed."""
        return len(self.seconds)

    @property
    def median(self) -> float:
        """The median seconds per iteration over the rounds."""
        return float(statistics.median(self.seconds))

    @property
    def quartiles(self) -> tuple[float, float]:
        """The first and third quartiles (interpolated as NumPy's default); NaN with one round."""
        if len(self.seconds) < 2:
            return math.nan, math.nan
        q1, _, q3 = statistics.quantiles(self.seconds, n=4, method="inclusive")
        return float(q1), float(q3)

    @property
    def iqr(self) -> float:
        """Third quartile minus first (NaN with one round)."""
        q1, q3 = self.quartiles
        return q3 - q1

    @property
    def mean(self) -> float:
        """The mean seconds per iteration over the rounds."""
        return float(statistics.fmean(self.seconds))

    @property
    def stddev(self) -> float:
        """The sample standard deviation over the rounds (NaN with one round)."""
        return float(statistics.stdev(self.seconds)) if len(self.seconds) > 1 else math.nan

    @property
    def min(self) -> float:
        """The fastest round's seconds per iteration."""
        return min(self.seconds)

    @property
    def max(self) -> float:
        """The slowest round's seconds per iteration."""
        return max(self.seconds)


def check_round_options(
    rounds: int | None, iterations: int | None, warmup: int, min_run_time: float
) -> None:
    """Raise :class:`InvalidArgument` naming the first bad count or time of :func:`time_rounds`.

    Examples:
        >>> check_round_options(None, 4, 2, 0.2)
        >>> check_round_options(0, None, 2, 0.2)
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: rounds=0 must be >= 1.
    """
    if rounds is not None:
        check_int(rounds, "rounds", min_value=1)
    if iterations is not None:
        check_int(iterations, "iterations", min_value=1)
        if iterations > _MAX_ITERATIONS:
            raise InvalidArgument(f"iterations={iterations} must be <= {_MAX_ITERATIONS}.")
    check_int(warmup, "warmup", min_value=0)
    check_positive(min_run_time, "min_run_time", allow_none=False)


def _run_round(
    step: Callable[[], object],
    n: int,
    synchronize: Callable[[], object],
    begin_round: Callable[[], object],
) -> float:
    """Seconds of ``n`` calls, from a synchronised device to a synchronised device."""
    begin_round()
    synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step()
    synchronize()
    return time.perf_counter() - start


def calibrate(
    step: Callable[[], object],
    *,
    min_round_time: float,
    synchronize: Callable[[], object] = _nothing,
    begin_round: Callable[[], object] = _nothing,
) -> tuple[int, int]:
    """The calls per round that make a round last ``min_round_time``, and the rounds it took.

    Rounds of 1 call, then of as many as the last round's time says are needed
    (at least one more each time), until a round lasts long enough.

    Examples:
        >>> iterations, tries = calibrate(lambda: sum(range(1000)), min_round_time=0.001)
        >>> iterations >= 1 and tries >= 1
        True
    """
    check_positive(min_round_time, "min_round_time", allow_none=False)
    iterations, tries = 1, 0
    while tries < _MAX_CALIBRATION_ROUNDS:
        elapsed = _run_round(step, iterations, synchronize, begin_round)
        tries += 1
        if elapsed >= min_round_time or iterations >= _MAX_ITERATIONS:
            break
        grown = math.ceil(iterations * min_round_time / max(elapsed, _CLOCK_FLOOR_S))
        iterations = min(_MAX_ITERATIONS, max(iterations + 1, grown))
    return iterations, tries


def time_rounds(
    step: Callable[[], object],
    *,
    synchronize: Callable[[], object] = _nothing,
    begin_round: Callable[[], object] = _nothing,
    rounds: int | None = None,
    iterations: int | None = None,
    warmup: int = 1,
    min_run_time: float = 0.2,
    min_round_time: float | None = None,
) -> RoundTimes:
    """Time ``step()`` in rounds of calibrated length; see the module docstring.

    Args:
        step: the work of one iteration.
        synchronize: waits for the device (``torch.cuda.synchronize``); called
            before the clock is read at the start and at the end of each round.
        begin_round: run before every round, untimed (calibration and warm-up too):
            restore the step's state, seed its random generators.
        rounds: timed rounds; ``None``: until ``min_run_time`` seconds were timed,
            and at least :data:`MIN_ROUNDS`.
        iterations: calls of ``step`` per round; ``None``: calibrated.
        warmup: untimed rounds after calibration.
        min_run_time: seconds of timed rounds to reach when ``rounds`` is ``None``.
        min_round_time: how long a calibrated round lasts at least; default
            ``min_run_time / ROUNDS_PER_RUN``, so that about 20 rounds fit.

    Returns:
        A :class:`RoundTimes`.

    Raises:
        InvalidArgument: a count that is not a positive int, a time that is not > 0.

    Examples:
        >>> t = time_rounds(lambda: sum(range(100)), min_run_time=0.01)
        >>> t.rounds >= MIN_ROUNDS and t.iterations >= 1 and t.median > 0
        True
    """
    check_round_options(rounds, iterations, warmup, min_run_time)
    check_positive(min_round_time, "min_round_time")
    target = min_run_time / ROUNDS_PER_RUN if min_round_time is None else min_round_time

    def run_round(n: int) -> float:
        return _run_round(step, n, synchronize, begin_round)

    calibration = 0
    if iterations is None:
        iterations, calibration = calibrate(
            step, min_round_time=target, synchronize=synchronize, begin_round=begin_round
        )
    for _ in range(warmup):
        run_round(iterations)
    samples: list[float] = []
    timed = 0.0
    while True:
        if rounds is not None:
            if len(samples) >= rounds:
                break
        elif len(samples) >= MIN_ROUNDS and timed >= min_run_time:
            break
        elapsed = run_round(iterations)
        timed += elapsed
        samples.append(elapsed / iterations)
    return RoundTimes(tuple(samples), iterations, warmup, calibration)
