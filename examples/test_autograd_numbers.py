"""The autograd tutorial's numbers, checked three ways: by hand, by autograd, by finite differences.

The tutorial computes out = mean(3 (x + 2)^2) at x = ones(2, 2) and gets 4.5 in every
entry of x.grad, then a vector-Jacobian product y.backward(v) for a vector that is doubled
until its norm reaches 1000. Here the derivatives are written by hand and compared with
autograd and finite differences, so a wrong number would say which of the three is off.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk


def mean_of_scaled_square(x: torch.Tensor) -> torch.Tensor:
    y = x + 2
    z = y * y * 3
    return z.mean()


def its_gradient(x: torch.Tensor) -> torch.Tensor:
    return 6 * (x + 2) / x.numel()  # d/dx mean(3 (x+2)^2), by hand


@pytest.mark.gradcheck
@pytest.mark.parametrize(
    ("dtype", "policy"), [(torch.float32, "native"), (torch.float64, "float64")]
)
def test_the_gradient_is_4_5_everywhere(dtype: torch.dtype, policy: str) -> None:
    x = torch.ones(2, 2, dtype=dtype, requires_grad=True)
    assert torch.equal(its_gradient(x.detach()), torch.full((2, 2), 4.5, dtype=dtype))
    result = gk.assert_matches_manual(mean_of_scaled_square, its_gradient, x, dtype=policy)
    assert result.pairs[0].total == 4


@pytest.mark.gradcheck
def test_a_gradient_that_forgets_the_mean_is_off_by_the_number_of_entries() -> None:
    x = torch.ones(2, 2, requires_grad=True)
    result = gk.check_matches_manual(mean_of_scaled_square, lambda x: 6 * (x + 2), x)
    assert result.odd_one_out == "manual"
    assert "an extra factor of 4" in result.summary()


def doublings(x: torch.Tensor) -> int:
    """How many times doubling(x) doubles x: the Jacobian is 2**k times the identity."""
    k, norm = 1, float(x.detach().norm()) * 2
    while norm < 1000:
        norm, k = norm * 2, k + 1
    return k


def doubling(x: torch.Tensor) -> torch.Tensor:
    y = x * 2
    while y.detach().norm() < 1000:
        y = y * 2
    return y


@pytest.mark.gradcheck
def test_the_vector_jacobian_product_of_doubling() -> None:
    x = torch.tensor([0.3, -1.2, 0.8], requires_grad=True)
    v = torch.tensor([0.1, 1.0, 0.0001])
    doubling(x).backward(v)
    assert doublings(x) == 10
    assert torch.allclose(x.grad, torch.tensor([102.4, 1024.0, 0.1024]))  # the tutorial's

    # J^T v by hand, against autograd's vector-Jacobian products and finite differences
    def vjp(grad_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return grad_output * 2.0 ** doublings(x)

    result = gk.assert_matches_manual(
        doubling, inputs=x.detach().requires_grad_(), manual_vjp=vjp, dtype="native"
    )
    assert result.interface == "vjp" and result.pairs[0].total == 9
