"""Shared argument checks that name the argument and the bad value.

Every public entry point validates its arguments here, before any computation
or mutation, so misuse is an :class:`InvalidArgument` that says what to change
(hypothesis' ``check_type(int, min_dims, "min_dims")``). Numbers are real
numbers: a bool, a NaN or an infinity is refused wherever a number is asked for.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .errors import InvalidArgument, InvalidArgumentType

__all__ = [
    "check_type",
    "check_choice",
    "check_number",
    "check_positive",
    "check_nonnegative",
    "check_int",
    "check_bool",
    "check_callable",
    "check_msg",
    "check_keywords",
]


def check_type(expected: type | tuple[type, ...], value: Any, name: str) -> None:
    """Raise InvalidArgumentType naming ``name`` unless ``value`` is an instance of ``expected``.

    Examples:
        >>> check_type(int, 3, "steps")
        >>> check_type((int, float), "3", "atol")
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgumentType: atol='3' must be int or float, not str.
    """
    if not isinstance(value, expected):
        kinds = expected if isinstance(expected, tuple) else (expected,)
        want = " or ".join("None" if t is type(None) else t.__name__ for t in kinds)
        raise InvalidArgumentType(f"{name}={value!r} must be {want}, not {type(value).__name__}.")


def check_choice(value: Any, choices: Collection[str], name: str) -> None:
    """Raise InvalidArgument unless ``value`` is one of ``choices``.

    Examples:
        >>> check_choice("fulll", ("auto", "full", "fast"), "mode")
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: mode='fulll' is not one of 'auto', 'full', 'fast'.
    """
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise InvalidArgument(f"{name}={value!r} is not one of {options}.")


def check_number(
    value: Any,
    name: str,
    *,
    min_value: float = 0.0,
    exclusive: bool = False,
    allow_none: bool = True,
) -> None:
    """Raise InvalidArgument unless ``value`` is a finite real number >= ``min_value``.

    With ``exclusive`` it must be > ``min_value``; None passes when ``allow_none``.
    Bools are not numbers here (``atol=True`` is a slip, not 1.0).

    Examples:
        >>> check_number(1e-5, "atol")
        >>> check_number(float("nan"), "atol")
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: atol=nan must be >= 0.
    """
    if value is None and allow_none:
        return
    bound = f"{'>' if exclusive else '>='} {min_value:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{name}={value!r} must be a number {bound}.")
    if not math.isfinite(value) or value < min_value or (exclusive and value == min_value):
        raise InvalidArgument(f"{name}={value!r} must be {bound}.")


def check_positive(value: Any, name: str, *, allow_none: bool = True) -> None:
    """Raise InvalidArgument unless ``value`` is a finite number > 0 (or None when allowed).

    Examples:
        >>> check_positive(0.0, "eps")
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: eps=0.0 must be > 0.
    """
    check_number(value, name, exclusive=True, allow_none=allow_none)


def check_nonnegative(value: Any, name: str, *, allow_none: bool = True) -> None:
    """Raise InvalidArgument unless ``value`` is a finite number >= 0 (or None when allowed).

    Examples:
        >>> check_nonnegative(True, "rtol")
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: rtol=True must be a number >= 0.
    """
    check_number(value, name, allow_none=allow_none)


def check_int(value: Any, name: str, *, min_value: int | None = None) -> None:
    """Raise InvalidArgument unless ``value`` is an int (not bool) >= ``min_value``.

    Examples:
        >>> check_int(1.5, "seed", min_value=0)
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: seed=1.5 must be an int.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name}={value!r} must be an int.")
    if min_value is not None and value < min_value:
        raise InvalidArgument(f"{name}={value!r} must be >= {min_value}.")


def check_bool(value: Any, name: str, *, allow_none: bool = False) -> None:
    """Raise InvalidArgument unless ``value`` is True or False (or None when allowed).

    Examples:
        >>> check_bool("yes", "second_order", allow_none=True)
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: second_order='yes' must be None, True or False.
    """
    if isinstance(value, bool) or (value is None and allow_none):
        return
    want = "None, True or False" if allow_none else "True or False"
    raise InvalidArgument(f"{name}={value!r} must be {want}.")


def check_callable(value: object, name: str, advice: str = "") -> Callable[..., Any]:
    """Return ``value`` if it is callable, else raise InvalidArgument; ``advice`` says what to pass.

    Examples:
        >>> check_callable(abs, "fn")(-2)
        2
        >>> check_callable(3.0, "fn", "pass the function to check first")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: fn=3.0 is not callable; pass the function ... first.
    """
    if not callable(value):
        # a tensor's or a module's repr runs over many lines: the start names it
        sep = "; " if advice else ""
        raise InvalidArgument(f"{name}={value!r:.60} is not callable{sep}{advice}.")
    return value


def check_msg(msg: object) -> None:
    """Raise InvalidArgumentType unless ``msg`` is a string, a callable or None.

    Examples:
        >>> check_msg(3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgumentType: msg=3 must be a string, a callable ... or None.
    """
    if msg is not None and not isinstance(msg, str) and not callable(msg):
        raise InvalidArgumentType(
            f"msg={msg!r} must be a string, a callable taking the message, or None."
        )


def check_keywords(given: Mapping[str, object], declared: Any, where: str) -> None:
    """Raise InvalidArgumentType for a keyword ``where`` does not take, guessing the one meant.

    ``declared`` is the ``TypedDict`` of the keywords ``where`` takes: mypy
    catches a misspelled one at the call, this catches it in untyped code.

    Examples:
        >>> from typing import TypedDict
        >>> class Options(TypedDict, total=False):
        ...     mode: str
        >>> check_keywords({"mdoe": "full"}, Options, "check_gradients")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgumentType: check_gradients() got ... did you mean 'mode'?
    """
    known = declared.__required_keys__ | declared.__optional_keys__
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidArgumentType(
                f"{where}() got an unexpected keyword argument {key!r}{guess}"
            )
