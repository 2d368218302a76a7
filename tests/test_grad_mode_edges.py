"""Checks whose function needs autograd itself, and checks called inside inference_mode.

A gradient penalty calls ``torch.autograd.grad`` inside the function; torch's
gradcheck passes it, so every re-evaluation must give it grad mode. A check
called inside ``torch.inference_mode()`` still needs autograd for its copies.
"""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk

MODES = ["full", "fast"]


def _x(n: int = 5) -> torch.Tensor:
    return torch.linspace(-1.0, 1.2, n, dtype=torch.float64).requires_grad_()


def gradient_penalty(x: torch.Tensor) -> torch.Tensor:
    """y + |dy/dx|^2 for y = sum(x^3): differentiable, built with autograd.grad."""
    y = (x**3).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    return (g**2).sum() + y


def gradient_penalty_wrong(x: torch.Tensor) -> torch.Tensor:
    """The same, but the inner gradient is detached: its term's derivative is lost."""
    y = (x**3).sum()
    (g,) = torch.autograd.grad(y, x, retain_graph=True)  # no create_graph: g is a constant
    return (g**2).sum() + y


def inner_backward(x: torch.Tensor) -> torch.Tensor:
    """Calls backward() inside, on a copy: the stored .grad is a constant to autograd."""
    z = x.detach().requires_grad_()
    (z**2).sum().backward()
    assert z.grad is not None
    return x * z.grad


@pytest.mark.parametrize("mode", MODES)
def test_a_function_calling_autograd_grad_inside_is_checked_like_torch_does(mode: str) -> None:
    x = _x()
    assert torch.autograd.gradcheck(gradient_penalty, (x,))
    result = gk.check_gradients(gradient_penalty, x, mode=mode)
    assert result.passed, result.summary()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn", [gradient_penalty_wrong, inner_backward])
def test_a_wrong_gradient_built_with_autograd_inside_fails_with_a_verdict(mode: str, fn) -> None:
    x = _x()
    assert not torch.autograd.gradcheck(fn, (x,), raise_exception=False)
    result = gk.check_gradients(fn, x, mode=mode)
    assert not result.passed and result.status == "mismatch"


def test_a_function_using_autograd_inside_keeps_the_caller_grad_mode() -> None:
    x = _x()
    with torch.no_grad():
        result = gk.check_gradients(gradient_penalty, x)
        assert not torch.is_grad_enabled()
    assert result.passed and x.grad is None


@pytest.mark.parametrize("mode", MODES)
def test_a_check_called_inside_inference_mode_gives_the_right_verdict(mode: str) -> None:
    x = _x()
    with torch.inference_mode():
        good = gk.check_gradients(torch.sin, x, mode=mode)
        bad = gk.check_gradients(
            lambda t: torch.sin(t) + (torch.cos(t) - torch.cos(t).detach()) * 0.5, x, mode=mode
        )
        assert torch.is_inference_mode_enabled()
    assert good.passed, good.summary()
    assert not bad.passed


def test_inputs_created_inside_inference_mode_can_be_checked_inside_it() -> None:
    with torch.inference_mode():
        x = torch.linspace(0.1, 1.0, 4, dtype=torch.float64).requires_grad_()
        assert gk.check_gradients(torch.exp, x).passed
        assert gk.check_second_order(torch.exp, x).passed
        module = torch.nn.Linear(3, 2).double()
        assert gk.check_module_gradients(module, torch.ones(2, 3, dtype=torch.float64)).passed


def test_an_inference_tensor_used_outside_inference_mode_gets_an_error_saying_why() -> None:
    with torch.inference_mode():
        x = torch.linspace(0.1, 1.0, 4, dtype=torch.float64)
    with pytest.raises(gk.InvalidArgument, match=r"created under torch.inference_mode\(\)"):
        gk.check_gradients(torch.exp, x)


def test_the_result_says_that_evaluations_ran_with_grad() -> None:
    result = gk.check_gradients(gradient_penalty, _x())
    assert any("uses autograd inside" in note for note in result.notes)
    plain = gk.check_gradients(torch.sin, _x())
    assert not any("uses autograd inside" in note for note in plain.notes)
