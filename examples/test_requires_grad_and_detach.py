"""requires_grad, detach() and no_grad() in a small regression.

Which tensors get gradients, what detach() cuts, and what no_grad() builds.

`w` and `b` require grad, the data `x` and the target `y` do not. After
`loss.backward()`, `x.grad` and `y.grad` stay None; `b = b.detach()` before the
forward pass cuts `b` off (its gradient stays None, and the loss's graph does not
reach the original `b`); under `torch.no_grad()` a result does not require grad.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk

pytestmark = pytest.mark.gradcheck


def make_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(4, 4)
    y = torch.randn(4, 1)
    w = torch.randn(4, 1, requires_grad=True)
    b = torch.randn(1, requires_grad=True)
    return x, y, w, b


def test_backward_gives_gradients_to_w_and_b_only() -> None:
    x, y, w, b = make_data()
    y_pred = torch.matmul(x, w) + b
    loss = (y_pred - y).pow(2).sum()
    gk.assert_grad_is_none(x, y, w, b)  # nothing computed yet
    gk.assert_requires_grad(w, b)
    gk.assert_graph_reaches(loss, {"w": w, "b": b})
    assert gk.graph_nodes(loss)[:3] == ["SumBackward0", "PowBackward0", "SubBackward0"]

    loss.backward()
    gk.assert_grad_is_none(x, y)
    assert w.grad is not None and w.grad.shape == (4, 1)
    assert b.grad is not None and b.grad.shape == (1,)
    # w.grad is d loss / d w = 2 x^T (x w + b - y)
    expected = 2 * x.T @ (x @ w.detach() + b.detach() - y)
    torch.testing.assert_close(w.grad, expected)


def test_detach_cuts_b_and_nothing_else() -> None:
    x, y, w, b_leaf = make_data()
    b = b_leaf.detach()  # stop b's gradient
    gk.assert_detached(b)
    gk.assert_shares_memory(b, b_leaf)  # detach() is a view, not a copy

    loss = (torch.matmul(x, w) + b - y).pow(2).sum()
    gk.assert_graph_reaches(loss, {"w": w})
    with pytest.raises(gk.errors.GraphCheckError, match="does not reach 1 of 2 tensors"):
        gk.assert_graph_reaches(loss, {"w": w, "b": b_leaf})

    loss.backward()
    gk.assert_grad_is_none(b, b_leaf)
    assert w.grad is not None


def test_the_check_finds_the_detach_in_a_forward_function() -> None:
    x, y, w, b = make_data()

    def loss_fn() -> torch.Tensor:
        bias = b.detach()  # the line the message points at
        return (torch.matmul(x, w) + bias - y).pow(2).sum()

    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_graph_reaches(loss_fn, {"w": w, "b": b})
    assert "detach returns a tensor without autograd history" in str(err.value)
    assert "bias = b.detach()" in str(err.value)


def test_no_grad_builds_no_graph() -> None:
    x, _, w, b = make_data()
    y_pred = torch.matmul(x, w) + b
    with torch.no_grad():
        y_eval = torch.matmul(x, w) + b  # the same computation, for evaluation
    assert y_pred.requires_grad and not y_eval.requires_grad
    gk.assert_no_graph(y_eval)

    @torch.no_grad()
    def evaluate(inputs: torch.Tensor) -> torch.Tensor:
        return torch.matmul(inputs, w) + b

    gk.assert_no_graph(evaluate, x)
    with pytest.raises(gk.errors.GraphCheckError, match="The evaluation built an autograd graph"):
        gk.assert_no_graph(lambda inputs: torch.matmul(inputs, w) + b, x)
