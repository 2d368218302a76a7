"""One way to fail: every ``assert_*`` ends in :func:`fail_unless_passed`.

The checks return results, which are error data; this is the boundary that
turns a failed one into an exception (as ``torch.testing`` turns its
``ErrorMeta`` into one): it asks the result for its text, lets the caller's
``msg`` rewrite it, and raises the assertion's error carrying the result. Like
chex's assertion decorator, it gives every assertion the same ``msg=``
semantics and hides its own frame from pytest's tracebacks. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from .errors import (
    GradcheckError,
    GradientMismatchError,
    NondeterministicFunctionError,
    OutputShapeChangedError,
)

__all__ = ["Msg", "Verdict", "apply_msg", "fail_unless_passed", "gradient_error"]

Msg = str | Callable[[str], str] | None
"""An assertion's ``msg=``: text put before the message, or a function that rewrites it."""


class Verdict(Protocol):
    """What an assertion needs of a result: its verdict and its text."""

    @property
    def passed(self) -> bool:
        """Whether the check passed."""

    def summary(self) -> str:
        """The text a failure is raised with."""


V = TypeVar("V", bound=Verdict)

# A result whose status says no derivative was compared raises its own error: a
# stochastic fn or a shape change is not a wrong gradient.
_STATUS_ERRORS: dict[str, type[GradcheckError]] = {
    "nondeterministic": NondeterministicFunctionError,
    "shape_changed": OutputShapeChangedError,
}


def apply_msg(text: str, msg: Msg) -> str:
    r"""Put ``msg`` before ``text``, or let a callable ``msg`` rewrite it (assert_close's ``msg``).

    Examples:
        >>> apply_msg("Gradients are not close!", "after step 3")
        'after step 3\n\nGradients are not close!'
        >>> apply_msg("Gradients are not close!", str.upper)
        'GRADIENTS ARE NOT CLOSE!'
    """
    if callable(msg):
        return msg(text)
    return f"{msg}\n\n{text}" if msg is not None else text


def gradient_error(status: str) -> type[GradcheckError]:
    """The error a failed derivative check raises, by its ``status``.

    Examples:
        >>> gradient_error("mismatch").__name__, gradient_error("nondeterministic").__name__
        ('GradientMismatchError', 'NondeterministicFunctionError')
    """
    return _STATUS_ERRORS.get(status, GradientMismatchError)


def fail_unless_passed(result: V, error: type[GradcheckError], msg: Msg = None) -> V:
    """Return a passed ``result``; raise ``error(text, result)`` for a failed one.

    ``text`` is ``result.summary()`` rewritten by ``msg`` (:func:`apply_msg`).

    Examples:
        >>> from gradcheck_kit._src.errors import GraphCheckError
        >>> from gradcheck_kit._src.results import GraphCheckResult
        >>> ok = GraphCheckResult(name="f", check="assert_x", passed=True)
        >>> fail_unless_passed(ok, GraphCheckError) is ok
        True
        >>> bad = GraphCheckResult(name="f", check="assert_x", passed=False, message="broken")
        >>> fail_unless_passed(bad, GraphCheckError, "in test_x")
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: in test_x
        <BLANKLINE>
        broken
    """
    __tracebackhide__ = True
    if result.passed:
        return result
    raise error(apply_msg(result.summary(), msg), result)
