"""Training-loop wiring: zero_grad, and the optimizer holding the very parameter objects.

Without `optimizer.zero_grad()` gradients accumulate across `backward()` calls
and every update goes in the wrong direction. `optim.SGD(net.parameters())`
keeps references to the parameters: `net.fc1.weight = nn.Parameter(...)` gives
the module a new tensor that the optimizer never updates, while writing through
`net.fc1.weight.data = ...` keeps one tensor. Accumulating on purpose (a step
every 4 batches) is fine.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim

import gradcheck_kit as gk

pytestmark = pytest.mark.gradcheck


class MLPNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(1 * 28 * 28, 512)
        self.fc2 = nn.Linear(512, 512)
        self.fc3 = nn.Linear(512, 10)
        self.dropout1 = nn.Dropout(0.2)
        self.dropout2 = nn.Dropout(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x))
        x = self.dropout1(x)
        x = F.relu(self.fc2(x))
        x = self.dropout2(x)
        return F.relu(self.fc3(x))


def setup() -> tuple[MLPNet, optim.Optimizer, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    net = MLPNet()
    optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    batches = [(torch.randn(16, 784), torch.randint(0, 10, (16,))) for _ in range(8)]
    return net, optimizer, batches


def test_module_parameters_require_grad_by_default() -> None:
    net, _, _ = setup()
    gk.assert_requires_grad(net)
    gk.assert_requires_grad(torch.ones(3, 32, 32).requires_grad_())
    with pytest.raises(gk.errors.GraphCheckError):
        gk.assert_requires_grad(torch.ones(3, 32, 32))  # plain tensors default to False


def test_the_correct_loop_passes() -> None:
    net, optimizer, batches = setup()
    criterion = nn.CrossEntropyLoss()
    with gk.watch_training(net, optimizer) as watch:
        for x, target in batches:
            optimizer.zero_grad()
            criterion(net(x), target).backward()
            optimizer.step()
    assert watch.report is not None and watch.report.optimizer_steps == 8


def test_a_missing_zero_grad_is_caught() -> None:
    net, optimizer, batches = setup()
    criterion = nn.CrossEntropyLoss()
    caught = pytest.raises(gk.errors.TrainingLoopError, match="Gradient not reset")
    with caught as err, gk.watch_training(net, optimizer):
        for x, target in batches:
            criterion(net(x), target).backward()  # gradients pile up
            optimizer.step()
    findings = err.value.findings
    assert {f.parameter for f in findings} == {name for name, _ in net.named_parameters()}
    assert {f.step for f in findings} == {2}


def test_the_same_bug_in_a_unit_test_of_one_step() -> None:
    net, optimizer, batches = setup()
    criterion = nn.CrossEntropyLoss()

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, target = batch
        criterion(net(x), target).backward()
        optimizer.step()

    with pytest.raises(gk.errors.TrainingLoopError, match="zero_grad"):
        gk.assert_zero_grad_between_steps(train_step, net, optimizer, batches[:3])


def test_intentional_accumulation_every_4_batches_passes() -> None:
    net, optimizer, batches = setup()
    criterion = nn.CrossEntropyLoss()
    with gk.watch_training(net, optimizer, accumulation_steps=4) as watch:
        for i, (x, target) in enumerate(batches):
            (criterion(net(x), target) / 4).backward()
            if (i + 1) % 4 == 0:
                optimizer.step()
                optimizer.zero_grad()
    assert watch.report is not None and watch.report.backward_passes == 8


def test_re_assigning_a_parameter_loses_it_from_the_optimizer() -> None:
    net, optimizer, _ = setup()
    net.fc1.weight = nn.Parameter(torch.ones([512, 784]))  # the bug
    assert optimizer.param_groups[0]["params"][0] is not net.fc1.weight
    with pytest.raises(gk.errors.GraphCheckError):
        gk.assert_shares_memory(net.fc1.weight, optimizer.param_groups[0]["params"][0])
    with pytest.raises(gk.errors.TrainingLoopError, match="re-assigned after the optimizer") as err:
        gk.assert_optimizer_tracks(net, optimizer)
    assert [f.parameter for f in err.value.findings] == ["fc1.weight"]


def test_writing_through_data_keeps_the_optimizer_in_step() -> None:
    net, optimizer, _ = setup()
    net.fc1.weight.data = torch.ones([512, 784])  # the fix
    gk.assert_shares_memory(net.fc1.weight, optimizer.param_groups[0]["params"][0])
    gk.assert_optimizer_tracks(net, optimizer)


def test_the_watcher_points_at_the_line_that_re_assigned() -> None:
    net, optimizer, batches = setup()
    criterion = nn.CrossEntropyLoss()
    with gk.watch_training(net, optimizer, on_error="record") as watch:
        for i, (x, target) in enumerate(batches[:3]):
            if i == 1:
                net.fc1.weight = nn.Parameter(torch.ones([512, 784]))
            optimizer.zero_grad()
            criterion(net(x), target).backward()
            optimizer.step()
    assert watch.report is not None
    (finding,) = watch.report.findings
    assert finding.kind == "param_replaced" and finding.parameter == "fc1.weight"
    assert "net.fc1.weight = nn.Parameter(torch.ones([512, 784]))" in (finding.location or "")
