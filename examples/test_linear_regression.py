"""Linear regression with a hand-written gradient, then with autograd, then SGD.

The blog post this project started from fits y = 2x - 4 + noise on x = -10..10 by
gradient descent. It first writes the derivative by hand (``grad_fn``), then the same
loop with ``loss.backward()``, and finds exactly the same result; finally
``torch.optim.SGD`` converges to the closed-form least-squares line. Each of those
claims is one assertion here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradcheck_kit as gk

A, B, N = 2, -4, 10


def make_data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """x = -10..10 step 1 (21 points), y = 2x - 4 + noise (seeded, so the test is repeatable)."""
    x = torch.arange(-N, N + 1, 1, dtype=dtype)
    noise = torch.randn(2 * N + 1, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return x, A * x + B + noise


# --- the model, the loss and the derivatives written by hand, as in the post ---------------
def model(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return w * x + b


def loss_fn(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((p - y) ** 2).mean()  # mean squared error


def dloss_fn(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 2 * (p - y) / p.size(0)


def dmodel_dw(x: torch.Tensor, _w: torch.Tensor, _b: torch.Tensor) -> torch.Tensor:
    return x


def dmodel_db(_x: torch.Tensor, _w: torch.Tensor, _b: torch.Tensor) -> float:
    return 1.0


def grad_fn(
    x: torch.Tensor, y: torch.Tensor, p: torch.Tensor, w: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    dloss_dtp = dloss_fn(p, y)
    dloss_dw = dloss_dtp * dmodel_dw(x, w, b)
    dloss_db = dloss_dtp * dmodel_db(x, w, b)
    return torch.stack([dloss_dw.sum(), dloss_db.sum()])


@pytest.mark.gradcheck
@pytest.mark.parametrize(
    ("dtype", "policy"), [(torch.float64, "float64"), (torch.float32, "native")]
)
def test_grad_fn_agrees_with_autograd_and_finite_differences(
    dtype: torch.dtype, policy: str
) -> None:
    x, y = make_data(dtype)

    def loss(params: torch.Tensor) -> torch.Tensor:
        w, b = params
        return loss_fn(model(x, w, b), y)

    def by_hand(params: torch.Tensor) -> torch.Tensor:
        w, b = params
        return grad_fn(x, y, model(x, w, b), w, b)

    params = torch.tensor([1.0, 0.0], dtype=dtype, requires_grad=True)
    gk.assert_matches_manual(loss, by_hand, params, dtype=policy)


@pytest.mark.gradcheck
def test_a_forgotten_inner_derivative_is_named() -> None:
    x, y = make_data(torch.float64)

    def loss(params: torch.Tensor) -> torch.Tensor:
        w, b = params
        return loss_fn(model(x, w, b), y)

    def forgot_dmodel_dw(params: torch.Tensor) -> torch.Tensor:
        w, b = params
        dloss_dtp = dloss_fn(model(x, w, b), y)
        return torch.stack([dloss_dtp.sum(), dloss_dtp.sum()])  # dmodel_dw = x is missing

    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(gk.GradientMismatchError) as info:
        gk.assert_matches_manual(loss, forgot_dmodel_dw, params)
    message = str(info.value)
    print(message)  # what a user sees, with -s
    assert (
        "your derivative disagrees with both autograd and finite differences at index (0,)"
        in message
    )
    assert info.value.result.pairs[0].manual_wrong == 1  # d/db is right, d/dw is not


@pytest.mark.gradcheck
def test_the_manual_and_the_autograd_loop_follow_one_trajectory() -> None:
    x, y = make_data()
    learning_rate = 1e-3

    def manual_step(params: torch.Tensor) -> None:
        w, b = params
        p = model(x, w, b)
        # autograd refuses an in-place update of a leaf that requires grad; no_grad says
        # this update is not part of the model
        with torch.no_grad():
            params -= learning_rate * grad_fn(x, y, p, w, b)

    def autograd_step(params: torch.Tensor) -> None:
        if params.grad is not None:
            params.grad.zero_()  # 1
        p = model(x, *params)
        loss = loss_fn(p, y)
        loss.backward()  # 2
        with torch.no_grad():
            params -= learning_rate * params.grad  # 3

    params = torch.tensor([1.0, 0.0], requires_grad=True)  # 4
    result = gk.assert_same_training(manual_step, autograd_step, params, steps=2001)
    assert result.steps_run == 2001
    assert params.tolist() == [1.0, 0.0]  # the loops trained copies


@pytest.mark.gradcheck
def test_sgd_converges_to_the_closed_form_fit() -> None:
    x, y = make_data()
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    optimizer = torch.optim.SGD([params], lr=1e-2)  # 1
    for _ in range(401):
        loss = loss_fn(model(x, *params), y)
        optimizer.zero_grad()  # 2
        loss.backward()
        optimizer.step()  # 3

    xs, ys = x.double().numpy(), y.double().numpy()
    slope = np.cov(xs, ys, ddof=0)[0][1] / np.var(xs)
    intercept = ys.mean() - slope * xs.mean()
    w, b = params.tolist()
    # the intercept converges as 0.98**epochs (lr * 2): within 1e-3 of |b| after 401 epochs
    assert w == pytest.approx(slope, abs=1e-4)
    assert b == pytest.approx(intercept, abs=5e-3)
    # The post's formula np.cov(x, y)[0][1] / np.var(x) mixes np.cov's default ddof=1 with
    # np.var's ddof=0: it overstates the slope by 21/20, which no training loop converges to.
    blog_slope = np.cov(xs, ys)[0][1] / np.var(xs)
    assert blog_slope == pytest.approx(slope * 21 / 20)
