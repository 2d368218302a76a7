"""Shared argument checks that name the argument and the bad value.

Every public entry point validates its arguments here, before any computation
or mutation, so misuse is an :class:`InvalidArgument` that says what to change.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from .errors import InvalidArgument

__all__ = ["check_choice", "check_positive", "check_nonnegative", "check_int", "check_type"]


def check_type(expected: type | tuple[type, ...], value: Any, name: str) -> None:
    """Raise TypeError naming ``name`` unless ``value`` is an instance of ``expected``."""
    if not isinstance(value, expected):
        want = (
            " or ".join(t.__name__ for t in expected)
            if isinstance(expected, tuple)
            else expected.__name__
        )
        raise TypeError(f"{name}={value!r} must be {want}, not {type(value).__name__}.")


def check_choice(value: Any, choices: Collection[str], name: str) -> None:
    """Raise InvalidArgument unless ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise InvalidArgument(f"{name}={value!r} is not one of {options}.")


def check_positive(value: Any, name: str, *, allow_none: bool = True) -> None:
    """Raise InvalidArgument unless ``value`` is a finite number > 0 (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name}={value!r} must be a number > 0.")
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument(f"{name}={value!r} must be > 0.")


def check_nonnegative(value: Any, name: str, *, allow_none: bool = True) -> None:
    """Raise InvalidArgument unless ``value`` is a finite number >= 0 (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name}={value!r} must be a number >= 0.")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{name}={value!r} must be >= 0.")


def check_int(value: Any, name: str, *, min_value: int | None = None) -> None:
    """Raise InvalidArgument unless ``value`` is an int (not bool) >= ``min_value``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name}={value!r} must be an int.")
    if min_value is not None and value < min_value:
        raise InvalidArgument(f"{name}={value!r} must be >= {min_value}.")
