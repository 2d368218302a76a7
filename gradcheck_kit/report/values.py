"""Record values as the page's plain text: numbers, shapes, nested tables, leftover fields.

Shared by the page and every kind's detail. No markup is made here: every string
is plain text, escaped by the template.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMMON_KEYS",
    "MAX_TABLE_ROWS",
    "MAX_TEXT",
    "Field",
    "Table",
    "fields_of",
    "format_value",
    "hint_texts",
    "number",
    "shape_text",
    "table_of",
]

# Rows of a nested table shown before "... N more".
MAX_TABLE_ROWS = 50
# Characters of a nested value shown as JSON text.
MAX_TEXT = 2000
# Keys every kind shares; they are shown in the row, not again in the details.
COMMON_KEYS = frozenset({"kind", "schema_version", "name", "passed", "test_id", "duration_s"})


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


def number(value: Any) -> float:
    """A JSON number as a float; NaN for anything else (booleans included).

    Examples:
        >>> number(3), number("1e-3"), number(True)
        (3.0, 0.001, nan)
    """
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


def shape_text(shape: Any) -> str:
    """A shape as Python writes a tuple.

    Examples:
        >>> shape_text([2, 3]), shape_text([4]), shape_text([])
        ('(2, 3)', '(4,)', '()')
    """
    if isinstance(shape, Sequence) and not isinstance(shape, str):
        return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"
    return format_value(shape)


def table_of(items: Sequence[Any]) -> Table | None:
    """A list of flat objects as a table; ``None`` when it is not one.

    Examples:
        >>> table_of([{"a": 1}, {"a": 2, "b": 0.5}])
        Table(columns=('a', 'b'), rows=(('1', '—'), ('2', '0.5')), more=0)
        >>> table_of([1, 2]) is None
        True
    """
    if not items or not all(isinstance(item, Mapping) for item in items):
        return None
    columns = list(dict.fromkeys(str(k) for item in items for k in item))
    rows = tuple(
        tuple(format_value(item.get(c)) for c in columns) for item in items[:MAX_TABLE_ROWS]
    )
    return Table(tuple(columns), rows, max(0, len(items) - MAX_TABLE_ROWS))


def fields_of(record: Mapping[str, Any], skip: frozenset[str]) -> tuple[Field, ...]:
    """The record's other keys as a details table, nested lists of objects as tables.

    Keys in ``skip`` (what the kind's detail shows) and :data:`COMMON_KEYS` are left out.

    Examples:
        >>> [(f.key, f.value) for f in fields_of({"kind": "x", "eps": 1e-6, "a": ""}, frozenset())]
        [('eps', '1e-06')]
    """
    out: list[Field] = []
    for key, value in record.items():
        if key in skip or key in COMMON_KEYS or value is None or value in ("", [], {}):
            continue
        if key == "test" and isinstance(value, Mapping):
            out.append(Field("test", _test_text(value)))
            continue
        if isinstance(value, Sequence) and not isinstance(value, str):
            table = table_of(value)
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


def hint_texts(record: Mapping[str, Any]) -> list[str]:
    """The texts of a record's ``hints`` (objects with a ``text``), in order.

    Examples:
        >>> hint_texts({"hints": [{"kind": "factor", "text": "a missing factor of 2?"}, 3]})
        ['a missing factor of 2?']
    """
    return [
        str(h.get("text"))
        for h in record.get("hints") or []
        if isinstance(h, Mapping) and h.get("text")
    ]
