"""Autograd mechanics: known gradients, and a vector-Jacobian product."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk


def mean_of_scaled_square(x: torch.Tensor) -> torch.Tensor:
    y = x + 2  # AddBackward0
    z = y * y * 3  # MulBackward0
    return z.mean()  # MeanBackward0


@pytest.mark.gradcheck
def test_mean_of_scaled_square_has_gradient_4_5() -> None:
    x = torch.ones(2, 2, requires_grad=True)
    mean_of_scaled_square(x).backward()
    assert torch.allclose(x.grad, torch.full((2, 2), 4.5))
    # the same gradient, checked against finite differences at that point
    gk.assert_gradients_close(mean_of_scaled_square, torch.ones(2, 2, requires_grad=True))


def doubling(x: torch.Tensor) -> torch.Tensor:
    y = x * 2
    while y.detach().norm() < 1000:  # data-dependent loop: checked without vmap
        y = y * 2
    return y


@pytest.mark.gradcheck
def test_vector_jacobian_product_of_doubling() -> None:
    x = torch.tensor([0.3, -1.2, 0.8], requires_grad=True)
    y = doubling(x)
    v = torch.tensor([0.1, 1.0, 0.0001])
    y.backward(v)
    factor = (y / x).detach()[0]  # y = 2^k x, so J = 2^k I and J^T v = 2^k v
    assert torch.allclose(x.grad, factor * v)
    result = gk.assert_gradients_close(doubling, x.detach().requires_grad_())
    assert not result.vectorized  # Python control flow on values: the loop path was used
