"""A custom autograd.Function audit's detail: one table row per property, one per block."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gradcheck_kit.report.gradient_detail import mismatched_text
from gradcheck_kit.report.values import Table, format_value, hint_texts, shape_text

__all__ = ["AUDIT_KEYS", "AuditDetail", "audit_detail"]

# The keys an audit detail shows; the rest go to the row's fields.
AUDIT_KEYS = frozenset(
    {"check", "dtype", "dtype_policy", "seed", "findings", "gradient", "second_order"}
    | {"hint", "hints", "notes"}
)


@dataclass(frozen=True)
class AuditDetail:
    """A custom autograd.Function audit: one table row per property checked, one per block."""

    settings: tuple[tuple[str, str], ...]
    hints: tuple[str, ...]
    findings: Table | None
    blocks: Table | None
    notes: tuple[str, ...]
    template: str = "autograd_function"


def audit_detail(record: Mapping[str, Any]) -> AuditDetail:
    """The audit's findings and its nested checks' Jacobian blocks as tables, not JSON.

    Examples:
        >>> detail = audit_detail({"check": "check_autograd_function", "findings": [
        ...     {"check": "gradient", "status": "failed", "text": "backward is wrong"}]})
        >>> detail.settings
        (('check', 'check_autograd_function'),)
        >>> detail.findings.rows
        (('gradient', '', '', 'failed', 'backward is wrong'),)
    """
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
                    f"{pair.get('output')} {shape_text(pair.get('output_shape'))}",
                    f"{pair.get('input')} {shape_text(pair.get('input_shape'))}",
                    format_value(pair.get("max_abs_error")),
                    mismatched_text(pair),
                    "passed" if pair.get("passed") is True else "failed",
                )
            )
    settings = [
        (label, format_value(record[key]))
        for key, label in (("check", "check"), ("dtype", "dtype"), ("seed", "seed"))
        if record.get(key) is not None
    ]
    hints = hint_texts(record)
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
