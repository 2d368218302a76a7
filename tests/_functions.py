"""Functions with known-correct and deliberately wrong backward formulas, shared by tests."""

from __future__ import annotations

from typing import Any

import torch


def _custom(forward: Any, backward: Any, name: str) -> Any:
    """A torch.autograd.Function with the given forward and backward(x, grad) formulas."""

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return forward(x)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return backward(x, grad)

    _Fn.__name__ = name
    _Fn.__qualname__ = name
    return _Fn.apply


square_ok = _custom(lambda x: x * x, lambda x, g: 2 * x * g, "SquareOk")
square_half = _custom(lambda x: x * x, lambda x, g: x * g, "SquareHalf")  # missing factor 2
square_sign = _custom(lambda x: x * x, lambda x, g: -2 * x * g, "SquareSign")
cube_region = _custom(
    lambda x: x**3,
    lambda x, g: torch.where(x < 0, 2 * x * x, 3 * x * x) * g,  # wrong only for x < 0
    "CubeRegion",
)
exp_zero = _custom(torch.exp, lambda x, g: torch.zeros_like(g), "ExpZero")
# Right when grad_output is all ones (a scalar loss), wrong anywhere else.
sum_squares_ignores_grad = _custom(
    lambda x: (x * x).sum(), lambda x, g: 2 * x, "SumSquaresIgnoresGrad"
)
cube_detaches_grad = _custom(lambda x: x**3, lambda x, g: g.detach() * 3 * x**2, "CubeDetachesGrad")
sin_bends_grad = _custom(torch.sin, lambda x, g: g.abs() * torch.cos(x), "SinBendsGrad")


class OneEntryWrong(torch.autograd.Function):
    """sin with the derivative of one element (index 417) doubled."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        out = grad * torch.cos(x)
        out = out.clone()
        out.view(-1)[417] *= 2
        return out


class TransposedMatmul(torch.autograd.Function):
    """f(W, a) = W @ a with dW computed as the transpose of the right answer."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w, a)
        return w @ a

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, a = ctx.saved_tensors
        right = torch.outer(grad, a)
        return right.T.contiguous(), w.T @ grad


class LoneSecondOutputIgnored(torch.autograd.Function):
    """(sin x, sum x); backward drops the gradient of the sum unless sin's is defined too.

    Like ``native_group_norm`` in torch 2.13, whose backward ignores a gradient that
    reaches it through the mean output alone.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x)
        return torch.sin(x), x.sum()

    @staticmethod
    def backward(
        ctx: Any, grad_sin: torch.Tensor | None, grad_sum: torch.Tensor | None
    ) -> torch.Tensor | None:
        (x,) = ctx.saved_tensors
        if grad_sin is None:
            return None
        out = grad_sin * torch.cos(x)
        if grad_sum is not None:
            out = out + grad_sum
        return out
