"""A gradient check's detail (and a manual check's, with ``pairs``): what reproduces it, per block.

Its settings (mode, dtype, tolerances, seed) and the line that reproduces it,
hints, and for each (output, input) Jacobian block the error numbers, the worst
entries and a heatmap of a failing one; or, for a passed check, all that in one line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gradcheck_kit.report.heatmap import Heatmap, entry_error, heatmap
from gradcheck_kit.report.values import (
    Table,
    format_value,
    hint_texts,
    number,
    shape_text,
    table_of,
)

__all__ = [
    "GRADIENT_KEYS",
    "GradientDetail",
    "PairView",
    "WorstView",
    "all_settings",
    "gradient_detail",
    "mismatched_text",
    "pairs_line",
]

# The settings that reproduce a check; most checks of a run share them.
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
# The keys a gradient detail shows; the rest go to the row's fields.
GRADIENT_KEYS = frozenset(
    {
        "check",
        "status",
        *_SETTING_KEYS,
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


def mismatched_text(pair: Mapping[str, Any]) -> str:
    """``mismatched / total``; a three-way pair counts its odd ones out instead.

    Examples:
        >>> mismatched_text({"mismatched": 3, "total": 12})
        '3 / 12'
        >>> mismatched_text({"manual_wrong": 2, "autograd_wrong": 0, "total": 12})
        '2 / 12 (manual 2)'
    """
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
        allowed = number(w.get("allowed"))
        error = entry_error(w)
        over = not error <= allowed if "allowed" in w else True
        cells = (
            shape_text(w.get("output_index", [])),
            shape_text(w.get("input_index", [])),
            *(format_value(w.get(k)) for k in columns),
        )
        views.append(WorstView(cells, over))
    return ("i", "j", *(_WORST_COLUMNS.get(k, k) for k in columns)), tuple(views)


def _pair_view(pair: Mapping[str, Any], take_heatmap: Callable[[], bool]) -> PairView:
    passed = pair.get("passed") is True
    worst_columns, worst = _worst(pair) if not passed else ((), ())
    drawn = None
    left_out = False
    if not passed:
        if take_heatmap():
            drawn = heatmap(pair)
        else:
            left_out = True
    return PairView(
        output=str(pair.get("output", "?")),
        input=str(pair.get("input", "?")),
        output_shape=shape_text(pair.get("output_shape", [])),
        input_shape=shape_text(pair.get("input_shape", [])),
        passed=passed,
        max_abs_error=format_value(pair.get("max_abs_error")),
        max_rel_error=format_value(pair.get("max_rel_error")),
        mismatched=mismatched_text(pair),
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


def all_settings(results: Sequence[Mapping[str, Any]]) -> list[tuple[tuple[str, str], ...]]:
    """The settings of every record (what reproduces it, as text), in order.

    Most checks of a run share theirs, so each distinct set is made once.

    Examples:
        >>> all_settings([{"pairs": [], "mode": "full", "mode_requested": "auto", "eps": 1e-6},
        ...               {"kind": "training"}])
        [(('mode', 'full (asked: auto)'), ('eps', '1e-06')), ()]
    """
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


def pairs_line(
    record: Mapping[str, Any],
    settings: tuple[tuple[str, str], ...],
    common: tuple[tuple[str, str], ...],
) -> str:
    """A check in one line: settings unlike most checks', then each block's numbers.

    Examples:
        >>> pairs_line({"pairs": [{"output": "out", "output_shape": [2], "input": "x",
        ...     "input_shape": [2], "max_abs_error": 0.0, "mismatched": 0, "total": 4}]},
        ...     (("mode", "full"),), (("mode", "full"),))
        'out (2,) / x (2,): max |diff| 0, 0 / 4 mismatched'
    """
    parts = [f"{k} {v}" for k, v in settings if (k, v) not in common]
    pairs = [p for p in record.get("pairs") or [] if isinstance(p, Mapping)]
    for pair in pairs[:4]:
        parts.append(
            f"{pair.get('output', '?')} {shape_text(pair.get('output_shape', []))} / "
            f"{pair.get('input', '?')} {shape_text(pair.get('input_shape', []))}: "
            f"max |diff| {format_value(pair.get('max_abs_error'))}, "
            f"{mismatched_text(pair)} mismatched"
        )
    if len(pairs) > 4:
        parts.append(f"… {len(pairs) - 4} more blocks")
    if isinstance(record.get("evaluations"), int):
        parts.append(f"{record['evaluations']} evaluations")
    parts += [str(n) for n in record.get("notes") or []]
    return " · ".join(parts)


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


def gradient_detail(
    record: Mapping[str, Any],
    name: str,
    run_settings: tuple[tuple[str, str], ...],
    take_heatmap: Callable[[], bool],
) -> GradientDetail:
    """The detail of a record with ``pairs``: settings, hints, blocks, the reproduce line.

    ``run_settings`` are the record's from :func:`all_settings`; ``take_heatmap``
    says whether the page can still afford a failing block's heatmap.

    Examples:
        >>> detail = gradient_detail({"kind": "gradient", "check": "check_gradients",
        ...     "mode": "full", "pairs": []}, "sin", (("mode", "full"),), lambda: True)
        >>> detail.settings
        (('check', 'check_gradients'), ('mode', 'full'))
        >>> print(detail.reproduce)
        gradcheck_kit.check_gradients(sin, inputs, mode='full')
    """
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
    hints = hint_texts(record)
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
        pairs=tuple(_pair_view(p, take_heatmap) for p in pairs),
        probes=table_of(probes) if isinstance(probes, list) else None,
        # The check's own line (importable function, saved inputs) when it wrote one.
        reproduce=record["reproduce"]
        if isinstance(record.get("reproduce"), str) and record["reproduce"]
        else f"gradcheck_kit.{check}({name}, {_subject_arguments(record)}, {arguments})",
    )


def _py(value: Any) -> str:
    """A setting as Python source for the reproduce line (floats round-trip)."""
    as_float = number(value)
    if isinstance(value, str) and math.isnan(as_float):
        return repr(value)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return repr(as_float)
