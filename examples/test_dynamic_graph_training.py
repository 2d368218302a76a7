"""A dynamic graph: DynamicNet, a new graph at every call, trained under watch_training.

The forward pass repeats the middle layer a random number (0 to 3) of times.
Trained as in the original post (MSELoss(reduction='sum'), SGD with momentum
0.9, batch 64; 100 of its 500 steps, to keep the example quick) under the
watcher: no false alarm for a graph that changes from step to step, and the same
parameters, bit for bit, as unwatched.
(`DynamicNet` is copied from `test_dynamic_graph.py`, so that each example stands alone.)
"""

from __future__ import annotations

import contextlib
import random

import pytest
import torch
from torch import nn

import gradcheck_kit as gk

pytestmark = pytest.mark.gradcheck


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


def train(
    steps: int, watch: bool
) -> tuple[DynamicNet, list[float], gk.results.TrainingReport | None]:
    torch.manual_seed(0)
    random.seed(0)
    x, y = torch.randn(64, 1000), torch.randn(64, 10)
    model = DynamicNet(1000, 100, 10)
    criterion = nn.MSELoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    losses = []
    watcher = gk.watch_training(model, optimizer) if watch else None
    with watcher or contextlib.nullcontext():
        for _ in range(steps):
            loss = criterion(model(x), y)
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model, losses, watcher.report if watcher is not None else None


def test_dynamic_net_trains_under_the_watcher() -> None:
    _, losses, report = train(100, watch=True)
    assert report is not None and report.passed, report
    assert report.optimizer_steps == 100
    assert losses[-1] < 0.1 * losses[0]


def test_the_watcher_changes_nothing() -> None:
    watched, watched_losses, _ = train(50, watch=True)
    plain, plain_losses, _ = train(50, watch=False)
    assert watched_losses == plain_losses
    for (name, a), (_, b) in zip(watched.named_parameters(), plain.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_a_middle_layer_cut_off_by_detach_is_reported() -> None:
    torch.manual_seed(0)
    random.seed(0)
    model = DynamicNet(1000, 100, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x, y = torch.randn(64, 1000), torch.randn(64, 10)
    caught = pytest.raises(gk.errors.TrainingLoopError, match="never received a gradient")
    with caught as err, gk.watch_training(model, optimizer):
        for _ in range(20):
            h = model.input_linear(x).clamp(min=0).detach()  # the bug
            for _ in range(random.randint(0, 3)):
                h = model.middle_linear(h).clamp(min=0)
            loss = nn.functional.mse_loss(model.output_linear(h), y, reduction="sum")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert {f.parameter for f in err.value.findings} == {"input_linear.weight", "input_linear.bias"}
