"""A results document turned into what the HTML page shows.

:func:`build_page` reads a document (``gradcheck_kit.report.document``) and
returns a :class:`Page`: the summary by kind, the environment as text, and one
:class:`Row` per record, failures first, each with a detail of its kind:

* ``gradient`` (and ``manual`` records that carry ``pairs``): settings to
  reproduce it, error numbers per Jacobian block, hints, a heatmap of each
  failing block;
* ``training``: parameter, step, expected, cause, fix, source line;
* ``device_benchmark``: median-time bars with the speedup, speedup against size;
* any other kind (``device_parity`` included): name, verdict, message, and a
  table of its fields, so that a new kind of record shows without new code.

No markup is made here: every string is plain text, escaped by the template.
"""

from __future__ import annotations

import json
import math
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradcheck_kit.report import charts
from gradcheck_kit.report.coverage import CoverageView, coverage_view
from gradcheck_kit.report.document import summarize, verdict
from gradcheck_kit.report.grouping import group_findings
from gradcheck_kit.report.heatmap import Heatmap, entry_error, heatmap

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
# Rows of a nested table shown before "... N more".
MAX_TABLE_ROWS = 50
# Characters of a nested value shown as JSON text.
MAX_TEXT = 2000

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
# Keys every kind shares; they are shown in the row, not again in the details.
_COMMON_KEYS = frozenset({"kind", "schema_version", "name", "passed", "test_id", "duration_s"})
_SUMMARY_KEYS = ("summary", "message", "hint", "cause", "reason", "text")
_GRADIENT_KEYS = frozenset(
    {
        "check",
        "status",
        "mode",
        "mode_requested",
        "dtype",
        "dtype_policy",
        "eps",
        "atol",
        "rtol",
        "seed",
        "rng",
        "vectorized",
        "evaluations",
        "max_abs_error",
        "max_rel_error",
        "hint",
        "hints",
        "notes",
        "pairs",
        "probes",
        "resolution",
        "inputs_file",
        "reproduce",
        "routed",
    }
)
# A training finding's facts, in reading order: label, then the keys that may hold it.
_FINDING_FIELDS = (
    ("parameter", ("parameter", "param", "parameters")),
    ("step", ("step",)),
    ("optimizer", ("optimizer",)),
    ("expected", ("expected",)),
    ("found", ("found", "actual")),
    ("cause", ("cause",)),
    ("fix", ("fix",)),
    ("source", ("location", "source", "where")),
)
_TRAINING_KEYS = frozenset(
    {"findings", "check", "optimizer_steps", "backward_passes", "accumulation_steps", "notes"}
)
_AUDIT_KEYS = frozenset(
    {"check", "dtype", "dtype_policy", "seed", "findings", "gradient", "second_order"}
    | {"hint", "hints", "notes"}
)
_BENCHMARK_KEYS = frozenset(
    {"devices", "speedup", "sweep", "sizes", "crossover", "size_name", "backward"}
)


@dataclass(frozen=True)
class Table:
    """A nested table of a record's list of objects."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    more: int = 0


@dataclass(frozen=True)
class Field:
    """One ``key: value`` line of a details table; ``table`` for a list of objects."""

    key: str
    value: str
    table: Table | None = None
    long: bool = False  # shown as preformatted text (JSON, tracebacks)


@dataclass(frozen=True)
class WorstView:
    """One worst Jacobian entry as text cells (columns in ``PairView.worst_columns``)."""

    cells: tuple[str, ...]
    over: bool


@dataclass(frozen=True)
class PairView:
    """One (output, input) block of a gradient check."""

    output: str
    input: str
    output_shape: str
    input_shape: str
    passed: bool
    max_abs_error: str
    max_rel_error: str
    mismatched: str
    worst_columns: tuple[str, ...]
    worst: tuple[WorstView, ...]
    heatmap: Heatmap | None
    heatmap_left_out: bool


@dataclass(frozen=True)
class GradientDetail:
    """What a gradient (or manual-derivative) check shows when opened."""

    settings: tuple[tuple[str, str], ...]
    hints: tuple[str, ...]
    notes: tuple[str, ...]
    pairs: tuple[PairView, ...]
    probes: Table | None
    reproduce: str
    template: str = "gradient"


@dataclass(frozen=True)
class FindingView:
    """One training-loop finding: its title and parameter, step, expected, cause, fix, source."""

    title: str
    facts: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TrainingDetail:
    """A training-loop check: what it watched, and each finding."""

    settings: tuple[tuple[str, str], ...]
    findings: tuple[FindingView, ...]
    notes: tuple[str, ...]
    template: str = "training"


@dataclass(frozen=True)
class BenchmarkDetail:
    """A device benchmark: bars, speedup sweep, skipped devices, timing table."""

    bars: charts.BarChart | None
    sweep: charts.LineChart | None
    skipped: tuple[tuple[str, str], ...]
    timings: Table | None
    template: str = "device_benchmark"


@dataclass(frozen=True)
class AuditDetail:
    """A custom autograd.Function audit: one table row per property checked, one per block."""

    settings: tuple[tuple[str, str], ...]
    hints: tuple[str, ...]
    findings: Table | None
    blocks: Table | None
    notes: tuple[str, ...]
    template: str = "autograd_function"


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
    detail: GradientDetail | TrainingDetail | BenchmarkDetail | AuditDetail | None
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


def _float(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def format_value(value: Any) -> str:
    """A JSON value as short text: numbers to 4 significant digits, lists joined.

    Examples:
        >>> format_value(0.000123456), format_value([1, 2]), format_value(None)
        ('0.0001235', '1, 2', '—')
        >>> format_value("inf"), format_value(True)
        ('inf', 'true')
    """
    # The JSON types first, by exact type: this runs a hundred thousand times for a big run.
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is float:
        return f"{value:.4g}"
    if kind is int:
        return str(value)
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and all(
        v is None or isinstance(v, (str, int, float)) for v in value
    ):
        shown = ", ".join(format_value(v) for v in value[:20])
        return shown + (f", … ({len(value) - 20} more)" if len(value) > 20 else "")
    return _json_text(value)


def _json_text(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=1, default=str)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def _shape(shape: Any) -> str:
    if isinstance(shape, Sequence) and not isinstance(shape, str):
        return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
    return format_value(shape)


def _table(items: Sequence[Any]) -> Table | None:
    """A list of flat objects as a table; ``None`` when it is not one."""
    if not items or not all(isinstance(item, Mapping) for item in items):
        return None
    columns = list(dict.fromkeys(str(k) for item in items for k in item))
    rows = tuple(
        tuple(format_value(item.get(c)) for c in columns) for item in items[:MAX_TABLE_ROWS]
    )
    return Table(tuple(columns), rows, max(0, len(items) - MAX_TABLE_ROWS))


def _fields(record: Mapping[str, Any], skip: frozenset[str]) -> tuple[Field, ...]:
    """The record's other keys as a details table, nested lists of objects as tables."""
    out: list[Field] = []
    for key, value in record.items():
        if key in skip or key in _COMMON_KEYS or value is None or value in ("", [], {}):
            continue
        if key == "test" and isinstance(value, Mapping):
            out.append(Field("test", _test_text(value)))
            continue
        if isinstance(value, Sequence) and not isinstance(value, str):
            table = _table(value)
            if table is not None:
                out.append(Field(str(key), f"{len(value)} entries", table))
                continue
        text = format_value(value)
        out.append(Field(str(key), text, long=isinstance(value, (Mapping, list)) or "\n" in text))
    return tuple(out)


def _test_text(test: Mapping[str, Any]) -> str:
    """The test's outcome in words: ``passed, read the result · tests/test_x.py:12``."""
    outcome = test.get("outcome")
    parts = [str(outcome) if isinstance(outcome, str) and outcome else "no outcome"]
    looked_at = test.get("looked_at")
    if looked_at is not None:
        parts[0] += ", read the result" if looked_at else ", never read the result"
    file, line = test.get("file"), test.get("line")
    if isinstance(file, str) and file:
        parts.append(f"{file}:{line}" if isinstance(line, int) else file)
    return " · ".join(parts)


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


def _py(value: Any) -> str:
    """A setting as Python source for the reproduce line (floats round-trip)."""
    number = _float(value)
    if isinstance(value, str) and math.isnan(number):
        return repr(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return repr(number)


class _Budget:
    """Counts heatmaps and full details, so that a page of thousands of failures stays light."""

    def __init__(self, heatmaps: int, details: int) -> None:
        self.heatmaps_left, self.details_left = heatmaps, details
        self.heatmaps_left_out = self.details_left_out = 0

    def take_heatmap(self) -> bool:
        if self.heatmaps_left > 0:
            self.heatmaps_left -= 1
            return True
        self.heatmaps_left_out += 1
        return False

    def take_detail(self) -> bool:
        if self.details_left > 0:
            self.details_left -= 1
            return True
        self.details_left_out += 1
        return False


# Worst-entry columns in reading order, with their headings; other keys follow.
_WORST_COLUMNS = {
    "analytic": "analytic",
    "manual": "manual",
    "autograd": "autograd",
    "numeric": "numeric",
    "abs_error": "|diff|",
    "rel_error": "rel.",
    "allowed": "allowed",
    "odd_one_out": "odd one out",
}


def _mismatched(pair: Mapping[str, Any]) -> str:
    """``mismatched / total``; a three-way pair counts its odd ones out instead."""
    mismatched = pair.get("mismatched")
    if not isinstance(mismatched, int):
        counts = {
            key.removesuffix("_wrong"): value
            for key, value in pair.items()
            if (key.endswith("_wrong") or key == "all_differ") and isinstance(value, int)
        }
        mismatched = sum(counts.values()) if counts else None
        wrong = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v)
        if wrong:
            return f"{mismatched} / {format_value(pair.get('total'))} ({wrong})"
    return f"{format_value(mismatched)} / {format_value(pair.get('total'))}"


def _worst(pair: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[WorstView, ...]]:
    entries = [w for w in pair.get("worst") or [] if isinstance(w, Mapping)]
    keys = list(dict.fromkeys(k for w in entries for k in w))
    columns = [k for k in _WORST_COLUMNS if k in keys]
    columns += [k for k in keys if k not in columns and k not in ("output_index", "input_index")]
    views = []
    for w in entries:
        allowed = _float(w.get("allowed"))
        error = entry_error(w)
        over = not error <= allowed if "allowed" in w else True
        cells = (
            _shape(w.get("output_index", [])),
            _shape(w.get("input_index", [])),
            *(format_value(w.get(k)) for k in columns),
        )
        views.append(WorstView(cells, over))
    return ("i", "j", *(_WORST_COLUMNS.get(k, k) for k in columns)), tuple(views)


def _pair_view(pair: Mapping[str, Any], budget: _Budget) -> PairView:
    passed = pair.get("passed") is True
    worst_columns, worst = _worst(pair) if not passed else ((), ())
    drawn = None
    left_out = False
    if not passed:
        if budget.take_heatmap():
            drawn = heatmap(pair)
        else:
            left_out = True
    return PairView(
        output=str(pair.get("output", "?")),
        input=str(pair.get("input", "?")),
        output_shape=_shape(pair.get("output_shape", [])),
        input_shape=_shape(pair.get("input_shape", [])),
        passed=passed,
        max_abs_error=format_value(pair.get("max_abs_error")),
        max_rel_error=format_value(pair.get("max_rel_error")),
        mismatched=_mismatched(pair),
        worst_columns=worst_columns,
        worst=worst,
        heatmap=drawn,
        heatmap_left_out=left_out,
    )


def _dtype(record: Mapping[str, Any]) -> str:
    dtype, policy = format_value(record.get("dtype")), record.get("dtype_policy")
    return dtype if policy in (None, record.get("dtype")) else f"{dtype} ({policy})"


def _subject_arguments(record: Mapping[str, Any]) -> str:
    """What follows the function in the reproduce line: a manual check also takes the derivative."""
    if record.get("kind") == "manual":
        return ("manual_vjp" if record.get("interface") == "vjp" else "manual_grad") + ", inputs"
    return "inputs"


def _settings(record: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The settings a check ran with (what reproduces it), as text."""
    if not isinstance(record.get("pairs"), list):
        return ()
    mode, requested = record.get("mode"), record.get("mode_requested")
    settings = (
        ("mode", format_value(mode) + (f" (asked: {requested})" if requested != mode else "")),
        ("dtype", _dtype(record)),
        ("eps", format_value(record.get("eps"))),
        ("atol", format_value(record.get("atol"))),
        ("rtol", format_value(record.get("rtol"))),
        ("seed", format_value(record.get("seed"))),
        ("rng", format_value(record.get("rng"))),
    )
    return tuple((k, v) for k, v in settings if v != "—")


_SETTING_KEYS = (
    "mode",
    "mode_requested",
    "dtype",
    "dtype_policy",
    "eps",
    "atol",
    "rtol",
    "seed",
    "rng",
)


def _all_settings(results: Sequence[Mapping[str, Any]]) -> list[tuple[tuple[str, str], ...]]:
    """:func:`_settings` of every record; most checks of a run share theirs, so once each."""
    memo: dict[tuple[Any, ...], tuple[tuple[str, str], ...]] = {}
    out = []
    for record in results:
        key = (isinstance(record.get("pairs"), list), *(record.get(k) for k in _SETTING_KEYS))
        try:
            found = memo.get(key)
        except TypeError:  # an unhashable value: no sharing
            found, key = None, ()
        if found is None:
            found = _settings(record)
            if key:
                memo[key] = found
        out.append(found)
    return out


def _pairs_line(
    record: Mapping[str, Any],
    settings: tuple[tuple[str, str], ...],
    common: tuple[tuple[str, str], ...],
) -> str:
    """A check in one line: settings unlike most checks', then each block's numbers."""
    parts = [f"{k} {v}" for k, v in settings if (k, v) not in common]
    pairs = [p for p in record.get("pairs") or [] if isinstance(p, Mapping)]
    for pair in pairs[:4]:
        parts.append(
            f"{pair.get('output', '?')} {_shape(pair.get('output_shape', []))} / "
            f"{pair.get('input', '?')} {_shape(pair.get('input_shape', []))}: "
            f"max |diff| {format_value(pair.get('max_abs_error'))}, {_mismatched(pair)} mismatched"
        )
    if len(pairs) > 4:
        parts.append(f"… {len(pairs) - 4} more blocks")
    if isinstance(record.get("evaluations"), int):
        parts.append(f"{record['evaluations']} evaluations")
    parts += [str(n) for n in record.get("notes") or []]
    return " · ".join(parts)


def _training_line(record: Mapping[str, Any]) -> str:
    detail, _ = _training_detail(record)
    parts = [f"{k} {v}" for k, v in detail.settings]
    return " · ".join([*parts, "no finding", *detail.notes])


def _resolution_text(entries: Any) -> str:
    """``"≥ 5e-06 on inputs[0]; ≥ 2e-06 on inputs[1]"``: what the check could catch."""
    if not isinstance(entries, list):
        return "—"
    parts = [
        f"≥ {format_value(e.get('relative'))} on {e.get('block', '?')}"
        for e in entries
        if isinstance(e, Mapping)
    ]
    return "; ".join(parts) or "—"


def _routed_settings(routed: Any) -> list[tuple[str, str]]:
    """``pytest --gradcheck-torch``: which torch call was routed, and the comparison line.

    Examples:
        >>> _routed_settings({"function": "torch.autograd.gradcheck", "caller": "t.py:3",
        ...     "mode": "compare", "seconds": 0.02, "agree": True,
        ...     "torch": {"verdict": "passed", "seconds": 0.01, "error": None}})[1]
        ('compare', 'torch passed in 0.01 s · gradcheck_kit in 0.02 s · agree')
    """
    if not isinstance(routed, Mapping):
        return []
    out = [("routed", f"{routed.get('function', '?')} from {routed.get('caller') or '?'}")]
    theirs = routed.get("torch")
    if isinstance(theirs, Mapping):
        line = f"torch {theirs.get('verdict', '?')} in {format_value(theirs.get('seconds'))} s"
        line += f" · gradcheck_kit in {format_value(routed.get('seconds'))} s · "
        line += "agree" if routed.get("agree") else f"disagree: {routed.get('disagreement')}"
        out.append(("compare", line))
    return out


def _gradient_detail(
    record: Mapping[str, Any],
    name: str,
    run_settings: tuple[tuple[str, str], ...],
    budget: _Budget,
) -> GradientDetail:
    settings = [
        ("check", format_value(record.get("check"))),
        ("status", format_value(record.get("status"))),
        *run_settings,
        ("evaluations", format_value(record.get("evaluations"))),
        ("vectorized", format_value(record.get("vectorized"))),
        ("resolution", _resolution_text(record.get("resolution"))),
        *_routed_settings(record.get("routed")),
    ]
    settings = [(k, v) for k, v in settings if v != "—"]
    hints = [
        str(h.get("text"))
        for h in record.get("hints") or []
        if isinstance(h, Mapping) and h.get("text")
    ]
    if not hints and isinstance(record.get("hint"), str) and record["hint"]:
        hints = [record["hint"]]
    pairs = [p for p in record.get("pairs") or [] if isinstance(p, Mapping)]
    # Failing blocks first: they are what the reader opened the row for.
    pairs.sort(key=lambda p: p.get("passed") is True)
    probes = record.get("probes") or []
    arguments = ", ".join(
        f"{key}={_py(record[key])}"
        for key in ("mode", "dtype_policy", "eps", "atol", "rtol", "seed", "rng")
        if key in record
    ).replace("dtype_policy=", "dtype=")
    check = record.get("check") if isinstance(record.get("check"), str) else "check_gradients"
    return GradientDetail(
        settings=tuple(settings),
        hints=tuple(hints),
        notes=tuple(str(n) for n in record.get("notes") or []),
        pairs=tuple(_pair_view(p, budget) for p in pairs),
        probes=_table(probes) if isinstance(probes, list) else None,
        # The check's own line (importable function, saved inputs) when it wrote one.
        reproduce=record["reproduce"]
        if isinstance(record.get("reproduce"), str) and record["reproduce"]
        else f"gradcheck_kit.{check}({name}, {_subject_arguments(record)}, {arguments})",
    )


def _finding(data: Mapping[str, Any]) -> tuple[FindingView, set[str]]:
    facts: list[tuple[str, str]] = []
    used: set[str] = {"title"}
    for label, keys in _FINDING_FIELDS:
        for key in keys:
            if data.get(key) not in (None, "", []):
                value = data[key]
                if label == "source" and isinstance(value, Mapping):
                    where = value.get("file", value.get("filename", "?"))
                    value = f"{where}:{value.get('line', '?')}"
                facts.append((label, format_value(value)))
                used.add(key)
                break
    occurrences = data.get("occurrences")
    if isinstance(occurrences, int) and occurrences > 1:
        steps = data.get("steps") or []
        shown = f" (steps {format_value(steps)})" if steps else ""
        facts.append(("seen", f"{occurrences} times{shown}"))
    used.update({"occurrences", "steps"})
    title = data.get("title")
    if not isinstance(title, str) or not title:
        kind = data.get("kind")
        title = str(kind).replace("_", " ") if kind and kind != "training" else "finding"
    return FindingView(title, tuple(facts)), used


def _grouped_finding(data: Mapping[str, Any], parameters: tuple[str, ...]) -> FindingView:
    """One card for findings that differ only in their parameter: the parameters listed."""
    view, _ = _finding(data)
    if len(parameters) <= 1:
        return view
    facts = (("parameters", ", ".join(parameters)), *view.facts)
    return FindingView(f"{view.title} ({len(parameters)} parameters)", facts)


def _training_findings(raw: Sequence[Any]) -> list[FindingView]:
    return [
        _grouped_finding(finding, parameters)
        for finding, parameters in group_findings([f for f in raw if isinstance(f, Mapping)])
    ]


def _training_detail(record: Mapping[str, Any]) -> tuple[TrainingDetail, frozenset[str]]:
    raw = record.get("findings")
    used: set[str] = set(_TRAINING_KEYS)
    if isinstance(raw, list):
        findings = _training_findings(raw)
    else:
        # One finding as the record itself (its facts at the top level).
        view, keys = _finding(record)
        findings = [view] if view.facts else []
        used |= keys
    settings = [
        (label, format_value(record[key]))
        for key, label in (
            ("check", "check"),
            ("optimizer_steps", "optimizer steps"),
            ("backward_passes", "backward passes"),
            ("accumulation_steps", "accumulation steps"),
        )
        if record.get(key) is not None
    ]
    notes = tuple(str(n) for n in record.get("notes") or [] if n)
    return TrainingDetail(tuple(settings), tuple(findings), notes), frozenset(used)


def _training_summary(record: Mapping[str, Any]) -> str:
    """The first finding in one line (and how many more), for the row."""
    raw = record.get("findings")
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], Mapping):
        return ""
    groups = group_findings([f for f in raw if isinstance(f, Mapping)])
    first, parameters = groups[0]
    view, _ = _finding(first)
    names = ", ".join(parameters[:3]) + (
        f" and {len(parameters) - 3} more" if len(parameters) > 3 else ""
    )
    text = view.title + (f": {names}" if names else "")
    return text + (f" (and {len(groups) - 1} more)" if len(groups) > 1 else "")


def _benchmark_detail(record: Mapping[str, Any]) -> BenchmarkDetail | None:
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


def _audit_detail(record: Mapping[str, Any]) -> AuditDetail:
    """The audit's findings and its nested checks' Jacobian blocks as tables, not JSON."""
    findings = [f for f in record.get("findings") or [] if isinstance(f, Mapping)]
    finding_rows = tuple(
        (
            format_value(f.get("check")).replace("_", " "),
            format_value(f.get("input")) if f.get("input") else "",
            format_value(f.get("output")) if f.get("output") else "",
            format_value(f.get("status")),
            format_value(f.get("text")),
        )
        for f in findings
    )
    block_rows: list[tuple[str, ...]] = []
    notes: list[str] = [str(n) for n in record.get("notes") or [] if n]
    for order, key in (("first", "gradient"), ("second", "second_order")):
        nested = record.get(key)
        if not isinstance(nested, Mapping):
            continue
        notes += [str(n) for n in nested.get("notes") or [] if n and str(n) not in notes]
        for pair in nested.get("pairs") or []:
            if not isinstance(pair, Mapping):
                continue
            block_rows.append(
                (
                    order,
                    f"{pair.get('output')} {_shape(pair.get('output_shape'))}",
                    f"{pair.get('input')} {_shape(pair.get('input_shape'))}",
                    format_value(pair.get("max_abs_error")),
                    _mismatched(pair),
                    "passed" if pair.get("passed") is True else "failed",
                )
            )
    settings = [
        (label, format_value(record[key]))
        for key, label in (("check", "check"), ("dtype", "dtype"), ("seed", "seed"))
        if record.get(key) is not None
    ]
    hints = [
        str(h.get("text"))
        for h in record.get("hints") or []
        if isinstance(h, Mapping) and h.get("text")
    ]
    return AuditDetail(
        settings=tuple(settings),
        hints=tuple(hints),
        findings=(
            Table(("property", "input", "output", "verdict", "what was found"), finding_rows)
            if finding_rows
            else None
        ),
        blocks=(
            Table(
                ("derivative", "output", "input", "max |diff|", "mismatched", "verdict"),
                tuple(block_rows),
            )
            if block_rows
            else None
        ),
        notes=tuple(notes),
    )


def _measure(record: Mapping[str, Any], kind: str) -> tuple[str, float]:
    """The one number that says most about a record, as text and as a sort key."""
    if record.get("status") == "empty":
        return "nothing to check", math.nan
    if "max_abs_error" in record and record.get("pairs") != []:
        value = _float(record["max_abs_error"])
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
        value = _float(record.get(key))
        if not math.isnan(value):
            return f"{key.replace('_', ' ')} {format_value(record[key])}", value
    return "", math.nan


def _row(
    index: int,
    record: Mapping[str, Any],
    budget: _Budget,
    settings: tuple[tuple[str, str], ...],
    common: tuple[tuple[str, str], ...],
) -> Row:
    raw_kind = record.get("kind")
    kind = raw_kind if isinstance(raw_kind, str) and raw_kind else "unknown"
    status = verdict(record)
    name = _name(record, kind)
    measure, measure_value = _measure(record, kind)
    duration = _float(record.get("duration_s"))
    test_id = record.get("test_id")
    summary = _summary_text(record) or (_training_summary(record) if kind == "training" else "")
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
            line = _pairs_line(record, settings, common) if has_pairs else _training_line(record)
        elif status != "passed" and not budget.take_detail():
            bare = True
    detail: GradientDetail | TrainingDetail | BenchmarkDetail | AuditDetail | None = None
    used: frozenset[str] = frozenset()
    if line or bare:
        pass
    elif has_pairs:
        detail = _gradient_detail(record, name, settings, budget)
        used = _GRADIENT_KEYS
    elif kind == "training":
        detail, used = _training_detail(record)
    elif kind == "device_benchmark":
        detail = _benchmark_detail(record)
        used = _BENCHMARK_KEYS if detail is not None else frozenset()
    elif kind == "autograd_function":
        detail, used = _audit_detail(record), _AUDIT_KEYS
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
            else _fields(record, used | {k for k in _SUMMARY_KEYS if record.get(k) == summary})
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
    value = _float(seconds)
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
    budget = _Budget(MAX_HEATMAPS, MAX_DETAILS)
    settings = _all_settings(results)
    # The settings most checks share are shown once, in the header, not in every row.
    counted = Counter(s for s in settings if s)
    common = counted.most_common(1)[0][0] if counted and counted.most_common(1)[0][1] > 1 else ()
    rows = tuple(_row(i, results[i], budget, settings[i], common) for i in order)
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
        heatmaps_left_out=budget.heatmaps_left_out,
        details_left_out=budget.details_left_out,
        common_settings=common,
        coverage=coverage_view(document.get("coverage")),
        data={
            "schema_version": document.get("schema_version"),
            "created": document.get("created"),
            "version": document.get("version"),
            "summary": summary,
        },
    )
