"""CPU vs CUDA: the DynamicNet training step and the linear regression on both devices.

`benchmark_devices` times forward, forward+backward and the full SGD (momentum 0.9)
step on each device; `assert_device_parity` compares outputs and gradients. On a
machine without a GPU the CUDA row of each benchmark is reported as skipped (with
the reason) and the CUDA-only tests skip, naming the missing device.
(`DynamicNet` is copied from `test_dynamic_graph.py`, so that each example stands alone.)
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import gradcheck_kit as gk

pytestmark = pytest.mark.gradcheck

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="CUDA device not available: torch.cuda.is_available() is False"
)
QUICK = {"min_run_time": 0.02, "warmup": 2}


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


class SumSquaredLoss(nn.Module):
    """The model and its loss in one module: inputs (x, y), output the scalar loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(self.model(x), y, reduction="sum")


def dynamic_net_step() -> SumSquaredLoss:
    torch.manual_seed(0)
    return SumSquaredLoss(DynamicNet(1000, 100, 10))


def dynamic_inputs(batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 1000), torch.randn(batch, 10)


def sgd(params: object) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1e-4, momentum=0.9)  # type: ignore[arg-type]


class Line(nn.Module):
    """The linear regression: y = w x + b, fitted to y = 2x - 4 + noise on x = -10..10."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.w * x + self.b - y) ** 2).mean()


def regression_data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(-10, 11, 1, dtype=dtype)
    noise = torch.randn(21, generator=torch.Generator().manual_seed(0), dtype=dtype)
    return x, 2 * x - 4 + noise


def test_dynamic_net_training_step_on_each_device() -> None:
    model = dynamic_net_step()
    bench = gk.benchmark_devices(
        model, dynamic_inputs, optimizer=sgd, name="DynamicNet step, batch 64", **QUICK
    )
    cpu = bench.timing("cpu").timing("train_step")
    assert cpu is not None and cpu.median_s > 0
    if CUDA:
        assert "train_step" in bench.speedup()
    else:
        assert "CUDA device not available" in bench.skipped["cuda"]
    print(bench.summary())


def test_dynamic_net_sweep_reports_the_crossover() -> None:
    bench = gk.benchmark_devices(
        dynamic_net_step(),
        dynamic_inputs,
        sizes=[16, 64, 256],
        size_name="batch",
        optimizer=sgd,
        **QUICK,
    )
    assert [r.size for r in bench.timings if r.device == "cpu"] == [16, 64, 256]
    assert bench.crossover is None or bench.crossover in (16, 64, 256)
    print(bench.summary())


def test_regression_benchmark_and_parity_skip_cleanly_without_a_gpu() -> None:
    bench = gk.benchmark_devices(Line(), regression_data, **QUICK)
    assert bench.timing("cpu").skipped is None
    result = gk.assert_device_parity(Line(), regression_data)  # never fails for a missing GPU
    assert result.status == ("passed" if CUDA else "skipped")


@needs_cuda
def test_dynamic_net_gradients_agree_in_float64() -> None:
    model = dynamic_net_step().double()
    gk.assert_device_parity(model, lambda: tuple(t.double() for t in dynamic_inputs()))


@needs_cuda
def test_dynamic_net_gradients_agree_in_float32_without_tf32() -> None:
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        gk.assert_device_parity(dynamic_net_step(), dynamic_inputs)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@needs_cuda
def test_tf32_difference_is_explained() -> None:
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        result = gk.check_device_parity(dynamic_net_step(), dynamic_inputs)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
    if result.status == "failed" and torch.cuda.get_device_capability()[0] >= 8:
        assert "TF32" in result.summary()


@needs_cuda
def test_regression_gradients_agree() -> None:
    gk.assert_device_parity(Line().double(), lambda: regression_data(torch.float64))
