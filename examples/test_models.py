"""Modules: parameters in float64, in their own float32, and a large model in fast mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradcheck_kit as gk


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 4))


@pytest.mark.gradcheck
def test_mlp_parameters_full_jacobian() -> None:
    net = small_mlp()
    x = torch.randn(8, 32)
    result = gk.assert_module_gradients(net, x, mode="full")
    assert {p.input for p in result.pairs} == {
        "params/0.weight",
        "params/0.bias",
        "params/2.weight",
        "params/2.bias",
    }


@pytest.mark.gradcheck
def test_mlp_in_float32_native() -> None:
    net = small_mlp()
    x = torch.randn(8, 32)
    gk.assert_module_gradients(net, x, dtype="native", loss_fn=lambda y: y.pow(2).mean())


@pytest.mark.gradcheck
def test_inputs_and_parameters_together() -> None:
    net = nn.Sequential(nn.Conv1d(3, 4, 3), nn.SiLU(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(2, 3, 10, requires_grad=True)
    net(x)  # materialise the lazy layer first
    gk.assert_module_gradients(net, x, wrt="both", loss_fn=lambda y: y.logsumexp(-1).sum())


@pytest.mark.gradcheck
def test_large_model_fast_mode() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1024, 1024), nn.GELU(), nn.Linear(1024, 64))
    x = torch.randn(16, 1024)
    result = gk.assert_module_gradients(net, x, loss_fn=lambda y: y.square().mean())
    # 1.1M parameters: auto takes fast mode, one random projection u^T J v weighing every
    # one of the 1.1M x 16 Jacobian entries
    assert result.mode == "fast" and len(result.probes) == 1
