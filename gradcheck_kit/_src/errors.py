"""The exception hierarchy of gradcheck_kit.

Two families, so that callers can tell a wrong gradient from a wrong call:

* :class:`GradcheckError` (an :class:`AssertionError`): a check ran and the
  program under test failed it. pytest shows these as test failures.
* :class:`InvalidArgument` (a :class:`ValueError`): the check could not run
  because of how it was called. Raised before any computation or mutation.

This module only defines types; the text of messages is composed elsewhere.
"""

from __future__ import annotations

__all__ = [
    "GradcheckKitError",
    "GradcheckError",
    "GradientMismatchError",
    "NondeterministicFunctionError",
    "InvalidArgument",
    "UnsupportedInputError",
    "NonFiniteOutputError",
    "JacobianTooLargeError",
]


class GradcheckKitError(Exception):
    """Root of every exception raised by gradcheck_kit itself.

    Examples:
        >>> issubclass(GradientMismatchError, GradcheckKitError)
        True
    """


class GradcheckError(GradcheckKitError, AssertionError):
    """A check ran and failed: the gradients (or the training loop) are wrong.

    Subclasses :class:`AssertionError`, so pytest reports it as a failure.

    Examples:
        >>> isinstance(GradcheckError("x"), AssertionError)
        True
    """


class GradientMismatchError(GradcheckError):
    """Autograd's gradients disagree with the reference (finite differences or a manual derivative).

    The exception carries the full result as ``.result`` when one exists.

    Examples:
        >>> err = GradientMismatchError("Gradients are not close!")
        >>> err.result is None
        True
    """

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class NondeterministicFunctionError(GradcheckError):
    """The function returned different outputs for the same inputs.

    Finite differences are meaningless then; check with ``rng="replay"``.

    Examples:
        >>> issubclass(NondeterministicFunctionError, GradcheckError)
        True
    """

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class InvalidArgument(GradcheckKitError, ValueError):
    """A check was called wrongly (bad argument, unusable input or output).

    Examples:
        >>> isinstance(InvalidArgument("eps=-1 must be > 0"), ValueError)
        True
    """


class UnsupportedInputError(InvalidArgument):
    """An input or output of a kind the checker does not support yet (sparse, complex, ...).

    Examples:
        >>> issubclass(UnsupportedInputError, InvalidArgument)
        True
    """


class NonFiniteOutputError(InvalidArgument):
    """The function produced NaN or Inf at the point being checked.

    Examples:
        >>> issubclass(NonFiniteOutputError, ValueError)
        True
    """


class JacobianTooLargeError(InvalidArgument):
    """Materialising the full Jacobian would exceed the memory budget.

    Examples:
        >>> issubclass(JacobianTooLargeError, InvalidArgument)
        True
    """
