"""A results document turned into what the HTML page shows.

:func:`build_page` reads a document (``gradcheck_kit.report.document``) and
returns a :class:`Page`: the summary by kind, the environment as text, and one
:class:`Row` per record, failures first, each with a detail of its kind:

* ``gradient`` (and ``manual`` records that carry ``pairs``): settings to
  reproduce it, error numbers per Jacobian block, hints, a heatmap of each
  failing block (:mod:`.gradient_detail`);
* ``training``: parameter, step, expected, cause, fix, source line
  (:mod:`.training_detail`);
* ``device_benchmark``: median-time bars with the speedup, speedup against size
  (:mod:`.benchmark_detail`);
* ``autograd_function``: a table of the properties audited and of the blocks
  (:mod:`.audit_detail`);
* ``ddp``: the tensors that differ from one process and between ranks, per rank
  and step, and a rank's failure (:mod:`.ddp_detail`);
* any other kind (``device_parity`` included): name, verdict, message, and a
  table of its fields, so that a new kind of record shows without new code.

This module assembles the page and its rows; :mod:`.values` turns values into
text. No markup is made here: every string is plain text, escaped by the template.
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gradcheck_kit.report import charts
from gradcheck_kit.report.audit_detail import AUDIT_KEYS, AuditDetail, audit_detail
from gradcheck_kit.report.benchmark_detail import BENCHMARK_KEYS, BenchmarkDetail, benchmark_detail
from gradcheck_kit.report.coverage import CoverageView, coverage_view
from gradcheck_kit.report.ddp_detail import DDP_KEYS, DdpDetail, ddp_detail
from gradcheck_kit.report.document import summarize, verdict
from gradcheck_kit.report.gradient_detail import (
    GRADIENT_KEYS,
    GradientDetail,
    all_settings,
    gradient_detail,
    pairs_line,
)
from gradcheck_kit.report.training_detail import (
    TrainingDetail,
    training_detail,
    training_line,
    training_summary,
)
from gradcheck_kit.report.values import Field, Table, fields_of, format_value, number

__all__ = [
    "MAX_HEATMAPS",
    "MAX_DETAILS",
    "KIND_LABELS",
    "Field",
    "Table",
    "Row",
    "Page",
    "build_page",
    "format_value",
]

# Heatmaps drawn per page: each costs a few kB, and past a few hundred failing
# blocks nobody looks at the next one (the numbers stay in the tables).
MAX_HEATMAPS = 200
# Failures shown with every detail; past them a failure gets one line (the JSON has all).
MAX_DETAILS = 500
KIND_LABELS = {
    "gradient": "gradient",
    "manual": "manual derivative",
    "second_order": "second order",
    "autograd_function": "autograd.Function audit",
    "same_training": "same training",
    "training": "training loop",
    "device_benchmark": "device benchmark",
    "device_parity": "device parity",
    "graph": "graph",
    "ddp": "DDP vs one process",
}
STATUS_LABELS = {
    "failed": "failed",
    "unasserted": "unasserted",
    "no_verdict": "no verdict",
    "expected_failure": "failed as expected",
    "passed": "passed",
}
# Real failures first, then what needs a look (a failure nothing asserted on).
_STATUS_ORDER = {status: order for order, status in enumerate(STATUS_LABELS)}
# Shown closed: a failure its test expected is as settled as a pass.
# Rows closed at load: nothing in them needs the reader (a check without verdict, a
# skipped parity on a CPU-only machine, says why in its one-line summary).
_SETTLED = frozenset({"passed", "expected_failure", "no_verdict"})
# Where a record keeps its one-line account, the first found is the row's summary.
_SUMMARY_KEYS = ("summary", "message", "hint", "cause", "reason", "text")


# What a row's detail can be: one per kind with a dedicated rendering.
Detail = GradientDetail | TrainingDetail | BenchmarkDetail | AuditDetail | DdpDetail


@dataclass(frozen=True)
class Row:
    """One record: the table row and its details."""

    index: int
    status: str
    status_label: str
    kind: str
    kind_label: str
    name: str
    test_id: str
    measure: str
    measure_value: float
    duration: str
    duration_value: float
    summary: str
    detail: Detail | None
    fields: tuple[Field, ...] = ()
    reproduce_test: str = ""
    # Passed checks of a kind with a one-line account show only that line (``full``
    # false): a page of 10,000 checks stays a few MB. Failures are open at load.
    line: str = ""
    full: bool = True
    open: bool = False
    # A failure past the page's detail limit: its first row only, nothing to open.
    bare: bool = False


@dataclass(frozen=True)
class KindCount:
    """Checks by verdict for one kind (see :func:`gradcheck_kit.report.document.verdict`)."""

    kind: str
    label: str
    checks: int
    passed: int
    failed: int
    no_verdict: int
    expected_failure: int = 0
    unasserted: int = 0


@dataclass(frozen=True)
class Source:
    """One merged input file."""

    path: str
    created: str
    checks: int
    failed: int
    duration: str
    environment: str


@dataclass(frozen=True)
class Page:
    """Everything the template shows, as plain values."""

    title: str
    created: str
    version: str
    schema_version: int
    checks: int
    passed: int
    failed: int
    no_verdict: int
    kinds: tuple[KindCount, ...]
    duration: str
    check_time: str
    environment: tuple[tuple[str, str], ...]
    sources: tuple[Source, ...]
    rows: tuple[Row, ...]
    heatmaps_left_out: int
    details_left_out: int = 0
    common_settings: tuple[tuple[str, str], ...] = ()
    max_heatmaps: int = MAX_HEATMAPS
    max_details: int = MAX_DETAILS
    data: dict[str, Any] = field(default_factory=dict)
    expected_failure: int = 0
    unasserted: int = 0
    coverage: CoverageView | None = None


def _summary_text(record: Mapping[str, Any]) -> str:
    for key in _SUMMARY_KEYS:
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _name(record: Mapping[str, Any], kind: str) -> str:
    for key in ("name", "check", "parameter", "detector"):
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    return KIND_LABELS.get(kind, kind)


class _Allowance:
    """How many more of something a page shows; past that, how many it left out.

    A page of thousands of failures stays light: heatmaps and full details are counted.
    """

    def __init__(self, limit: int) -> None:
        self.left, self.left_out = limit, 0

    def take(self) -> bool:
        if self.left > 0:
            self.left -= 1
            return True
        self.left_out += 1
        return False


def _measure(record: Mapping[str, Any], kind: str) -> tuple[str, float]:
    """The one number that says most about a record, as text and as a sort key."""
    if record.get("status") == "empty":
        return "nothing to check", math.nan
    if "max_abs_error" in record and record.get("pairs") != []:
        value = number(record["max_abs_error"])
        return format_value(record["max_abs_error"]), value
    if kind == "device_benchmark":
        bench = charts.read_benchmark(record)
        if bench is not None and bench.speedups:
            phase = "forward_backward" if "forward_backward" in bench.speedups else None
            ratio = bench.speedups[phase or next(iter(bench.speedups))]
            return f"{ratio:.3g}× speedup", ratio
    if isinstance(record.get("findings"), list) and record["findings"]:
        count = len(record["findings"])
        return f"{count} finding{'s' if count != 1 else ''}", float(count)
    if isinstance(record.get("step"), int):
        return f"step {record['step']}", float(record["step"])
    for key in ("max_error", "error", "value"):
        value = number(record.get(key))
        if not math.isnan(value):
            return f"{key.replace('_', ' ')} {format_value(record[key])}", value
    return "", math.nan


def _row(
    index: int,
    record: Mapping[str, Any],
    details: _Allowance,
    heatmaps: _Allowance,
    settings: tuple[tuple[str, str], ...],
    common: tuple[tuple[str, str], ...],
) -> Row:
    raw_kind = record.get("kind")
    kind = raw_kind if isinstance(raw_kind, str) and raw_kind else "unknown"
    status = verdict(record)
    name = _name(record, kind)
    measure, measure_value = _measure(record, kind)
    duration = number(record.get("duration_s"))
    test_id = record.get("test_id")
    summary = _summary_text(record) or (training_summary(record) if kind == "training" else "")
    has_pairs = isinstance(record.get("pairs"), list)
    line = ""
    # A passed check shows one line, not a detail; a failure past the page's limit shows
    # its row alone (with its hint): 10,000 failures would otherwise weigh over 5 MB.
    bare = False
    if has_pairs or kind == "training":
        # a passed check that torch's own gradcheck failed (compare mode) shows its details
        routed = record.get("routed")
        disagrees = isinstance(routed, Mapping) and routed.get("agree") is False
        if status == "passed" and not summary and not disagrees:
            line = pairs_line(record, settings, common) if has_pairs else training_line(record)
        elif status != "passed" and not details.take():
            bare = True
    detail: Detail | None = None
    used: frozenset[str] = frozenset()
    if line or bare:
        pass
    elif has_pairs:
        detail = gradient_detail(record, name, settings, heatmaps.take)
        used = GRADIENT_KEYS
    elif kind == "training":
        detail, used = training_detail(record)
    elif kind == "device_benchmark":
        detail = benchmark_detail(record)
        used = BENCHMARK_KEYS if detail is not None else frozenset()
    elif kind == "autograd_function":
        detail, used = audit_detail(record), AUDIT_KEYS
    elif kind == "ddp":
        detail, used = ddp_detail(record), DDP_KEYS
    return Row(
        index=index,
        status=status,
        status_label=STATUS_LABELS[status],
        kind=kind,
        kind_label=KIND_LABELS.get(kind, kind),
        name=name,
        test_id=test_id if isinstance(test_id, str) else "",
        measure=measure,
        measure_value=measure_value,
        duration=charts.format_seconds(duration) if math.isfinite(duration) else "",
        duration_value=duration,
        summary=summary,
        detail=detail,
        fields=(
            ()
            if line or bare
            else fields_of(record, used | {k for k in _SUMMARY_KEYS if record.get(k) == summary})
        ),
        reproduce_test=(
            f"python -m pytest {shlex.quote(test_id)} --gradcheck"
            if isinstance(test_id, str) and not line and not bare
            else ""
        ),
        line=line,
        full=not line and not bare,
        bare=bare,
        # A benchmark's charts are its point, verdict or not.
        open=status not in _SETTLED or (kind == "device_benchmark" and detail is not None),
    )


_ENVIRONMENT_ORDER = ("python", "torch", "cuda", "numpy", "devices", "platform", "seeds", "options")


def _environment(environment: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    keys = [k for k in _ENVIRONMENT_ORDER if k in environment]
    keys += [k for k in environment if k not in keys]
    out = []
    for key in keys:
        value = environment[key]
        if isinstance(value, Mapping):
            text = ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) or "—"
        else:
            text = format_value(value)
        out.append((str(key), text))
    return tuple(out)


def _duration(seconds: Any) -> str:
    value = number(seconds)
    return charts.format_seconds(value) if math.isfinite(value) else "—"


def build_page(document: Mapping[str, Any], *, title: str = "gradcheck report") -> Page:
    """Turn a results document into a :class:`Page`: failures first, details by kind.

    Args:
        document: A document as :func:`gradcheck_kit.report.document.load_document` returns it.
        title: The page's title.

    Returns:
        The page's content, all text plain (the template escapes it).

    Examples:
        >>> page = build_page({"results": [
        ...     {"kind": "gradient", "name": "ok", "passed": True, "pairs": []},
        ...     {"kind": "training", "name": "Net", "passed": False, "findings": [
        ...         {"title": "Gradient not reset", "parameter": "fc1.weight", "step": 3}]}]})
        >>> [(row.name, row.status) for row in page.rows]
        [('Net', 'failed'), ('ok', 'passed')]
        >>> page.rows[0].summary, page.rows[0].detail.findings[0].facts
        ('Gradient not reset: fc1.weight', (('parameter', 'fc1.weight'), ('step', '3')))
    """
    results = [r for r in document.get("results", []) if isinstance(r, Mapping)]
    order = sorted(range(len(results)), key=lambda i: (_STATUS_ORDER[verdict(results[i])], i))
    details, heatmaps = _Allowance(MAX_DETAILS), _Allowance(MAX_HEATMAPS)
    settings = all_settings(results)
    # The settings most checks share are shown once, in the header, not in every row.
    counted = Counter(s for s in settings if s)
    common = counted.most_common(1)[0][0] if counted and counted.most_common(1)[0][1] > 1 else ()
    rows = tuple(_row(i, results[i], details, heatmaps, settings[i], common) for i in order)
    summary = summarize(results)
    kinds = tuple(
        KindCount(
            kind,
            KIND_LABELS.get(kind, kind),
            c["checks"],
            c["passed"],
            c["failed"],
            c["no_verdict"],
            c["expected_failure"],
            c["unasserted"],
        )
        for kind, c in summary["by_kind"].items()
    )
    check_time = sum(r.duration_value for r in rows if math.isfinite(r.duration_value))
    sources = tuple(
        Source(
            path=str(s.get("path", "?")),
            created=str(s.get("created", "")),
            checks=int(s.get("checks", 0)),
            failed=int(s.get("failed", 0)),
            duration=_duration(s.get("duration_s")),
            environment="; ".join(
                f"{k}: {v}"
                for k, v in _environment(s.get("environment") or {})
                if k in ("python", "torch", "cuda", "devices")
            ),
        )
        for s in document.get("sources") or []
        if isinstance(s, Mapping)
    )
    environment = document.get("environment") or {}
    return Page(
        title=title,
        created=str(document.get("created", "")),
        version=str(document.get("version", "")),
        schema_version=int(document.get("schema_version", 0) or 0),
        checks=summary["checks"],
        passed=summary["passed"],
        failed=summary["failed"],
        no_verdict=summary["no_verdict"],
        expected_failure=summary["expected_failure"],
        unasserted=summary["unasserted"],
        kinds=kinds,
        duration=_duration(document.get("duration_s")),
        check_time=charts.format_seconds(check_time) if rows else "—",
        environment=_environment(environment if isinstance(environment, Mapping) else {}),
        sources=sources,
        rows=rows,
        heatmaps_left_out=heatmaps.left_out,
        details_left_out=details.left_out,
        common_settings=common,
        coverage=coverage_view(document.get("coverage")),
        data={
            "schema_version": document.get("schema_version"),
            "created": document.get("created"),
            "version": document.get("version"),
            "summary": summary,
        },
    )
