"""assert_* wrappers: run a check, raise a GradcheckError carrying its text.

Thin by design: no numerics here, only check + raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .errors import (
    GradientMismatchError,
    NondeterministicFunctionError,
    OutputShapeChangedError,
)
from .gradcheck import check_gradients, check_module_gradients
from .results import GradCheckResult

__all__ = ["assert_gradients_close", "assert_module_gradients", "raise_for_result"]

Msg = str | Callable[[str], str] | None


def raise_for_result(result: GradCheckResult, msg: Msg = None) -> None:
    """Raise the matching :class:`GradcheckError` for a failed result; do nothing otherwise."""
    __tracebackhide__ = True
    if result.passed:
        return
    text = result.summary()
    if callable(msg):
        text = msg(text)
    elif msg is not None:
        text = f"{msg}\n\n{text}"
    if result.status == "nondeterministic":
        raise NondeterministicFunctionError(text, result)
    if result.status == "shape_changed":
        raise OutputShapeChangedError(text, result)
    raise GradientMismatchError(text, result)


def assert_gradients_close(
    fn: Callable[..., Any], inputs: Any, *, msg: Msg = None, **options: Any
) -> GradCheckResult:
    """Assert that ``fn``'s autograd gradients agree with finite differences.

    Takes the same arguments as :func:`check_gradients`, plus ``msg``: a string
    put before the report, or a callable that receives the report and returns
    the text to raise with.

    Returns:
        The passing :class:`GradCheckResult`.

    Raises:
        GradientMismatchError: the gradients differ; the message says where,
            by how much, the likely cause and how to reproduce.
        NondeterministicFunctionError: ``fn`` is stochastic (try ``rng="replay"``).
        OutputShapeChangedError: an output changes shape under a small step (a
            discrete selection): its gradient cannot be checked there.
        InvalidArgument: misuse, as in :func:`check_gradients`.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
        >>> _ = gk.assert_gradients_close(lambda w: (w @ w).trace(), w)
    """
    __tracebackhide__ = True
    result = check_gradients(fn, inputs, **options)
    raise_for_result(result, msg)
    return result


def assert_module_gradients(
    module: nn.Module, inputs: Any, *, msg: Msg = None, **options: Any
) -> GradCheckResult:
    """Assert that a module's gradients agree with finite differences.

    Takes the same arguments as :func:`check_module_gradients`, plus ``msg``.

    Returns:
        The passing :class:`GradCheckResult`.

    Raises:
        GradientMismatchError: a parameter's (or input's) gradient is wrong.
        NondeterministicFunctionError: the module is stochastic in its current
            mode (dropout in train mode: use ``rng="replay"`` or ``module.eval()``).
        InvalidArgument: misuse, as in :func:`check_module_gradients`.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> net = torch.nn.Linear(4, 2)
        >>> _ = gk.assert_module_gradients(net, torch.randn(3, 4), loss_fn=lambda y: y.pow(2).sum())
    """
    __tracebackhide__ = True
    result = check_module_gradients(module, inputs, **options)
    raise_for_result(result, msg)
    return result
