"""check_module_gradients / assert_module_gradients: parameters, inputs, frozen layers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from support.fingerprint import fingerprint
from torch import nn

import gradcheck_kit as gk


class HalfGradLinear(nn.Module):
    """A linear layer whose weight gradient is half the right one."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        class _Mm(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
                ctx.save_for_backward(w, a)
                return a @ w.T

            @staticmethod
            def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                w, a = ctx.saved_tensors
                return 0.5 * g.T @ a, g @ w

        return _Mm.apply(self.weight, x)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_parameters_pass_and_are_named() -> None:
    result = gk.check_module_gradients(make_net(), torch.randn(5, 3), mode="full")
    assert result.passed, result.summary()
    assert [p.input for p in result.pairs] == [
        "params/0.weight",
        "params/0.bias",
        "params/2.weight",
        "params/2.bias",
    ]
    assert result.check == "check_module_gradients"


def test_wrt_inputs_and_both() -> None:
    x = torch.randn(5, 3, requires_grad=True)
    r_in = gk.check_module_gradients(make_net(), x, wrt="inputs", mode="full")
    assert [p.input for p in r_in.pairs] == ["inputs[0]"]
    r_both = gk.check_module_gradients(
        make_net(), x, wrt="both", loss_fn=lambda y: y.sum(), mode="full"
    )
    assert len(r_both.pairs) == 5 and r_both.passed


def test_frozen_parameters_are_not_checked() -> None:
    net = make_net()
    net[0].requires_grad_(False)
    result = gk.check_module_gradients(net, torch.randn(5, 3), mode="full")
    assert [p.input for p in result.pairs] == ["params/2.weight", "params/2.bias"]


def test_wrong_parameter_gradient_is_caught_and_named() -> None:
    result = gk.check_module_gradients(HalfGradLinear(), torch.randn(4, 3), mode="full")
    assert not result.passed
    assert [p.input for p in result.pairs if not p.passed] == ["params/weight"]
    assert "factor" in [h.kind for h in result.hints]
    with pytest.raises(gk.GradientMismatchError, match="params/weight"):
        gk.assert_module_gradients(HalfGradLinear(), torch.randn(4, 3))


def test_fast_mode_on_a_module() -> None:
    assert gk.check_module_gradients(make_net(), torch.randn(5, 3), mode="fast").passed
    assert not gk.check_module_gradients(HalfGradLinear(), torch.randn(4, 3), mode="fast").passed


def test_module_left_untouched_bit_for_bit() -> None:
    net = make_net()
    net.train()
    x = torch.randn(5, 3)
    net(x).sum().backward()  # the user has .grad already
    wrong = HalfGradLinear()
    before = fingerprint(net, x, wrong)
    gk.check_module_gradients(net, x, loss_fn=lambda y: (y**2).mean())
    gk.check_module_gradients(wrong, x[:, :3])
    assert fingerprint(net, x, wrong) == before
    assert net[0].weight.dtype == torch.float32


def test_dropout_in_train_mode_needs_replay_or_eval() -> None:
    net = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    x = torch.randn(6, 3)
    assert gk.check_module_gradients(net, x).status == "nondeterministic"
    assert gk.check_module_gradients(net, x, rng="replay").passed
    assert gk.check_module_gradients(net.eval(), x).passed
    assert net.training is False


def test_batchnorm_buffers_untouched() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    x = torch.randn(8, 3)
    before = fingerprint(net)
    assert gk.check_module_gradients(net, x).passed
    assert fingerprint(net) == before
