"""Two training loops from the same parameters: same trajectory, or the first step they part."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from support.fingerprint import fingerprint
from torch import nn

import gradcheck_kit as gk

X = torch.linspace(-3, 3, 13)
Y = 2 * X - 4 + 0.1 * torch.sin(7 * X)
LR = 0.01


def predict(p: torch.Tensor) -> torch.Tensor:
    return p[0] * X + p[1]


def by_hand(p: torch.Tensor, factor: float = 2.0) -> None:
    with torch.no_grad():
        d = factor * (predict(p) - Y) / X.numel()
        p -= LR * torch.stack([(d * X).sum(), d.sum()])


def by_autograd(p: torch.Tensor) -> None:
    p.grad = None
    ((predict(p) - Y) ** 2).mean().backward()
    with torch.no_grad():
        p -= LR * p.grad  # type: ignore[operator]


def accumulating(p: torch.Tensor) -> None:
    ((predict(p) - Y) ** 2).mean().backward()  # no zero_grad: gradients pile up
    with torch.no_grad():
        p -= LR * p.grad  # type: ignore[operator]


def functional(p: torch.Tensor) -> torch.Tensor:
    q = p.detach().requires_grad_()
    ((q[0] * X + q[1] - Y) ** 2).mean().backward()
    return p - LR * q.grad  # type: ignore[operator]


def _start() -> torch.Tensor:
    return torch.tensor([1.0, 0.0], requires_grad=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hand_written_and_autograd_loops_agree(dtype: torch.dtype) -> None:
    x, y = X.to(dtype), Y.to(dtype)

    def hand(p: torch.Tensor) -> None:
        with torch.no_grad():
            d = 2 * (p[0] * x + p[1] - y) / x.numel()
            p -= LR * torch.stack([(d * x).sum(), d.sum()])

    def auto(p: torch.Tensor) -> None:
        p.grad = None
        ((p[0] * x + p[1] - y) ** 2).mean().backward()
        with torch.no_grad():
            p -= LR * p.grad  # type: ignore[operator]

    p = _start().detach().to(dtype).requires_grad_()
    result = gk.assert_same_training(hand, auto, p, steps=300)
    assert result.steps_run == 300 and result.divergence is None
    assert result.dtype == str(dtype).removeprefix("torch.")
    assert 0 <= result.max_abs_error <= result.atol
    assert gk.check_same_training(by_hand, functional, _start(), steps=50).passed


def test_a_missing_factor_parts_at_step_one_with_a_hint() -> None:
    with pytest.raises(gk.errors.TrainingDivergenceError) as info:
        gk.assert_same_training(lambda p: by_hand(p, 1.0), by_autograd, _start(), steps=100)
    result = info.value.result
    assert isinstance(result, gk.results.SameTrainingResult)
    d = result.divergence
    assert d is not None and d.step == 1 and d.parameter == "params"
    assert d.abs_error == pytest.approx(abs(d.value_a - d.value_b))
    assert d.abs_error > d.allowed
    text = str(info.value)
    assert "First divergence after step 1 of 100, parameter 'params' at index" in text
    assert "missing factor of 2" in text
    assert result.steps_run == 1


def test_accumulated_gradients_part_at_step_two() -> None:
    result = gk.check_same_training(by_autograd, accumulating, _start(), steps=20)
    assert result.divergence is not None and result.divergence.step == 2
    assert [h.kind for h in result.hints] == ["carry_over"]
    assert "zero_grad" in result.summary()


def test_the_callers_parameters_grads_and_rngs_are_untouched() -> None:
    p = _start()
    p.grad = torch.tensor([5.0, 6.0])
    random.random()
    np.random.rand()
    before = fingerprint(p, X, Y)
    gk.check_same_training(by_hand, by_autograd, p, steps=10)
    gk.check_same_training(by_hand, accumulating, p, steps=10)
    assert fingerprint(p, X, Y) == before, before.diff(fingerprint(p, X, Y))


def test_both_loops_see_the_same_random_stream() -> None:
    def noisy_hand(p: torch.Tensor) -> None:
        with torch.no_grad():
            p -= LR * torch.randn(2)

    def noisy_autograd(p: torch.Tensor) -> None:
        p.grad = None
        (p * torch.randn(2)).sum().backward()
        with torch.no_grad():
            p -= LR * p.grad  # type: ignore[operator]

    assert gk.check_same_training(noisy_hand, noisy_autograd, _start(), steps=30, seed=3).passed


def _sgd_step(momentum: float) -> Any:
    optimizers: dict[int, torch.optim.Optimizer] = {}  # one per private copy

    def step(net: nn.Module) -> None:
        opt = optimizers.setdefault(
            id(net), torch.optim.SGD(net.parameters(), lr=0.05, momentum=momentum)
        )
        opt.zero_grad()
        net(X.unsqueeze(1)).sub(Y.unsqueeze(1)).pow(2).mean().backward()
        opt.step()

    return step


def test_module_loops_with_optimizers() -> None:
    torch.manual_seed(0)
    net = nn.Linear(1, 1)
    before = fingerprint(net)
    assert gk.check_same_training(_sgd_step(0.0), _sgd_step(0.0), net, steps=20).passed
    result = gk.check_same_training(_sgd_step(0.0), _sgd_step(0.9), net, steps=20)
    assert result.divergence is not None and result.divergence.step == 2
    assert result.parameters == ("weight", "bias")
    assert fingerprint(net) == before


def test_pytree_params() -> None:
    params = {"w": torch.tensor(1.0), "b": torch.tensor(0.0)}

    def step(p: dict[str, torch.Tensor], factor: float = 2.0) -> dict[str, torch.Tensor]:
        r = p["w"] * X + p["b"] - Y
        return {"w": p["w"] - LR * factor * (r * X).mean(), "b": p["b"] - LR * factor * r.mean()}

    assert gk.check_same_training(step, step, params, steps=5).passed
    result = gk.check_same_training(step, lambda p: step(p, 2.2), params, steps=5)
    assert result.divergence is not None and result.divergence.parameter in (
        "params['w']",
        "params['b']",
    )


def test_misuse() -> None:
    with pytest.raises(gk.InvalidArgument, match="steps=0 must be >= 1"):
        gk.check_same_training(by_hand, by_autograd, _start(), steps=0)
    with pytest.raises(gk.InvalidArgument, match="step_b=3 is not callable"):
        gk.check_same_training(by_hand, 3, _start(), steps=1)  # type: ignore[arg-type]
    with pytest.raises(gk.InvalidArgument, match="every leaf of params must be a floating"):
        gk.check_same_training(by_hand, by_autograd, (torch.ones(2), 3), steps=1)
    with pytest.raises(gk.InvalidArgument, match=r"returned str at step 1"):
        gk.check_same_training(by_hand, lambda p: "done", _start(), steps=1)
    with pytest.raises(gk.InvalidArgument, match=r"shape \(3,\) at step 1"):
        gk.check_same_training(by_hand, lambda p: torch.zeros(3), _start(), steps=1)


def test_a_step_that_raises_is_annotated_and_nothing_leaks() -> None:
    p = _start()
    before = fingerprint(p)

    calls: list[int] = []

    def broken(p: torch.Tensor) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("diverged")
        by_hand(p)

    with pytest.raises(RuntimeError, match="diverged") as info:
        gk.check_same_training(by_hand, broken, p, steps=50)
    assert any("broken at step 2" in n for n in getattr(info.value, "__notes__", []))
    assert fingerprint(p) == before
