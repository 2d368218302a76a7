"""Ask the ``pytest_gradcheck_record`` hooks for each record's ``extra`` fields.

The hooks are a project's code (:mod:`.hookspec`): whatever they do, the record
keeps its own fields and the run its report. Their answers are merged, made JSON
data and stored under the record's ``extra`` key; a hook that raises or answers
something other than a mapping costs only its record's extras, with a warning.
Imports no torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from gradcheck_kit.report.safe_records import json_safe, safe_text

__all__ = ["EXTRA_KEY", "GradcheckHookWarning", "add_extra_fields", "merge_answers"]

EXTRA_KEY = "extra"
"""The record key that holds what the hooks add (the schema leaves it open)."""


class GradcheckHookWarning(pytest.PytestWarning):
    """A ``pytest_gradcheck_record`` hook raised or answered something other than a mapping.

    Examples:
        >>> issubclass(GradcheckHookWarning, pytest.PytestWarning)
        True
    """


def merge_answers(answers: Iterable[object]) -> dict[str, Any]:
    """The hooks' answers as one JSON-ready dict; the first answer wins a key.

    pluggy lists the answers in call order, the nearest conftest first, so that
    one's value is kept.

    Raises:
        TypeError: An answer is neither a mapping nor ``None``.

    Examples:
        >>> merge_answers([{"team": "vision"}, None, {"team": "core", "sha": ("a", 1)}])
        {'team': 'vision', 'sha': ['a', 1]}
    """
    merged: dict[str, Any] = {}
    for answer in answers:
        if answer is None:
            continue
        if not isinstance(answer, Mapping):
            raise TypeError(f"expected a mapping of fields or None, got {type(answer).__name__}")
        for key, value in answer.items():
            merged.setdefault(safe_text(key), json_safe(value))
    return merged


def add_extra_fields(
    records: Iterable[dict[str, Any]], *, item: pytest.Item | None, config: pytest.Config
) -> None:
    """Store what the ``pytest_gradcheck_record`` hooks return under each record's ``extra``.

    Args:
        records: The records, changed in place; a record the hooks add nothing to
            is left exactly as it was (no empty ``extra``).
        item: The test the records belong to: its hook proxy calls only the
            conftests that apply to it. ``None`` for records made outside tests.
        config: The run's config.
    """
    hook = (item.ihook if item is not None else config.hook).pytest_gradcheck_record
    if not hook.get_hookimpls():
        return  # the usual case: nothing to ask, nothing to copy
    for record in records:
        try:
            answers = hook(record=MappingProxyType(record), item=item, config=config)
            fields = merge_answers(answers)
        except Exception as exc:  # the project's code: its failure must not cost the report
            _warn(
                f"pytest_gradcheck_record failed for {record.get('name')!r}: "
                f"{type(exc).__name__}: {exc}. The record is written without extra fields.",
                item,
            )
            continue
        if fields:
            record[EXTRA_KEY] = {**record.get(EXTRA_KEY, {}), **fields}


def _warn(text: str, item: pytest.Item | None) -> None:
    warning = GradcheckHookWarning(text)
    if item is not None:
        item.warn(warning)
    else:
        # At the session's end: pytest's warnings plugin catches it there for its summary.
        warnings.warn(warning, stacklevel=2)
