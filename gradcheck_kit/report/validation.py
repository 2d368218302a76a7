"""Check a results document against its JSON Schema, with errors that name the field.

``jsonschema`` is only a test dependency, so this module validates the subset of
JSON Schema (draft 2020-12) that ``document_schema.json`` and ``_src/schema.json``
use: ``type``, ``enum``, ``const``, ``required``, ``properties``,
``additionalProperties``, ``items``, ``prefixItems``, ``minItems``/``maxItems``,
``minimum``/``maximum`` (and their ``exclusive`` forms), ``minLength``/``maxLength``,
``allOf``/``anyOf``/``oneOf``, ``if``/``then``/``else`` and ``$ref`` (inside a schema or to
the other schema by its file name). Types are JSON's, exactly: ``true`` is not an
integer, ``0`` is not a boolean, although Python's ``bool`` is an ``int``.

Imports nothing beyond the standard library, like the rest of the report.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

from gradcheck_kit.report.document import DocumentError

__all__ = [
    "SUPPORTED_KEYWORDS",
    "SchemaViolation",
    "check_document",
    "document_schema",
    "iter_violations",
    "is_valid",
]

SUPPORTED_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "const",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "allOf",
        "anyOf",
        "oneOf",
        "if",
        "then",
        "else",
        "$ref",
    }
)
"""Keywords that constrain values here; annotations (``description``, ``$id`` ...) are ignored."""

_TYPE_WORDS = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")


@dataclasses.dataclass(frozen=True)
class SchemaViolation:
    """One place where a value breaks its schema.

    Attributes:
        path: Where, from the document's top: ``results[3].passed`` (empty for the top).
        expected: What the schema wants there, in words: ``a boolean``.
        got: What is there, shown short: ``0``.
        message: Said instead of ``expected ..., got ...`` when that reads badly.

    Examples:
        >>> str(SchemaViolation("results[3].passed", "a boolean", "0"))
        'results[3].passed: expected a boolean, got 0'
    """

    path: str
    expected: str
    got: str
    message: str | None = None

    def __str__(self) -> str:
        where = self.path or "the document"
        return f"{where}: {self.message or f'expected {self.expected}, got {self.got}'}"


def _show(value: Any, limit: int = 40) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_of(value: Any) -> str:
    """JSON's name for ``value``'s type: the bool check comes first (``bool`` is an ``int``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _has_type(value: Any, name: str) -> bool:
    actual = _type_of(value)
    if name == "number":
        return actual in ("integer", "number")
    if name == "integer":
        # JSON Schema counts 1.0 as an integer; json.loads reads it as a float.
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == name


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON means it: ``true`` differs from ``1``, ``1`` equals ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if _has_type(a, "number") and _has_type(b, "number"):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _key_path(path: str, key: str) -> str:
    step = f".{key}" if _IDENTIFIER.match(key) else f"[{json.dumps(key, ensure_ascii=False)}]"
    return (path + step).lstrip(".")


@cache
def _schemas() -> dict[str, dict[str, Any]]:
    """The shipped schemas, by the file name at the end of their ``$id``."""
    package = resources.files("gradcheck_kit")
    out = {}
    for name in ("report/document_schema.json", "_src/schema.json"):
        schema = json.loads(package.joinpath(name).read_text(encoding="utf-8"))
        out[str(schema["$id"]).rsplit("/", 1)[-1]] = schema
    return out


def document_schema() -> dict[str, Any]:
    """The JSON Schema of a results document (``report/document_schema.json``).

    Examples:
        >>> document_schema()["properties"]["schema_version"]
        {'const': 2}
    """
    return _schemas()["document-2.json"]


def _resolve(ref: str, root: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The schema ``ref`` points at, and the schema document it lives in."""
    file, _, pointer = ref.partition("#")
    if file:
        root = _schemas()[file.rsplit("/", 1)[-1]]
    node: Any = root
    for part in filter(None, pointer.split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node, root


def iter_violations(
    value: Any,
    schema: Mapping[str, Any] | bool | None = None,
    *,
    path: str = "",
    root: Mapping[str, Any] | None = None,
) -> Iterator[SchemaViolation]:
    """Every place where ``value`` breaks ``schema``, outermost first.

    Args:
        value: Parsed JSON (dicts, lists, strings, numbers, booleans, ``None``).
        schema: A schema or subschema; default the document schema.
        path: The path of ``value`` in its document, prefixed to every violation's.
        root: The schema document that ``#/...`` references point into; default
            ``schema`` itself.

    Yields:
        :class:`SchemaViolation` s; none when ``value`` is valid.

    Examples:
        >>> schema = {"type": "object", "properties": {"passed": {"type": "boolean"}}}
        >>> [str(v) for v in iter_violations({"passed": 0}, schema)]
        ['passed: expected a boolean, got 0']
    """
    if schema is None:
        schema = document_schema()
    if root is None:
        root = schema if isinstance(schema, Mapping) else {}
    # Overlapping subschemas (a record's common shape and its kind's) see the same
    # field: its first violation is enough.
    seen: set[str] = set()
    for violation in _walk(value, schema, path, root):
        if violation.path not in seen:
            seen.add(violation.path)
            yield violation


def is_valid(value: Any, schema: Mapping[str, Any] | bool | None = None) -> bool:
    """Whether ``value`` follows ``schema`` (default the document schema).

    Examples:
        >>> is_valid(True, {"type": "integer"}), is_valid(1.0, {"type": "integer"})
        (False, True)
    """
    return next(iter_violations(value, schema), None) is None


def check_document(document: Mapping[str, Any], *, source: str = "<document>") -> None:
    """Refuse a document that breaks ``document_schema.json``, naming the field.

    Meant for a document as :func:`gradcheck_kit.report.document.load_document`
    returns it (upgraded to the current version, ``summary`` recomputed), so the
    fields checked are those a person could have edited.

    Args:
        document: The parsed document.
        source: How to name it in the message (usually its path).

    Raises:
        DocumentError: ``'<source>' does not follow the results schema:
            results[3].passed: expected a boolean, got 0`` (and how many more).

    Examples:
        >>> from gradcheck_kit.report.document import make_document
        >>> check_document(make_document([{"kind": "training", "name": "fit", "passed": True}]))
        >>> try:
        ...     check_document(make_document([{"kind": "training", "name": "fit", "passed": 0}]))
        ... except DocumentError as exc:
        ...     print(str(exc).split(": ", 1)[1])
        results[0].passed: expected a boolean or null, got 0
    """
    violations = iter_violations(document)
    first = next(violations, None)
    if first is None:
        return
    more = sum(1 for _ in violations)
    tail = f" (and {more} more)" if more else ""
    raise DocumentError(f"'{source}' does not follow the results schema: {first}{tail}")


def _walk(
    value: Any, schema: Mapping[str, Any] | bool, path: str, root: Mapping[str, Any]
) -> Iterator[SchemaViolation]:
    if schema is True:
        return
    if schema is False:
        yield SchemaViolation(path, "nothing here", _show(value))
        return
    yield from _check(value, schema, path, root)


def _matches(value: Any, schema: Any, root: Mapping[str, Any]) -> bool:
    return next(_walk(value, schema, "", root), None) is None


def _check(
    value: Any, schema: Mapping[str, Any], path: str, root: Mapping[str, Any]
) -> Iterator[SchemaViolation]:
    if "$ref" in schema:
        target, target_root = _resolve(str(schema["$ref"]), root)
        yield from _walk(value, target, path, target_root)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_has_type(value, n) for n in names):
            words = " or ".join(_TYPE_WORDS.get(str(n), str(n)) for n in names)
            yield SchemaViolation(path, words, _show(value))
            return  # The other keywords would only restate the wrong type.
    if "const" in schema and not _json_equal(value, schema["const"]):
        yield SchemaViolation(path, _show(schema["const"]), _show(value))
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        options = ", ".join(_show(e) for e in schema["enum"])
        yield SchemaViolation(path, f"one of {options}", _show(value))
    yield from _check_number(value, schema, path)
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            yield SchemaViolation(
                path, f"a string of at least {schema['minLength']} characters", _show(value)
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield SchemaViolation(
                path, f"a string of at most {schema['maxLength']} characters", _show(value)
            )
    if isinstance(value, dict):
        yield from _check_object(value, schema, path, root)
    if isinstance(value, list):
        yield from _check_array(value, schema, path, root)
    yield from _check_combinations(value, schema, path, root)


def _check_number(value: Any, schema: Mapping[str, Any], path: str) -> Iterator[SchemaViolation]:
    if not _has_type(value, "number"):
        return
    bounds: tuple[tuple[str, str, Callable[[Any, Any], bool]], ...] = (
        ("minimum", "a number >= {}", operator.ge),
        ("exclusiveMinimum", "a number > {}", operator.gt),
        ("maximum", "a number <= {}", operator.le),
        ("exclusiveMaximum", "a number < {}", operator.lt),
    )
    for keyword, words, holds in bounds:
        if keyword in schema and not holds(value, schema[keyword]):
            yield SchemaViolation(path, words.format(schema[keyword]), _show(value))


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], path: str, root: Mapping[str, Any]
) -> Iterator[SchemaViolation]:
    for key in schema.get("required", ()):
        if key not in value:
            yield SchemaViolation(
                _key_path(path, key), "a value", "nothing", "missing (the field is required)"
            )
    properties: Mapping[str, Any] = schema.get("properties", {})
    for key, item in value.items():
        if key in properties:
            yield from _walk(item, properties[key], _key_path(path, key), root)
        elif "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            if extra is False:
                known = ", ".join(properties) or "none"
                yield SchemaViolation(
                    _key_path(path, key),
                    "no such field",
                    _show(item),
                    f"unknown field (the fields here: {known})",
                )
            else:
                yield from _walk(item, extra, _key_path(path, key), root)


def _check_array(
    value: list[Any], schema: Mapping[str, Any], path: str, root: Mapping[str, Any]
) -> Iterator[SchemaViolation]:
    if len(value) < schema.get("minItems", 0):
        yield SchemaViolation(path, f"at least {schema['minItems']} items", f"{len(value)}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        yield SchemaViolation(path, f"at most {schema['maxItems']} items", f"{len(value)}")
    prefix = schema.get("prefixItems", [])
    for index, item in enumerate(value):
        here = f"{path}[{index}]"
        if index < len(prefix):
            yield from _walk(item, prefix[index], here, root)
        elif "items" in schema:
            yield from _walk(item, schema["items"], here, root)


def _check_combinations(
    value: Any, schema: Mapping[str, Any], path: str, root: Mapping[str, Any]
) -> Iterator[SchemaViolation]:
    for sub in schema.get("allOf", ()):
        yield from _walk(value, sub, path, root)
    if "if" in schema:
        branch = "then" if _matches(value, schema["if"], root) else "else"
        if branch in schema:
            yield from _walk(value, schema[branch], path, root)
    for keyword in ("anyOf", "oneOf"):
        if keyword not in schema:
            continue
        failures = [list(_walk(value, sub, path, root)) for sub in schema[keyword]]
        matched = sum(not f for f in failures)
        if matched == 0:
            yield _best(failures, path, value)
        elif keyword == "oneOf" and matched > 1:
            yield SchemaViolation(path, "exactly one of the allowed shapes", _show(value))


def _best(failures: list[list[SchemaViolation]], path: str, value: Any) -> SchemaViolation:
    """The violation to report when no alternative matched.

    An alternative that failed deeper inside the value got furthest (the value has
    its shape, one field is wrong): name that field. When every one failed at the
    value itself, list what each wanted: ``a number or one of "inf", "-inf", "nan"``.
    """
    deepest = max((f[0] for f in failures), key=lambda v: len(v.path))
    if len(deepest.path) > len(path):
        return deepest
    wanted = " or ".join(dict.fromkeys(f[0].expected for f in failures))
    return SchemaViolation(path, wanted, _show(value))
