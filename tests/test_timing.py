"""Round-based timing (gradcheck_kit._src.timing): the loop's structure, on a fake clock.

No timing assertions: the step advances a fake ``perf_counter`` by a fixed amount
(a power of two, so that sums are exact), so calibration, round counts and
statistics are known in advance.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

import gradcheck_kit as gk
from gradcheck_kit._src import timing
from gradcheck_kit._src.timing import MIN_ROUNDS, RoundTimes, time_rounds

MS = 2.0**-10  # about a millisecond, exact in binary


class FakeClock:
    """``perf_counter`` that only moves when a step runs."""

    def __init__(self) -> None:
        self.now = 100.0
        self.log: list[str] = []

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float) -> Any:
        def run() -> None:
            self.log.append("step")
            self.now += seconds

        return run


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_stated_rounds_iterations_and_warmup_are_honoured(clock: FakeClock) -> None:
    begun: list[int] = []
    times = time_rounds(
        clock.step(MS),
        begin_round=lambda: begun.append(len(clock.log)),
        rounds=4,
        iterations=3,
        warmup=2,
    )
    assert (times.rounds, times.iterations, times.warmup_rounds) == (4, 3, 2)
    assert times.calibration_rounds == 0  # iterations given: nothing to calibrate
    assert len(clock.log) == (2 + 4) * 3
    assert begun == [0, 3, 6, 9, 12, 15]  # before every round, warm-up included
    assert times.seconds == (MS,) * 4


def test_calibration_grows_a_round_to_min_round_time(clock: FakeClock) -> None:
    times = time_rounds(clock.step(MS), rounds=3, warmup=0, min_round_time=10 * MS)
    # a round of 1 lasts 1 ms; scaled to the target: 10 iterations, which last long enough
    assert times.iterations == 10 and times.calibration_rounds == 2
    assert len(clock.log) == 1 + 10 + 3 * 10
    assert times.median == MS


def test_default_round_length_is_a_twentieth_of_min_run_time(clock: FakeClock) -> None:
    times = time_rounds(clock.step(MS), min_run_time=20 * 8 * MS, warmup=0)
    assert times.iterations == 8  # 8 ms = min_run_time / 20
    assert times.rounds == 20  # until min_run_time was timed


def test_without_rounds_it_runs_min_run_time_and_at_least_min_rounds(clock: FakeClock) -> None:
    slow = time_rounds(clock.step(64 * MS), min_run_time=16 * MS, warmup=0)
    assert slow.rounds == MIN_ROUNDS and slow.iterations == 1  # 5 x 64 ms > 16 ms
    fast = time_rounds(clock.step(MS), min_run_time=25 * 2 * MS, iterations=2, warmup=0)
    assert fast.rounds == 25  # 25 rounds x 2 ms reach min_run_time


def test_each_round_is_timed_between_two_synchronisations(clock: FakeClock) -> None:
    def sync() -> None:
        clock.log.append("sync")

    time_rounds(
        clock.step(MS),
        synchronize=sync,
        begin_round=lambda: clock.log.append("begin"),
        rounds=2,
        iterations=2,
        warmup=1,
    )
    one = ["begin", "sync", "step", "step", "sync"]
    assert clock.log == one * 3


def test_statistics_over_the_rounds() -> None:
    times = RoundTimes((0.5, 0.1, 0.3, 0.2, 0.4), iterations=7, warmup_rounds=2)
    assert times.median == 0.3 and times.min == 0.1 and times.max == 0.5
    assert times.quartiles == pytest.approx((0.2, 0.4)) and times.iqr == pytest.approx(0.2)
    assert times.mean == pytest.approx(0.3) and times.stddev == pytest.approx(0.158113883)
    one = RoundTimes((0.5,), iterations=1, warmup_rounds=0)
    assert math.isnan(one.iqr) and math.isnan(one.stddev) and one.median == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rounds": 0}, "rounds=0 must be >= 1"),
        ({"iterations": 0}, "iterations=0 must be >= 1"),
        ({"iterations": 10**7}, "must be <= 1000000"),
        ({"warmup": -1}, "warmup=-1 must be >= 0"),
        ({"min_run_time": 0.0}, "min_run_time=0.0 must be > 0"),
        ({"min_round_time": -1.0}, "min_round_time=-1.0 must be > 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    calls: list[int] = []
    with pytest.raises(gk.InvalidArgument, match=match):
        time_rounds(lambda: calls.append(1), **kwargs)
    assert calls == []  # checked before anything runs


def test_a_raising_step_propagates(clock: FakeClock) -> None:
    def broken() -> None:
        raise ZeroDivisionError("in the step")

    with pytest.raises(ZeroDivisionError, match="in the step"):
        time_rounds(broken, rounds=2, iterations=1)
