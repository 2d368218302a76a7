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
        value: What is there (shown short, as :attr:`got`, only when the violation is).
        message: Said instead of ``expected ..., got ...`` when that reads badly.

    Examples:
        >>> str(SchemaViolation("results[3].passed", "a boolean", 0))
        'results[3].passed: expected a boolean, got 0'
    """

    path: str
    expected: str
    # Formatted only when shown: most violations are alternatives of a oneOf that
    # another alternative satisfies, and json.dumps of each would double the time.
    value: Any = dataclasses.field(compare=False)
    message: str | None = None

    @property
    def got(self) -> str:
        """:attr:`value`, shown short: ``0``, ``"text"``, ``an object``."""
        return _show(self.value)

    def __str__(self) -> str:
        where = self.path or "the document"
        return f"{where}: {self.message or f'expected {self.expected}, got {self.got}'}"


def _show(value: Any) -> str:
    """A found value, short: a container by its type, a scalar as JSON."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return _literal(value)


def _literal(value: Any, limit: int = 40) -> str:
    """A value the schema names (const, enum), as JSON, cut at ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_JSON_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def _type_of(value: Any) -> str:
    """JSON's name for ``value``'s type, by exact type: ``bool`` is an ``int`` to isinstance."""
    name = _JSON_TYPES.get(type(value))
    if name is not None:
        return name
    for kind, json_name in _JSON_TYPES.items():  # subclasses, checked bool before int
        if isinstance(value, kind):
            return json_name
    return type(value).__name__


def _has_type(value: Any, name: str) -> bool:
    actual = _type_of(value)
    if actual == name:
        return True
    if name == "number":
        return actual == "integer"
    # JSON Schema counts 1.0 as an integer; json.loads reads it as a float.
    return name == "integer" and actual == "number" and float(value).is_integer()


def _json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON means it: ``true`` differs from ``1``, ``1`` equals ``1.0``."""
    kind_a, kind_b = _type_of(a), _type_of(b)
    if kind_a in ("integer", "number") and kind_b in ("integer", "number"):
        return bool(a == b)
    if kind_a != kind_b:
        return False
    if kind_a == "object":
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if kind_a == "array":
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _one_of(options: list[Any]) -> str:
    try:
        return _one_of_cached(tuple(options))
    except TypeError:  # an unhashable option (a list or object)
        return _one_of_cached.__wrapped__(tuple(options))


@cache
def _one_of_cached(options: tuple[Any, ...]) -> str:
    return "one of " + ", ".join(_literal(option) for option in options)


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
    found: list[SchemaViolation] = []
    _walk(value, schema, path, root, found)
    for violation in found:
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


# The walk appends to one list: plain calls, no generator per node, which made a
# document of 10,000 checks take seconds longer.
_Found = list[SchemaViolation]


def _walk(
    value: Any, schema: Mapping[str, Any] | bool, path: str, root: Mapping[str, Any], out: _Found
) -> None:
    if schema is True:
        return
    if schema is False:
        out.append(SchemaViolation(path, "nothing here", value))
        return
    _check(value, schema, path, root, out)


def _violations(value: Any, schema: Any, path: str, root: Mapping[str, Any]) -> _Found:
    found: _Found = []
    _walk(value, schema, path, root, found)
    return found


# Keywords of a schema about one value alone, checked in one call when they hold.
_LEAF_KEYWORDS = frozenset(
    {"type", "enum", "const", "minimum", "exclusiveMinimum", "description", "title"}
)


def _leaf_holds(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether a leaf schema holds: the fast path for the many numbers and strings."""
    if "type" in schema:
        names = schema["type"]
        if isinstance(names, list):
            if not any(_has_type(value, n) for n in names):
                return False
        elif not _has_type(value, names):
            return False
    if "const" in schema and not _json_equal(value, schema["const"]):
        return False
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        return False
    if _has_type(value, "number"):
        if "minimum" in schema and not value >= schema["minimum"]:
            return False
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            return False
    return True


def _check(
    value: Any, schema: Mapping[str, Any], path: str, root: Mapping[str, Any], out: _Found
) -> None:
    if schema.keys() <= _LEAF_KEYWORDS and _leaf_holds(value, schema):
        return
    if "$ref" in schema:
        target, target_root = _resolve(str(schema["$ref"]), root)
        _walk(value, target, path, target_root, out)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_has_type(value, n) for n in names):
            words = " or ".join(_TYPE_WORDS.get(str(n), str(n)) for n in names)
            out.append(SchemaViolation(path, words, value))
            return  # The other keywords would only restate the wrong type.
    if "const" in schema and not _json_equal(value, schema["const"]):
        out.append(SchemaViolation(path, _literal(schema["const"]), value))
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        out.append(SchemaViolation(path, _one_of(schema["enum"]), value))
    _check_number(value, schema, path, out)
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            wanted = f"a string of at least {schema['minLength']} characters"
            out.append(SchemaViolation(path, wanted, value))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            wanted = f"a string of at most {schema['maxLength']} characters"
            out.append(SchemaViolation(path, wanted, value))
    if isinstance(value, dict):
        _check_object(value, schema, path, root, out)
    if isinstance(value, list):
        _check_array(value, schema, path, root, out)
    _check_combinations(value, schema, path, root, out)


_BOUNDS: tuple[tuple[str, str, Callable[[Any, Any], bool]], ...] = (
    ("minimum", "a number >= {}", operator.ge),
    ("exclusiveMinimum", "a number > {}", operator.gt),
    ("maximum", "a number <= {}", operator.le),
    ("exclusiveMaximum", "a number < {}", operator.lt),
)


def _check_number(value: Any, schema: Mapping[str, Any], path: str, out: _Found) -> None:
    if not _has_type(value, "number"):
        return
    for keyword, words, holds in _BOUNDS:
        if keyword in schema and not holds(value, schema[keyword]):
            out.append(SchemaViolation(path, words.format(schema[keyword]), value))


def _check_object(
    value: dict[str, Any],
    schema: Mapping[str, Any],
    path: str,
    root: Mapping[str, Any],
    out: _Found,
) -> None:
    for key in schema.get("required", ()):
        if key not in value:
            out.append(
                SchemaViolation(
                    _key_path(path, key), "a value", None, "missing (the field is required)"
                )
            )
    properties: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            _walk(item, properties[key], _key_path(path, key), root, out)
        elif extra is False:
            known = ", ".join(properties) or "none"
            message = f"unknown field (the fields here: {known})"
            out.append(SchemaViolation(_key_path(path, key), "no such field", item, message))
        elif extra is not True:
            _walk(item, extra, _key_path(path, key), root, out)


def _check_array(
    value: list[Any], schema: Mapping[str, Any], path: str, root: Mapping[str, Any], out: _Found
) -> None:
    if len(value) < schema.get("minItems", 0):
        out.append(SchemaViolation(path, f"at least {schema['minItems']} items", len(value)))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        out.append(SchemaViolation(path, f"at most {schema['maxItems']} items", len(value)))
    prefix = schema.get("prefixItems", [])
    items = schema.get("items", True)
    for index, item in enumerate(value):
        if index < len(prefix):
            _walk(item, prefix[index], f"{path}[{index}]", root, out)
        elif items is not True:
            _walk(item, items, f"{path}[{index}]", root, out)


def _check_combinations(
    value: Any, schema: Mapping[str, Any], path: str, root: Mapping[str, Any], out: _Found
) -> None:
    for sub in schema.get("allOf", ()):
        _walk(value, sub, path, root, out)
    if "if" in schema:
        branch = "then" if not _violations(value, schema["if"], "", root) else "else"
        if branch in schema:
            _walk(value, schema[branch], path, root, out)
    for keyword in ("anyOf", "oneOf"):
        if keyword not in schema:
            continue
        failures = [_violations(value, sub, path, root) for sub in schema[keyword]]
        matched = sum(not f for f in failures)
        if matched == 0:
            out.append(_best(failures, path, value))
        elif keyword == "oneOf" and matched > 1:
            out.append(SchemaViolation(path, "exactly one of the allowed shapes", value))


def _best(failures: list[_Found], path: str, value: Any) -> SchemaViolation:
    """The violation to report when no alternative matched.

    An alternative that failed deeper inside the value got furthest (the value has
    its shape, one field is wrong): name that field. When every one failed at the
    value itself, list what each wanted: ``a number or one of "inf", "-inf", "nan"``.
    """
    deepest = max((f[0] for f in failures), key=lambda v: len(v.path))
    if len(deepest.path) > len(path):
        return deepest
    wanted = " or ".join(dict.fromkeys(f[0].expected for f in failures))
    return SchemaViolation(path, wanted, value)
