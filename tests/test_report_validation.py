"""The standard-library schema validator: same verdicts as jsonschema, errors naming the field."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any

import pytest
from _schemas import HAVE_JSONSCHEMA
from hypothesis import given, settings
from hypothesis import strategies as st
from support import samples
from test_report_document import _validator, every_kind

from gradcheck_kit.report.document import DocumentError, make_document
from gradcheck_kit.report.validation import (
    SUPPORTED_KEYWORDS,
    check_document,
    is_valid,
    iter_violations,
)

# Keywords that only describe or identify; they constrain nothing.
ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}


def messages(value: Any, schema: dict[str, Any] | None = None) -> list[str]:
    return [str(v) for v in iter_violations(value, schema)]


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    return make_document(
        [*every_kind(), samples.gradient_record("g", passed=True, test_id="a.py::t")],
        environment=samples.sample_environment(),
        duration_s=1.5,
    )


def document() -> dict[str, Any]:
    return copy.deepcopy(_document())


def test_every_keyword_the_shipped_schemas_use_is_supported() -> None:
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                used.add(key)
                if key in ("properties", "$defs"):
                    for sub in value.values():
                        walk(sub)
                elif key not in ("enum", "const", "required", *ANNOTATIONS - {"$defs"}):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    package = resources.files("gradcheck_kit")
    for name in ("report/document_schema.json", "_src/schema.json"):
        walk(json.loads(package.joinpath(name).read_text(encoding="utf-8")))
    assert used - ANNOTATIONS <= SUPPORTED_KEYWORDS, used - ANNOTATIONS - SUPPORTED_KEYWORDS


def test_a_document_of_every_kind_is_valid() -> None:
    assert messages(document()) == []
    check_document(document())


@pytest.mark.parametrize(
    ("value", "schema", "expected"),
    [
        # bool is an int in Python, never in JSON
        (0, {"type": "boolean"}, ["the document: expected a boolean, got 0"]),
        (True, {"type": "integer"}, ["the document: expected an integer, got true"]),
        (False, {"type": "number"}, ["the document: expected a number, got false"]),
        (1.0, {"type": "integer"}, []),
        (1.5, {"type": "integer"}, ["the document: expected an integer, got 1.5"]),
        (1, {"const": True}, ["the document: expected true, got 1"]),
        (True, {"enum": [1, 2]}, ["the document: expected one of 1, 2, got true"]),
        (2.0, {"const": 2}, []),
        ([1], {"enum": [[2], "a"]}, ['the document: expected one of [2], "a", got an array']),
        ([2.0], {"enum": [[2], "a"]}, []),
        (
            "x",
            {"type": ["string", "null"], "minLength": 2},
            ['the document: expected a string of at least 2 characters, got "x"'],
        ),
        (-1, {"type": "integer", "minimum": 0}, ["the document: expected a number >= 0, got -1"]),
        (0, {"exclusiveMinimum": 0}, ["the document: expected a number > 0, got 0"]),
        ([1], {"minItems": 2}, ["the document: expected at least 2 items, got 1"]),
        (
            {"a": {"b": [1, "2"]}},
            {"properties": {"a": {"properties": {"b": {"items": {"type": "integer"}}}}}},
            ['a.b[1]: expected an integer, got "2"'],
        ),
        (
            {"x y": 1},
            {"additionalProperties": {"type": "string"}},
            ['["x y"]: expected a string, got 1'],
        ),
        (
            {"a": 1, "b": 2},
            {"properties": {"a": {}}, "additionalProperties": False},
            ["b: unknown field (the fields here: a)"],
        ),
        ({}, {"required": ["name"]}, ["name: missing (the field is required)"]),
        (
            "x",
            {"oneOf": [{"type": "number"}, {"enum": ["inf", "nan"]}]},
            ['the document: expected a number or one of "inf", "nan", got "x"'],
        ),
        (
            {"kind": "t", "n": "1"},
            {
                "if": {"properties": {"kind": {"const": "t"}}},
                "then": {"properties": {"n": {"type": "integer"}}},
            },
            ['n: expected an integer, got "1"'],
        ),
        (
            {"kind": "u", "n": "1"},
            {"if": {"properties": {"kind": {"const": "t"}}}, "then": False},
            [],
        ),
    ],
)
def test_violations_name_the_field_what_was_wanted_and_what_was_found(
    value: Any, schema: dict[str, Any], expected: list[str]
) -> None:
    assert messages(value, schema) == expected
    assert is_valid(value, schema) is (not expected)


def test_passed_0_in_a_record_is_named_by_its_path() -> None:
    doc = document()
    doc["results"][3]["passed"] = 0
    with pytest.raises(DocumentError) as info:
        check_document(doc, source="edited.json")
    assert str(info.value).startswith(
        "'edited.json' does not follow the results schema: results[3].passed: expected a boolean"
    )
    assert str(info.value).endswith("got 0")


def test_a_reference_into_the_per_check_schema_is_followed() -> None:
    doc = document()
    gradient = next(i for i, r in enumerate(doc["results"]) if r["kind"] == "gradient")
    doc["results"][gradient]["pairs"][0]["worst"][0]["abs_error"] = "big"
    doc["results"][gradient]["test"] = {"outcome": "maybe"}
    assert messages(doc) == [
        f"results[{gradient}].test.outcome: expected one of "
        '"passed", "failed", "error", "skipped", "xfailed", "xpassed", got "maybe"',
        f"results[{gradient}].pairs[0].worst[0].abs_error: "
        'expected a number or one of "inf", "-inf", "nan", got "big"',
    ]


def test_the_count_of_further_violations_is_given() -> None:
    doc = document()
    for record in doc["results"]:
        record["passed"] = "yes"
    with pytest.raises(DocumentError, match=rf"\(and {len(doc['results']) - 1} more\)$"):
        check_document(doc)


# Values a person editing the file might type, and the places they might type them.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.5, 1.0, -2.5])
    | st.sampled_from(["", "x", "inf", "nan", "gradient", "training", "error", "passed"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


@lru_cache(maxsize=1)
def _all_paths() -> list[tuple[Any, ...]]:
    return [p for p in _paths(_document()) if p and p[0] != "summary"]


@settings(max_examples=200, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 10**6), json_values, st.booleans()), min_size=1, max_size=3
    )
)
@pytest.mark.skipif(not HAVE_JSONSCHEMA, reason="jsonschema (a test extra) is not installed")
def test_the_same_verdict_as_jsonschema_on_edited_documents(
    edits: list[tuple[int, Any, bool]],
) -> None:
    doc = document()
    paths = _all_paths()
    for pick, value, delete in edits:
        *parents, last = paths[pick % len(paths)]
        node: Any = doc
        try:
            for step in parents:
                node = node[step]
            if delete and isinstance(node, dict):
                node.pop(last, None)
            else:
                node[last] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this place
    ours = messages(doc)
    theirs = sorted(_validator().iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert (ours == []) == (theirs == []), (ours, [e.message for e in theirs])
