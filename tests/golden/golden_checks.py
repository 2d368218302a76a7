"""Deterministic checks of every record kind, run by test_golden_results.py with --gradcheck.

Not collected by the suite itself (the name does not start with ``test_``). Every input is
seeded and every mode is explicit, so the records are the same at every run on one build.
The engine's clock is replaced by one that ticks a fixed 0.1 ms a reading: the engine picks
a loop or one vmapped call, and sizes its batches, from how long a call took, and on a loaded
machine a real clock would change those choices (and the evaluation counts recorded).
"""

from __future__ import annotations

import pytest
import torch
from support import ddp_steps
from support.clock import steady_engine_clock
from torch import nn

import gradcheck_kit as gk


class _DoubledBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return 2 * grad * x.cos()


@pytest.fixture(autouse=True)
def _steady_engine_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    steady_engine_clock(monkeypatch)


def _x(*shape: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(*shape, generator=gen, dtype=torch.float64, requires_grad=True)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))


def test_full_mode_passes() -> None:
    gk.assert_gradients_close(torch.sin, _x(3, 2), mode="full")


def test_fast_mode_passes() -> None:
    gk.assert_gradients_close(lambda a: (a * a).sum(1), _x(4, 3), mode="fast", seed=1)


def test_a_wrong_backward_fails_in_full_mode() -> None:
    with pytest.raises(gk.GradientMismatchError):
        gk.assert_gradients_close(_DoubledBackward.apply, _x(5), mode="full")


def test_a_wrong_backward_fails_in_fast_mode() -> None:
    with pytest.raises(gk.GradientMismatchError):
        gk.assert_gradients_close(_DoubledBackward.apply, _x(5), mode="fast", seed=2)


def test_float32_native() -> None:
    x = _x(6).detach().float().requires_grad_()
    gk.assert_gradients_close(torch.tanh, x, mode="full", dtype="native")


def test_module_gradients() -> None:
    gk.assert_module_gradients(_net(), _x(2, 4), mode="full")


def test_manual_derivative_mismatch() -> None:
    with pytest.raises(gk.GradientMismatchError):
        gk.assert_matches_manual(lambda a: (a**3).sum(), lambda a: 2 * a**2, _x(4))


def test_second_order() -> None:
    gk.assert_second_order(torch.tanh, _x(3), mode="full")


def test_autograd_function_audit() -> None:
    with pytest.raises(AssertionError):
        gk.assert_autograd_function(_DoubledBackward, _x(4))


def test_graph_checks() -> None:
    x = _x(3)
    gk.assert_requires_grad(x)
    with pytest.raises(gk.errors.GraphCheckError):
        gk.assert_requires_grad(torch.ones(3))
    with pytest.raises(gk.errors.GraphCheckError):
        gk.assert_graph_reaches((x.detach() * 2).sum(), x)


def test_missing_zero_grad_is_caught() -> None:
    net = _net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(2, 4, generator=gen) for _ in range(3)]
    with pytest.raises(gk.errors.TrainingLoopError), gk.watch_training(net, optimizer):
        for batch in batches:
            net(batch).pow(2).sum().backward()
            optimizer.step()


def test_device_parity_with_one_device() -> None:
    gk.check_device_parity(_net(), lambda: _x(2, 4).detach())


def test_ddp_summed_loss_is_caught() -> None:
    with pytest.raises(gk.errors.DdpGradientError):
        gk.assert_ddp_gradients(
            ddp_steps.Net, ddp_steps.make_batch, step=ddp_steps.summed_loss_step
        )
