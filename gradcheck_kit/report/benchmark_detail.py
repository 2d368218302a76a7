"""A device benchmark's detail: median-time bars, the speedup against size, a timing table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradcheck_kit.report import charts
from gradcheck_kit.report.values import Table, format_value

__all__ = ["BENCHMARK_KEYS", "BenchmarkDetail", "benchmark_detail"]

# The keys a benchmark detail shows; the rest go to the row's fields.
BENCHMARK_KEYS = frozenset(
    {"devices", "speedup", "sweep", "sizes", "crossover", "size_name", "backward"}
)


@dataclass(frozen=True)
class BenchmarkDetail:
    """A device benchmark: bars, speedup sweep, skipped devices, timing table."""

    bars: charts.BarChart | None
    sweep: charts.LineChart | None
    skipped: tuple[tuple[str, str], ...]
    timings: Table | None
    template: str = "device_benchmark"


def benchmark_detail(record: Mapping[str, Any]) -> BenchmarkDetail | None:
    """Bars, speedup sweep and timing table of a ``device_benchmark`` record; None without timings.

    Examples:
        >>> detail = benchmark_detail({"kind": "device_benchmark", "devices": [
        ...     {"device": "cpu", "forward": {"median_s": 0.002, "iqr_s": 0.0001, "runs": 7}}]})
        >>> detail.timings.columns, detail.timings.rows[0][:3]
        (('device', 'phase', 'median', 'IQR', 'runs'), ('cpu', 'forward', '2 ms'))
        >>> benchmark_detail({"kind": "device_benchmark", "devices": []}) is None
        True
    """
    bench = charts.read_benchmark(record)
    if bench is None:
        return None
    # the rounds' statistics, where the record has them (older records lack them)
    extra = any(t.iterations is not None for t in bench.timings)

    def seconds(value: float | None) -> str:
        return charts.format_seconds(value) if value is not None else "—"

    timings = Table(
        ("device", "phase", "median", "IQR", "runs")
        + (("iterations", "min", "mean", "stddev") if extra else ()),
        tuple(
            (
                t.device,
                charts.phase_label(t.phase),
                charts.format_seconds(t.median_s),
                seconds(t.iqr_s),
                format_value(t.runs),
            )
            + (
                (
                    format_value(t.iterations),
                    seconds(t.min_s),
                    seconds(t.mean_s),
                    seconds(t.stddev_s),
                )
                if extra
                else ()
            )
            for t in bench.timings
        ),
    )
    return BenchmarkDetail(
        bars=charts.bar_chart(bench) if bench.timings else None,
        sweep=charts.speedup_chart(bench),
        skipped=bench.skipped,
        timings=timings if bench.timings else None,
    )
