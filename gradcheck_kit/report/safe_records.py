"""Make a check's record safe to keep, send and write: text only, JSON only, one record at a time.

A record is the ``to_dict()`` of a check, and parts of it come from user code: a
check's ``name`` may be any object (``name=MyOp()``), or a string holding a lone
surrogate (U+D800 alone) that UTF-8 cannot encode. Written as is, one such record
makes ``json.dumps`` or the UTF-8 file write raise at the end of the run, and the
whole report is lost. Here every record becomes plain JSON data first:

* strings are kept, with unencodable characters escaped (a lone U+D800 becomes the
  six characters backslash, ``ud800``);
* dict keys and any other object become their ``str()`` (escaped the same way);
* non-finite floats become ``"inf"``, ``"-inf"``, ``"nan"``, as the schema says.

A record that still cannot be serialised (its ``str()`` raises, it nests too
deeply) becomes a stub of kind :data:`RECORD_ERROR_KIND` carrying the error text
and what could be saved of the record (name, test, verdict), so one bad record
costs one row of the report, not the report.

No third-party imports: the pytest plugin uses it in every run with ``--gradcheck``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "RECORD_ERROR_KIND",
    "safe_text",
    "json_safe",
    "stub_record",
    "safe_record",
    "safe_records",
]

RECORD_ERROR_KIND = "record_error"
"""The ``kind`` of a stub that stands for a record which could not be made JSON."""

# Deeper than any record a check makes; deeper nesting is a user object gone wrong.
_MAX_DEPTH = 64
# Record fields worth saving into a stub, each made safe on its own.
_STUB_FIELDS = ("name", "test_id", "check", "test")


def safe_text(value: object) -> str:
    """``value`` as text that UTF-8 can encode: ``str()``, lone surrogates escaped.

    Args:
        value: Any object; a ``str()`` that raises gives a placeholder naming the type.

    Returns:
        A string that ``str.encode("utf-8")`` accepts.

    Examples:
        >>> safe_text("sin"), safe_text(3), len(safe_text(chr(0xD800))), safe_text(chr(0xD800))[1:]
        ('sin', '3', 6, 'ud800')
    """
    if not isinstance(value, str):
        try:
            value = str(value)
        except Exception as exc:  # a user's __str__ that raises: name the object instead
            value = f"<{type(value).__name__} object: str() raised {type(exc).__name__}>"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # backslashreplace writes a lone surrogate as the text \udXXX, readable and reversible
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def json_safe(value: Any, *, _depth: int = 0) -> Any:
    """``value`` as JSON data: dicts with text keys, lists, text, numbers, booleans, None.

    Args:
        value: A record or any part of one.

    Returns:
        A copy made of JSON types only (see the module's docstring for the rules).

    Raises:
        ValueError: The value nests deeper than a record can.

    Examples:
        >>> json_safe({"name": object, 1: float("inf"), "pairs": ("a", None)})
        {'name': "<class 'object'>", '1': 'inf', 'pairs': ['a', None]}
    """
    if _depth > _MAX_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # an int subclass (an IntEnum) as the plain number
    if isinstance(value, float):
        return _float(float(value))
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, Mapping):
        return {safe_text(k): json_safe(v, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, _depth=_depth + 1) for v in value]
    return safe_text(value)


def stub_record(record: object, error: BaseException) -> dict[str, Any]:
    """The ``record_error`` stub for ``record``, which failed with ``error``.

    Keeps the fields that are safe on their own (``name``, ``test_id``, ``check``,
    ``test``), the verdict when it is a boolean, and the record's own kind as
    ``record_kind``.

    Examples:
        >>> stub_record({"kind": "gradient", "name": "f", "passed": False}, TypeError("bad"))
        {'kind': 'record_error', 'name': 'f', 'error': 'TypeError: bad', 'passed': False, \
'record_kind': 'gradient'}
    """
    stub: dict[str, Any] = {
        "kind": RECORD_ERROR_KIND,
        "name": "record",
        "error": safe_text(f"{type(error).__name__}: {error}"),
    }
    if isinstance(record, Mapping):
        for key in _STUB_FIELDS:
            if key not in record:
                continue
            try:
                value = json_safe(record[key])
                json.dumps(value, allow_nan=False)
            except Exception:
                continue  # this field is the bad part: leave it out
            stub[key] = value
        passed = record.get("passed")
        # Keep the verdict: a failed check must not vanish behind its record's error.
        stub["passed"] = passed if isinstance(passed, bool) else None
        kind = record.get("kind")
        stub["record_kind"] = safe_text(kind) if kind is not None else None
    if not isinstance(stub["name"], str):
        stub["name"] = safe_text(stub["name"])
    return stub


def safe_record(record: object) -> dict[str, Any]:
    """One record as JSON data, or a ``record_error`` stub saying why it cannot be.

    Never raises (short of ``KeyboardInterrupt``): this runs at the end of a
    pytest run, where an exception would cost every other record.

    Args:
        record: A record (the ``to_dict()`` of a check), as built by user code.

    Returns:
        A dict that ``json.dumps(..., allow_nan=False)`` accepts and UTF-8 can hold.

    Examples:
        >>> safe_record({"kind": "gradient", "name": chr(0xD800), "passed": True})["name"][1:]
        'ud800'
        >>> class Loud:
        ...     def __str__(self):
        ...         raise RuntimeError("no")
        >>> safe_record({"kind": "gradient", "name": Loud()})["name"]
        '<Loud object: str() raised RuntimeError>'
        >>> bad = {"kind": "gradient", "name": "deep", "passed": False}
        >>> bad["x"] = bad
        >>> stub = safe_record(bad)
        >>> stub["kind"], stub["name"], stub["passed"], stub["error"][:10]
        ('record_error', 'deep', False, 'ValueError')
    """
    try:
        if not isinstance(record, Mapping):
            raise TypeError(f"a record is a dict, got {type(record).__name__}")
        safe = json_safe(record)
        if "name" in safe and not isinstance(safe["name"], str):
            safe["name"] = safe_text(safe["name"])  # a name is text, whatever was passed
        json.dumps(safe, allow_nan=False)
        return dict(safe)
    except (RecursionError, Exception) as exc:
        return stub_record(record, exc)


def safe_records(records: Iterable[object]) -> list[dict[str, Any]]:
    """Every record through :func:`safe_record`, in order.

    Examples:
        >>> [r["kind"] for r in safe_records([{"kind": "gradient"}, "not a record"])]
        ['gradient', 'record_error']
    """
    return [safe_record(record) for record in records]
