"""Fast mode makes the host wait for the device a bounded number of times (issue 16).

On CUDA every ``.item()``, ``bool(t)``, ``.cpu()``, ``.tolist()``, copy onto the
device or data-dependent shape makes the host wait until the device has run
everything queued. The counter of ``benchmarks/_sync_counter.py`` counts them on
the CPU by simulating the device; the counts are deterministic, so they are
asserted here, not timed.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from support.clock import steady_engine_clock
from torch import nn

import gradcheck_kit as gk

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from _sync_counter import SyncCounter  # noqa: E402 - found through the sys.path entry above

# torch.autograd.gradcheck(fast_mode=True) waits 20 times on this case on CUDA.
TORCH_FAST_SYNCS = 20


def _mlp_case(
    depth: int,
) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...], nn.Module]:
    """An MLP 32-16-...-4 (tanh) on an 8x32 batch, as in benchmarks/gradcheck_cuda_cost.py."""
    torch.manual_seed(0)
    widths = [32] + [16] * (depth - 1) + [4]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.Tanh()]
    mlp = nn.Sequential(*layers[:-1]).double()
    names = [n for n, _ in mlp.named_parameters()]

    def f(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(mlp, dict(zip(names, params, strict=True)), (x,))

    x = torch.randn(8, 32, dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in mlp.parameters())
    return f, (x, *params), mlp


def _count(run: Callable[[], object], *on_device: object) -> SyncCounter:
    with SyncCounter(on_device=on_device) as counter:
        run()
    return counter


def test_fast_mode_syncs_at_most_torchs() -> None:
    f, inputs, mlp = _mlp_case(depth=2)
    gk.check_gradients(f, inputs, mode="fast")  # warm-up: the counted run is a steady one
    counter = _count(lambda: gk.check_gradients(f, inputs, mode="fast"), inputs, mlp)
    sites = "\n".join(counter.report())
    assert counter.total <= TORCH_FAST_SYNCS, f"{counter.by_kind()}\n{sites}"
    # a host tensor beside device tensors in one operator would raise on CUDA
    assert not counter.kinds.get("mixed"), sites


def test_fast_mode_syncs_do_not_grow_with_the_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    # per-tensor reads (a .item() per input, a copy per parameter) are what made 84; the
    # engine's clock is steady: on a loaded machine a slow call changes its batching and
    # with it a sync or two, which is not what this counts
    steady_engine_clock(monkeypatch)
    counts = []
    for depth in (2, 6):
        f, inputs, mlp = _mlp_case(depth)
        gk.check_gradients(f, inputs, mode="fast")
        with SyncCounter(on_device=[inputs, mlp]) as counter:
            gk.check_gradients(f, inputs, mode="fast")
        counts.append((len(inputs), counter.total, counter.by_kind()))
    (few, total_few, _), (many, total_many, _) = counts
    assert many > few + 6
    assert total_many == total_few, counts


def test_the_counter_leaves_the_check_and_the_clock_as_they_were() -> None:
    f, inputs, mlp = _mlp_case(depth=2)
    clock = time.perf_counter
    with SyncCounter(on_device=[inputs, mlp]) as counter:
        # the check reads a clock without the counting's own time (it sizes batches by it)
        assert time.perf_counter == counter.clock
        result = gk.check_gradients(f, inputs, mode="fast")
    assert result.passed and result.mode == "fast"
    assert time.perf_counter is clock


def test_the_counter_sees_every_kind_of_wait() -> None:
    x = torch.randn(6)
    with SyncCounter(on_device=[x]) as counter:
        y = x * 2
        float(y.sum())  # item
        bool((y > 0).any())  # item
        y.tolist()  # to_host
        y.cpu()  # to_host
        y[y > 0]  # shape: a boolean mask
        torch.nonzero(y)  # shape
        torch.equal(x, y)  # equal
        host = torch.zeros(6)  # host memory: reading it waits for nothing
        host.tolist()
        float(host.sum())
        moved = host.to(x.device)  # to_device
        torch.tensor([1.0, 2.0], device=x.device)  # to_device
        y.add(moved)  # both on the device now: no wait
        z = torch.zeros(3, device=x.device)
        z[0] = 1.0  # a Python number is written on the device: no copy
    assert counter.by_kind() == {"item": 2, "to_host": 2, "to_device": 2, "shape": 2, "equal": 1}
    assert counter.total == 9


def test_the_counter_flags_host_tensors_beside_device_ones() -> None:
    x = torch.randn(4)
    with SyncCounter(on_device=[x]) as counter:
        x + torch.ones(4)  # would raise on CUDA
        x + torch.tensor(2.0)  # a 0-dim host tensor is a scalar: fine
    assert counter.kinds["mixed"] == 1
    assert counter.total == 0


@pytest.mark.skipif(
    tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 11),
    reason="torch's own count was read on torch 2.11 (an H200) and 2.13",
)
def test_torchs_own_fast_mode_counts_as_on_cuda() -> None:
    # the counter's honesty: torch's fast gradcheck read .item() 20 times on an H200
    f, inputs, mlp = _mlp_case(depth=2)
    counter = _count(lambda: torch.autograd.gradcheck(f, inputs, fast_mode=True), inputs, mlp)
    assert counter.kinds["item"] == TORCH_FAST_SYNCS
