"""assert_* wrappers: run a check, then fail through :func:`.raising.fail_unless_passed`.

Thin by design: no numerics here, only check + raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from .engine.options import GradientOptions
from .gradcheck import Wrt, check_gradients, check_module_gradients
from .raising import Msg, fail_unless_passed, gradient_error
from .results import GradcheckResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["assert_gradients_close", "assert_module_gradients", "raise_for_result"]


def raise_for_result(result: GradcheckResult, msg: Msg = None) -> None:
    """Raise the matching :class:`GradcheckError` for a failed result; do nothing otherwise.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> raise_for_result(gk.check_gradients(torch.sin, x))
    """
    __tracebackhide__ = True
    fail_unless_passed(result, gradient_error(result.status), msg)


def assert_gradients_close(
    fn: Callable[..., Any], inputs: Any, *, msg: Msg = None, **options: Unpack[GradientOptions]
) -> GradcheckResult:
    """Assert that ``fn``'s autograd gradients agree with finite differences.

    Takes the same arguments as :func:`check_gradients`, plus ``msg``: a string
    put before the report, or a callable that receives the report and returns
    the text to raise with.

    Returns:
        The passing :class:`GradcheckResult`.

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
    return fail_unless_passed(result, gradient_error(result.status), msg)


def assert_module_gradients(
    module: nn.Module,
    inputs: Any,
    *,
    loss_fn: Callable[[Any], Any] | None = None,
    wrt: Wrt = "parameters",
    msg: Msg = None,
    **options: Unpack[GradientOptions],
) -> GradcheckResult:
    """Assert that a module's gradients agree with finite differences.

    Takes the same arguments as :func:`check_module_gradients`, plus ``msg``.

    Returns:
        The passing :class:`GradcheckResult`.

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
    result = check_module_gradients(module, inputs, loss_fn=loss_fn, wrt=wrt, **options)
    return fail_unless_passed(result, gradient_error(result.status), msg)
