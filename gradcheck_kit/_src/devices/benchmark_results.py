"""What a device benchmark measured: seconds per phase, per device and size, and speedups.

:class:`PhaseTiming` (one phase on one device), :class:`DeviceTiming` (one device
at one size, or why it was skipped) and :class:`DeviceBenchmark` (all of them, the
speedups and the crossover) are records: :mod:`.benchmark` fills them, the
``--gradcheck`` report reads their ``to_dict()``. They hold no timing code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import recording
from ..timing import RoundTimes

__all__ = ["DeviceBenchmark", "DeviceTiming", "Phase", "PhaseTiming"]

# A phase's name: "forward", "forward_backward" or "train_step".
Phase = str


@dataclass(frozen=True)
class PhaseTiming:
    """Seconds per call of one phase on one device: median and IQR over timed rounds, and more.

    ``runs`` is the number of timed rounds, each of ``iterations`` calls, after
    ``warmup_rounds`` untimed ones; ``min_s``, ``mean_s``, ``stddev_s`` and
    ``max_s`` are over the rounds' seconds per call. :func:`benchmark_devices`
    fills every field; a record written by older versions, or by
    pytest-benchmark through the ``device_benchmark`` fixture, may lack some.

    Examples:
        >>> PhaseTiming(median_s=0.002, iqr_s=0.0001, runs=20).to_dict()["median_s"]
        0.002
        >>> PhaseTiming(0.002, 0.0001, 17, iterations=4, min_s=0.0019).to_dict()["iterations"]
        4
        >>> PhaseTiming(0.002, 0.0001, 17, iterations=4).rounds
        17
    """

    median_s: float
    iqr_s: float
    runs: int
    iterations: int | None = None
    min_s: float | None = None
    mean_s: float | None = None
    stddev_s: float | None = None
    max_s: float | None = None
    warmup_rounds: int | None = None

    @property
    def rounds(self) -> int:
        """The timed rounds (``runs``, by its older name)."""
        return self.runs

    @classmethod
    def from_rounds(cls, times: RoundTimes) -> PhaseTiming:
        """The statistics of :func:`..timing.time_rounds`' rounds.

        Examples:
            >>> from gradcheck_kit._src.timing import RoundTimes
            >>> t = PhaseTiming.from_rounds(RoundTimes((2.0, 1.0, 3.0), 5, warmup_rounds=2))
            >>> t.median_s, t.runs, t.iterations, t.warmup_rounds, t.max_s
            (2.0, 3, 5, 2, 3.0)
        """
        stddev = times.stddev
        return cls(
            median_s=times.median,
            iqr_s=times.iqr,
            runs=times.rounds,
            iterations=times.iterations,
            min_s=times.min,
            mean_s=times.mean,
            stddev_s=stddev if math.isfinite(stddev) else None,
            max_s=times.max,
            warmup_rounds=times.warmup_rounds,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"median_s", "iqr_s", "runs"}``, and the rest where known.

        A NaN IQR becomes null; ``iterations``, ``min_s``, ``mean_s``, ``stddev_s``,
        ``max_s`` and ``warmup_rounds`` are left out when unknown.
        """
        iqr = self.iqr_s if math.isfinite(self.iqr_s) else None
        out: dict[str, Any] = {"median_s": self.median_s, "iqr_s": iqr, "runs": self.runs}
        for key in ("iterations", "min_s", "mean_s", "stddev_s", "max_s", "warmup_rounds"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, float) or math.isfinite(value)):
                out[key] = value
        return out


@dataclass(frozen=True)
class DeviceTiming:
    """One device at one size: its timings per phase, or why it was skipped.

    Examples:
        >>> row = DeviceTiming(device="cuda", skipped="CUDA device not available")
        >>> row.to_dict()
        {'device': 'cuda', 'skipped': 'CUDA device not available'}
    """

    device: str
    name: str | None = None
    size: int | None = None
    skipped: str | None = None
    phases: tuple[tuple[Phase, PhaseTiming], ...] = ()

    def timing(self, phase: Phase) -> PhaseTiming | None:
        """The timing of ``phase`` (``None`` when skipped or not timed).

        Examples:
            >>> DeviceTiming("cpu", phases=(("forward", PhaseTiming(1.0, 0.0, 3)),)).timing(
            ...     "forward").median_s
            1.0
        """
        return dict(self.phases).get(phase)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the report's ``device_timings`` shape."""
        out: dict[str, Any] = {"device": self.device}
        if self.name is not None:
            out["name"] = self.name
        if self.skipped is not None:
            out["skipped"] = self.skipped
        for phase, timing in self.phases:
            out[phase] = timing.to_dict()
        return out


def _speedups(rows: Sequence[DeviceTiming]) -> dict[Phase, float]:
    """How many times faster the last timed device is than the first, per phase."""
    timed = [r for r in rows if r.skipped is None]
    if len(timed) < 2:
        return {}
    first, last = timed[0], timed[-1]
    out: dict[Phase, float] = {}
    for phase, timing in first.phases:
        other = last.timing(phase)
        if other is not None and other.median_s > 0:
            out[phase] = timing.median_s / other.median_s
    return out


@dataclass(frozen=True)
class DeviceBenchmark(recording.Observable):
    """What :func:`benchmark_devices` measured: per device (and size) timings, speedups, crossover.

    ``timings`` holds one :class:`DeviceTiming` per device and size (``size`` is
    ``None`` without a sweep). ``speedup`` compares the last timed device with
    the first (``> 1``: the last device is faster). ``crossover`` is the first
    size from which the last device stays faster on the main phase
    (``None``: it never does, or there is no sweep). ``seed`` is where every
    device's run (with ``replay``: every round) started its random generators.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> bench = gk.benchmark_devices(torch.nn.Linear(4, 2), lambda: torch.randn(8, 4),
        ...                              min_run_time=0.01, warmup=1)
        >>> bench.timing("cpu").timing("forward").median_s > 0
        True
        >>> bench.skipped.get("cuda") is None or "CUDA" in bench.skipped["cuda"]
        True
    """

    name: str
    devices: tuple[str, ...]
    timings: tuple[DeviceTiming, ...]
    phases: tuple[Phase, ...]
    backward: bool
    sizes: tuple[int, ...] | None = None
    size_name: str = "size"
    crossover: int | None = None
    duration_s: float = 0.0
    test_id: str | None = None
    kind: str = "device_benchmark"
    seed: int | None = None
    replay: bool | None = None

    @property
    def main_phase(self) -> Phase:
        """The phase speedups and the crossover are judged on (the last one timed)."""
        return self.phases[-1]

    @property
    def skipped(self) -> dict[str, str]:
        """Device -> reason, for the devices that could not be timed."""
        return {r.device: r.skipped for r in self.timings if r.skipped is not None}

    def timing(self, device: str, size: int | None = None) -> DeviceTiming:
        """The row of ``device`` at ``size`` (the first size of a sweep when ``None``).

        Raises:
            KeyError: no such device or size.
        """
        if size is None and self.sizes:
            size = self.sizes[0]
        for row in self.timings:
            if row.device == device and row.size == size:
                return row
        raise KeyError(f"no timing for device {device!r} at size {size!r}")

    def rows_at(self, size: int | None) -> tuple[DeviceTiming, ...]:
        """The rows of every device at ``size``, in device order."""
        return tuple(r for r in self.timings if r.size == size)

    def speedup(self, size: int | None = None) -> dict[Phase, float]:
        """Per phase, the last device's speed over the first's at ``size`` (empty if skipped)."""
        if size is None and self.sizes:
            size = self.sizes[0]
        return _speedups(self.rows_at(size))

    def __bool__(self) -> bool:
        return True

    def with_test_id(self, test_id: str | None) -> DeviceBenchmark:
        """A copy labelled with the test that made it (used by the pytest plugin)."""
        return dataclasses.replace(self, test_id=test_id)

    def summary(self) -> str:
        """A table: one line per size and device with the median (IQR) per phase and the speedup.

        Examples:
            >>> import torch, gradcheck_kit as gk
            >>> bench = gk.benchmark_devices(torch.nn.Linear(4, 2), lambda: torch.randn(8, 4),
            ...                              min_run_time=0.01, warmup=1)
            >>> bench.summary().splitlines()[0].startswith("Device benchmark")
            True
        """
        head = f"Device benchmark: {self.name} ({', '.join(self.devices)})"
        columns = [self.size_name] if self.sizes else []
        columns += ["device", *(f"{p} median (IQR)" for p in self.phases), "speedup"]
        lines: list[list[str]] = []
        for size in self.sizes or (None,):
            rows = self.rows_at(size)
            speed = _speedups(rows).get(self.main_phase)
            for i, row in enumerate(rows):
                cells = [str(size)] if self.sizes else []
                cells.append(row.device)
                if row.skipped is not None:
                    cells += [f"skipped: {row.skipped}"] + [""] * len(self.phases)
                else:
                    for phase in self.phases:
                        t = row.timing(phase)
                        cells.append(
                            "" if t is None else f"{_fmt_s(t.median_s)} ({_fmt_s(t.iqr_s)})"
                        )
                    cells.append(f"{speed:.2f}x" if speed is not None and i > 0 else "")
                lines.append(cells)
        widths = [
            max([len(c)] + [len(r[i]) for r in lines if not _skipped_row(r)])
            for i, c in enumerate(columns)
        ]
        text = [
            head,
            "",
            "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        ]
        for cells in lines:
            if _skipped_row(cells):
                fixed = len(columns) - len(self.phases) - 1
                text.append(
                    "  ".join(c.ljust(w) for c, w in zip(cells[:fixed], widths, strict=False))
                    + "  "
                    + cells[fixed]
                )
            else:
                text.append(
                    "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()
                )
        if self.sizes and len(self.devices) > 1 and not self.skipped:
            where = (
                f"from {self.size_name} {self.crossover}"
                if self.crossover is not None
                else "at none of the sizes measured"
            )
            text += ["", f"Crossover ({self.main_phase}): {self.devices[-1]} is faster {where}."]
        return "\n".join(text)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in the report's ``device_benchmark`` shape (``kind="device_benchmark"``).

        Examples:
            >>> import json, torch, gradcheck_kit as gk
            >>> bench = gk.benchmark_devices(torch.nn.Linear(4, 2), lambda: torch.randn(8, 4),
            ...                              min_run_time=0.01, warmup=1)
            >>> json.loads(json.dumps(bench.to_dict(), allow_nan=False))["kind"]
            'device_benchmark'
        """
        first = self.sizes[0] if self.sizes else None
        speed = self.speedup(first)
        out: dict[str, Any] = {
            "kind": self.kind,
            "schema_version": 1,
            "name": self.name,
            "test_id": self.test_id,
            "passed": True,
            "backward": self.backward,
            "size_name": self.size_name,
            "devices": [r.to_dict() for r in self.rows_at(first)],
            "speedup": speed or None,
            "duration_s": self.duration_s,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        if self.replay is not None:
            out["replay"] = self.replay
        if self.sizes:
            sweep = []
            for size in self.sizes:
                point: dict[str, Any] = {
                    "size": size,
                    "devices": [r.to_dict() for r in self.rows_at(size)],
                }
                if s := self.speedup(size):
                    point["speedup"] = s
                sweep.append(point)
            out["sweep"] = sweep
            out["crossover"] = self.crossover
        return out


def _skipped_row(cells: list[str]) -> bool:
    return any(c.startswith("skipped: ") for c in cells)


def _fmt_s(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"
