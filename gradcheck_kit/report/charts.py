"""The geometry of the device-benchmark charts: median-time bars and speedup against size.

Pure numbers and labels, no markup (the template draws them as inline SVG).
:func:`read_benchmark` reads a ``device_benchmark`` record leniently (the shape
is described in ``document_schema.json``; a record it cannot read is shown as a
table instead), :func:`bar_chart` lays out one bar per device and phase with its
IQR, :func:`speedup_chart` the speedup of each phase over the sizes of a sweep,
with the crossover where the faster device changes.

Examples:
    >>> record = {"kind": "device_benchmark", "devices": [
    ...     {"device": "cpu", "forward_backward": {"median_s": 0.034, "iqr_s": 0.001}},
    ...     {"device": "cuda", "forward_backward": {"median_s": 0.00134, "iqr_s": 0.0001}}]}
    >>> bench = read_benchmark(record)
    >>> round(bench.speedups["forward_backward"], 1)
    25.4
    >>> [bar.value_label for bar in bar_chart(bench).bars]
    ['34 ms', '1.34 ms']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Timing",
    "Benchmark",
    "Bar",
    "BarChart",
    "Series",
    "LineChart",
    "read_benchmark",
    "bar_chart",
    "speedup_chart",
    "format_seconds",
]

PHASE_LABELS = {
    "forward": "forward",
    "backward": "backward",
    "forward_backward": "forward + backward",
}
_COLOURS = ("#4a76aa", "#e4533a", "#3b9a5b", "#8a5fb5", "#c98a1b", "#555555")


@dataclass(frozen=True)
class Timing:
    """One device's timing of one phase: median and interquartile range, in seconds.

    ``runs`` counts the timed rounds; newer records (``benchmark_devices``, and
    pytest-benchmark's through the fixture) also give the ``iterations`` per round
    and the rounds' ``min_s``, ``mean_s``, ``stddev_s``.
    """

    device: str
    phase: str
    median_s: float
    iqr_s: float | None
    runs: int | None
    iterations: int | None = None
    min_s: float | None = None
    mean_s: float | None = None
    stddev_s: float | None = None


@dataclass(frozen=True)
class Benchmark:
    """A device benchmark as the charts need it.

    ``speedups`` maps a phase to how many times faster the last measured device
    is than the first (the baseline, usually the CPU); ``sweep`` holds
    ``(size, {phase: speedup})`` in order of size.
    """

    devices: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    phases: tuple[str, ...]
    timings: tuple[Timing, ...]
    speedups: dict[str, float]
    sweep: tuple[tuple[float, dict[str, float]], ...]
    crossover: float | None
    size_name: str


@dataclass(frozen=True)
class Bar:
    """One horizontal bar (pixels) with its labels and IQR whisker."""

    x: float
    y: float
    width: float
    height: float
    fill: str
    label: str
    value_label: str
    whisker: tuple[float, float] | None


@dataclass(frozen=True)
class BarChart:
    """Bars grouped by phase; ``groups`` holds ``(y, heading)`` of each group."""

    width: int
    height: int
    bars: tuple[Bar, ...]
    groups: tuple[tuple[float, str], ...]
    axis_x: float


@dataclass(frozen=True)
class Series:
    """One line of the speedup chart: ``points`` in pixels, ``path`` through them."""

    label: str
    colour: str
    path: str
    points: tuple[tuple[float, float, str], ...]


@dataclass(frozen=True)
class LineChart:
    """Speedup against size: axes, ticks, the 1x line and the crossover."""

    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    series: tuple[Series, ...]
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    parity_y: float | None
    crossover_x: float | None
    crossover_label: str
    x_label: str


def format_seconds(seconds: float) -> str:
    """A duration with a unit people read at a glance.

    Examples:
        >>> format_seconds(0.00092), format_seconds(34.2e-6), format_seconds(2.5)
        ('0.92 ms', '34.2 µs', '2.5 s')
    """
    if not math.isfinite(seconds):
        return str(seconds)
    # From a tenth of the unit on: 0.92 ms reads better next to 1.34 ms than 920 µs does.
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale / 10:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _timing(device: str, phase: str, data: Mapping[str, Any]) -> Timing | None:
    median = _number(data.get("median_s", data.get("median")))
    if median is None or median <= 0:
        return None
    iqr = _number(data.get("iqr_s", data.get("iqr")))
    runs = data.get("runs", data.get("repeats"))
    iterations = data.get("iterations")
    return Timing(
        device,
        phase,
        median,
        iqr,
        runs if isinstance(runs, int) else None,
        iterations if isinstance(iterations, int) and not isinstance(iterations, bool) else None,
        _number(data.get("min_s")),
        _number(data.get("mean_s")),
        _number(data.get("stddev_s")),
    )


def _device_entries(devices: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """``[{"device": "cpu", ...}]`` or ``{"cpu": {...}}``, as (device, entry) pairs."""
    if isinstance(devices, Mapping):
        return [(str(k), v) for k, v in devices.items() if isinstance(v, Mapping)]
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return [
            (str(e.get("device", f"device {i}")), e)
            for i, e in enumerate(devices)
            if isinstance(e, Mapping)
        ]
    return []


def _timings(devices: Any) -> tuple[list[Timing], list[tuple[str, str]], list[str]]:
    timings: list[Timing] = []
    skipped: list[tuple[str, str]] = []
    order: list[str] = []
    for device, entry in _device_entries(devices):
        reason = entry.get("skipped") or entry.get("skip_reason")
        if reason:
            skipped.append((device, str(reason)))
            continue
        found = False
        for phase, data in entry.items():
            if isinstance(data, Mapping):
                timing = _timing(device, str(phase), data)
                if timing is not None:
                    timings.append(timing)
                    found = True
        if found:
            order.append(device)
    return timings, skipped, order


def _speedups(timings: Sequence[Timing], order: Sequence[str]) -> dict[str, float]:
    """How many times faster the last device is than the first, per phase."""
    if len(order) < 2:
        return {}
    base, other = order[0], order[-1]
    by_key = {(t.device, t.phase): t.median_s for t in timings}
    return {
        phase: by_key[(base, phase)] / by_key[(other, phase)]
        for (device, phase) in by_key
        if device == base and (other, phase) in by_key
    }


def _given_speedups(value: Any) -> dict[str, float]:
    if isinstance(value, Mapping):
        found = {str(k): _number(v) for k, v in value.items()}
        return {k: v for k, v in found.items() if v is not None and v > 0}
    number = _number(value)
    return {"forward_backward": number} if number is not None and number > 0 else {}


def read_benchmark(record: Mapping[str, Any]) -> Benchmark | None:
    """Read the timings of a ``device_benchmark`` record, or ``None`` if it has none.

    Reads ``devices`` (a list of ``{"device", <phase>: {"median_s", "iqr_s",
    "runs"}}`` or a mapping from device to the same), ``speedup`` (a number or
    ``{phase: number}``; computed from the medians when missing), ``sweep``
    (a list of ``{"size", "speedup" | "devices"}``), ``crossover`` and
    ``size_name``.

    Args:
        record: One ``device_benchmark`` record.

    Returns:
        A :class:`Benchmark`, or ``None`` when no timing can be read.

    Examples:
        >>> read_benchmark({"kind": "device_benchmark", "devices": []}) is None
        True
    """
    timings, skipped, order = _timings(record.get("devices"))
    sweep: list[tuple[float, dict[str, float]]] = []
    raw_sweep = record.get("sweep", record.get("sizes"))
    if isinstance(raw_sweep, Sequence) and not isinstance(raw_sweep, str):
        for point in raw_sweep:
            if not isinstance(point, Mapping):
                continue
            size = _number(point.get("size"))
            if size is None:
                continue
            speedups = _given_speedups(point.get("speedup"))
            if not speedups:
                point_timings, _, point_order = _timings(point.get("devices"))
                speedups = _speedups(point_timings, point_order)
            if speedups:
                sweep.append((size, speedups))
    if not timings and not sweep:
        return None
    phases = list(dict.fromkeys(t.phase for t in timings))
    phases.sort(key=lambda p: list(PHASE_LABELS).index(p) if p in PHASE_LABELS else 99)
    speedups = _given_speedups(record.get("speedup")) or _speedups(timings, order)
    size_name = record.get("size_name")
    return Benchmark(
        devices=tuple(order),
        skipped=tuple(skipped),
        phases=tuple(phases),
        timings=tuple(timings),
        speedups=speedups,
        sweep=tuple(sorted(sweep, key=lambda p: p[0])),
        crossover=_number(record.get("crossover")),
        size_name=size_name if isinstance(size_name, str) and size_name else "size",
    )


def phase_label(phase: str) -> str:
    """How a phase key reads in a chart.

    Examples:
        >>> phase_label("forward_backward"), phase_label("step")
        ('forward + backward', 'step')
    """
    return PHASE_LABELS.get(phase, phase.replace("_", " "))


def speedup_text(benchmark: Benchmark, phase: str) -> str:
    """``"cuda 25.4× faster than cpu"`` (or slower) for one phase; ``""`` without a ratio.

    Examples:
        >>> b = Benchmark(("cpu", "cuda"), (), ("forward",), (), {"forward": 0.5}, (), None, "size")
        >>> speedup_text(b, "forward")
        'cuda 2× slower than cpu'
    """
    ratio = benchmark.speedups.get(phase)
    if ratio is None or len(benchmark.devices) < 2:
        return ""
    base, other = benchmark.devices[0], benchmark.devices[-1]
    if ratio >= 1:
        return f"{other} {ratio:.3g}× faster than {base}"
    return f"{other} {1 / ratio:.3g}× slower than {base}"


_BAR_LEFT, _BAR_PLOT, _BAR_RIGHT = 150, 330, 90
_BAR_HEIGHT, _BAR_GAP, _GROUP_HEAD = 16, 6, 22


def bar_chart(benchmark: Benchmark) -> BarChart:
    """One bar per (phase, device): the median time, with a whisker of the IQR around it.

    All bars share one linear scale, so a phase's bars compare at a glance.

    Args:
        benchmark: From :func:`read_benchmark`.

    Returns:
        The layout in pixels.

    Examples:
        >>> t = (Timing("cpu", "forward", 2.0, None, None), Timing("cuda", "forward", 1.0, 0.2, 9))
        >>> b = Benchmark(("cpu", "cuda"), (), ("forward",), t, {"forward": 2.0}, (), None, "size")
        >>> [(bar.width, bar.whisker) for bar in bar_chart(b).bars]
        [(330.0, None), (165.0, (298.5, 331.5))]
    """
    top_value = max((t.median_s + (t.iqr_s or 0.0) / 2 for t in benchmark.timings), default=1.0)
    scale = _BAR_PLOT / top_value if top_value > 0 else 0.0
    colour = {d: _COLOURS[i % len(_COLOURS)] for i, d in enumerate(benchmark.devices)}
    bars: list[Bar] = []
    groups: list[tuple[float, str]] = []
    y = 0.0
    for phase in benchmark.phases:
        heading = phase_label(phase)
        ratio = speedup_text(benchmark, phase)
        groups.append((y + 15, f"{heading}: {ratio}" if ratio else heading))
        y += _GROUP_HEAD
        for timing in (t for t in benchmark.timings if t.phase == phase):
            whisker = None
            if timing.iqr_s:
                half = timing.iqr_s / 2
                whisker = (
                    round(_BAR_LEFT + max(0.0, timing.median_s - half) * scale, 1),
                    round(_BAR_LEFT + (timing.median_s + half) * scale, 1),
                )
            bars.append(
                Bar(
                    x=_BAR_LEFT,
                    y=y,
                    width=round(max(1.0, timing.median_s * scale), 1),
                    height=_BAR_HEIGHT,
                    fill=colour.get(timing.device, _COLOURS[-1]),
                    label=timing.device,
                    value_label=format_seconds(timing.median_s),
                    whisker=whisker,
                )
            )
            y += _BAR_HEIGHT + _BAR_GAP
    return BarChart(
        width=_BAR_LEFT + _BAR_PLOT + _BAR_RIGHT,
        height=int(y) + 4,
        bars=tuple(bars),
        groups=tuple(groups),
        axis_x=_BAR_LEFT,
    )


def _ticks_log(lo: float, hi: float) -> list[float]:
    ticks = []
    for exponent in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0**exponent
            if lo <= value <= hi:
                ticks.append(value)
    return ticks


def _fmt_number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.2g}"


def speedup_chart(benchmark: Benchmark) -> LineChart | None:
    """Speedup of the last device over the first against size, log-log; ``None`` without a sweep.

    Args:
        benchmark: From :func:`read_benchmark`.

    Returns:
        The layout in pixels, with the 1× line and the crossover marked.

    Examples:
        >>> b = Benchmark(("cpu", "cuda"), (), (), (), {},
        ...               ((64, {"forward_backward": 0.66}), (4096, {"forward_backward": 25.0})),
        ...               1024, "batch")
        >>> chart = speedup_chart(b)
        >>> chart.crossover_label, [s.label for s in chart.series]
        ('crossover at batch 1024', ['forward + backward'])
    """
    if len(benchmark.sweep) < 2:
        return None
    sizes = [size for size, _ in benchmark.sweep]
    values = [v for _, by_phase in benchmark.sweep for v in by_phase.values()]
    width, height = 570, 240
    left, top, right, bottom = 56.0, 14.0, width - 16.0, height - 40.0
    log_x = min(sizes) > 0 and max(sizes) / min(sizes) >= 8
    x_lo, x_hi = min(sizes), max(sizes)
    y_lo, y_hi = min([*values, 1.0]) / 1.25, max([*values, 1.0]) * 1.25

    def fx(size: float) -> float:
        if x_hi == x_lo:
            return (left + right) / 2
        if log_x:
            position = math.log(size / x_lo) / math.log(x_hi / x_lo)
        else:
            position = (size - x_lo) / (x_hi - x_lo)
        return round(left + position * (right - left), 1)

    def fy(value: float) -> float:
        position = math.log(value / y_lo) / math.log(y_hi / y_lo)
        return round(bottom - position * (bottom - top), 1)

    phases = list(dict.fromkeys(p for _, by_phase in benchmark.sweep for p in by_phase))
    series = []
    for i, phase in enumerate(phases):
        points = tuple(
            (fx(size), fy(by_phase[phase]), f"{_fmt_number(size)}: {by_phase[phase]:.3g}×")
            for size, by_phase in benchmark.sweep
            if phase in by_phase
        )
        path = "M" + "L".join(f"{x} {y}" for x, y, _ in points)
        series.append(Series(phase_label(phase), _COLOURS[i % len(_COLOURS)], path, points))
    y_ticks = tuple((fy(v), f"{v:g}×") for v in _ticks_log(y_lo, y_hi))
    x_ticks = tuple((fx(s), _fmt_number(s)) for s in sizes[:: max(1, len(sizes) // 8)])
    crossover = benchmark.crossover
    inside = crossover is not None and x_lo <= crossover <= x_hi
    # the frame by position: the locals above carry the fields' names, in their order
    return LineChart(
        width,
        height,
        left,
        top,
        right,
        bottom,
        series=tuple(series),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        parity_y=fy(1.0),
        crossover_x=fx(crossover) if inside and crossover is not None else None,
        crossover_label=(
            f"crossover at {benchmark.size_name} {_fmt_number(crossover)}"
            if crossover is not None
            else "no crossover in this range"
        ),
        x_label=benchmark.size_name + (" (log scale)" if log_x else ""),
    )
