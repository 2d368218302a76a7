"""A hand-written autograd.Function, checked against finite differences.

Copy this pattern for your own custom ops: one assertion checks the whole backward.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import gradcheck_kit as gk


class SmoothReLU(torch.autograd.Function):
    """softplus(x) = log(1 + exp(x)), with its derivative sigmoid(x) written by hand."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


class SmoothReLUMissingFactor(SmoothReLU):
    """The same op with a bug: the inner derivative 0.5 of softplus(0.5 x) was forgotten."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(0.5 * x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(0.5 * x)  # should be 0.5 * sigmoid(0.5 x)


@pytest.mark.gradcheck
def test_smooth_relu_backward_is_right() -> None:
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    gk.assert_gradients_close(SmoothReLU.apply, x)


@pytest.mark.gradcheck
def test_smooth_relu_in_float32_as_it_runs_in_training() -> None:
    x = torch.randn(64, 32, requires_grad=True)  # float32, as in a model
    gk.assert_gradients_close(SmoothReLU.apply, x, dtype="native")


@pytest.mark.gradcheck
def test_the_checker_names_the_bug() -> None:
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    with pytest.raises(gk.GradientMismatchError, match="extra factor of 2") as info:
        gk.assert_gradients_close(SmoothReLUMissingFactor.apply, x)
    print(info.value)  # the message a user sees, with -s
