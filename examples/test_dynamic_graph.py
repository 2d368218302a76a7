"""A dynamic graph: DynamicNet repeats its middle layer a random number of times per call."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import gradcheck_kit as gk


class DynamicNet(nn.Module):
    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.input_linear = nn.Linear(d_in, hidden)
        self.middle_linear = nn.Linear(hidden, hidden)
        self.output_linear = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_relu = self.input_linear(x).clamp(min=0)
        for _ in range(random.randint(0, 3)):  # a new graph at every call
            h_relu = self.middle_linear(h_relu).clamp(min=0)
        return self.output_linear(h_relu)


def make_problem(batch: int = 64) -> tuple[DynamicNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return DynamicNet(1000, 100, 10), torch.randn(batch, 1000), torch.randn(batch, 10)


@pytest.mark.gradcheck
def test_random_depth_is_reported_not_misjudged() -> None:
    net, x, y = make_problem(8)
    result = gk.check_module_gradients(
        net, x, loss_fn=lambda pred: nn.functional.mse_loss(pred, y, reduction="sum")
    )
    assert result.status == "nondeterministic"
    assert "rng='replay'" in (result.hint or "")


@pytest.mark.gradcheck
def test_dynamic_net_gradients_with_replayed_randomness() -> None:
    net, x, y = make_problem(64)
    # 111k parameters: auto mode uses random projections, a few passes in all. The check runs
    # in float64 while y stays float32: where mse_loss's backward does not promote (torch 2.11
    # and older, CPU and CUDA) the check runs again with y as a float64 copy, with a note.
    result = gk.assert_module_gradients(
        net,
        x,
        loss_fn=lambda pred: nn.functional.mse_loss(pred, y, reduction="sum"),
        rng="replay",
    )
    assert result.mode == "fast"
