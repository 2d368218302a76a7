"""Validation against the package's JSON Schemas: with jsonschema where it is installed.

jsonschema is a test extra. Without it, the package's own standard-library validator
(:mod:`gradcheck_kit.report.validation`, itself tested against jsonschema) judges, so the
suite collects and runs with only the runtime dependencies installed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from gradcheck_kit.report import validation

try:
    import jsonschema
    from referencing import Registry, Resource
except ImportError:  # only the runtime dependencies: the package's validator judges
    jsonschema = None

HAVE_JSONSCHEMA = jsonschema is not None


def _load(path: str) -> dict[str, Any]:
    text = resources.files("gradcheck_kit").joinpath(path).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def results_schema() -> dict[str, Any]:
    """The per-check schema (``_src/schema.json``): ``{"schema_version", "results": [...]}``."""
    return _load("_src/schema.json")


@lru_cache(maxsize=1)
def document_validator() -> Any:
    """jsonschema's validator of the results document (needs jsonschema)."""
    assert jsonschema is not None, "jsonschema is not installed"
    document, per_check = _load("report/document_schema.json"), results_schema()
    # The document schema refers to the per-check schema's records by its $id.
    registry: Any = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in (document, per_check)
    )
    jsonschema.Draft202012Validator.check_schema(document)
    return jsonschema.Draft202012Validator(document, registry=registry)


def _strict(data: Any) -> Any:
    return json.loads(json.dumps(data, allow_nan=False))


def validate_document(document: dict[str, Any]) -> None:
    """Fail with the schema errors of a results document (after a strict JSON round trip)."""
    data = _strict(document)
    if jsonschema is not None:
        errors = sorted(document_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
        shown = [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    else:
        shown = [str(v) for v in validation.iter_violations(data)][:5]
    assert not shown, "\n".join(shown)


def validate_results(data: dict[str, Any]) -> None:
    """Fail with the schema errors of ``{"schema_version", "results": [...]}``."""
    data = _strict(data)
    schema = results_schema()
    if jsonschema is not None:
        jsonschema.Draft202012Validator(schema).validate(data)
        return
    shown = [str(v) for v in validation.iter_violations(data, schema)][:5]
    assert not shown, "\n".join(shown)
