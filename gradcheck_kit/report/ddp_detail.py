"""A DDP check's detail: what differs, on which rank and step, and the failure of a rank."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradcheck_kit.report.values import Table, format_value, hint_texts

__all__ = ["DDP_KEYS", "DdpDetail", "ddp_detail"]

# The keys a DDP detail shows; the rest go to the row's fields.
DDP_KEYS = frozenset(
    {"check", "world_size", "backend", "steps", "optimizer_steps", "dtype", "rtol", "atol"}
    | {"seed", "leaves", "across_ranks", "rank_failure", "failed_rank", "hint", "hints", "notes"}
)
# Rows shown per table: the worst first; the JSON keeps every one.
MAX_ROWS = 50
_WHAT = {"grad": "gradient", "param": "parameter after step", "buffer": "buffer"}
_HEADERS = ("tensor", "what", "rank", "step", "mismatched", "max |diff|", "allowed", "rank value")


@dataclass(frozen=True)
class DdpDetail:
    """The settings, hints, a rank's failure, and the tensors that differ as tables."""

    settings: tuple[tuple[str, str], ...]
    hints: tuple[str, ...]
    failure: str
    differences: Table | None
    across: Table | None
    notes: tuple[str, ...]
    template: str = "ddp"


def _value(leaf: Mapping[str, Any]) -> str:
    missing = leaf.get("missing")
    return f"missing on {missing}" if missing else format_value(leaf.get("value"))


def _rows(leaves: Any, failing_only: bool) -> tuple[tuple[str, ...], ...]:
    chosen = [
        leaf
        for leaf in leaves or []
        if isinstance(leaf, Mapping) and (not failing_only or leaf.get("mismatched"))
    ]
    chosen.sort(key=lambda leaf: -(leaf.get("mismatched") or 0))
    return tuple(
        (
            format_value(leaf.get("parameter")),
            _WHAT.get(str(leaf.get("what")), format_value(leaf.get("what"))),
            format_value(leaf.get("rank")),
            format_value(leaf.get("step")),
            f"{format_value(leaf.get('mismatched'))} / {format_value(leaf.get('numel'))}",
            format_value(leaf.get("max_abs_error")),
            format_value(leaf.get("allowed")),
            (leaf.get("missing") and f"missing on {leaf['missing']}")
            or format_value(leaf.get("value")),
        )
        for leaf in chosen[:MAX_ROWS]
    )


def ddp_detail(record: Mapping[str, Any]) -> DdpDetail:
    """The comparison as tables: against one process, and between ranks.

    Examples:
        >>> detail = ddp_detail({"world_size": 2, "leaves": [{"parameter": "fc.weight",
        ...     "what": "grad", "rank": 1, "step": 1, "mismatched": 6, "numel": 6,
        ...     "max_abs_error": 0.5, "allowed": 1e-6, "value": 0.5}]})
        >>> detail.settings, detail.differences.rows[0][:4]
        ((('ranks', '2'),), ('fc.weight', 'gradient', '1', '1'))
    """
    settings = [
        (label, format_value(record[key]))
        for key, label in (
            ("world_size", "ranks"),
            ("backend", "backend"),
            ("steps", "steps"),
            ("optimizer_steps", "optimizer steps"),
            ("dtype", "dtype"),
            ("rtol", "rtol"),
            ("atol", "atol"),
            ("seed", "seed"),
        )
        if record.get(key) is not None
    ]
    compared = record.get("compared_with_reference") is not False
    own = _rows(record.get("leaves"), failing_only=True) if compared else ()
    across = _rows(record.get("across_ranks"), failing_only=False)
    failure = record.get("rank_failure")
    return DdpDetail(
        settings=tuple(settings),
        hints=tuple(hint_texts(record)),
        failure=failure if isinstance(failure, str) else "",
        differences=Table(_HEADERS, own) if own else None,
        across=Table(_HEADERS, across) if across else None,
        notes=tuple(str(n) for n in record.get("notes") or [] if n),
    )
