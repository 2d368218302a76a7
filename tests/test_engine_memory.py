"""The memory budget: measured per-evaluation peaks, batches sized to fit, Jacobians in blocks.

Peaks are counted with the engine's own :class:`AllocationCounter` wrapped around a
whole check: it sees every tensor storage the check creates, on any device.
"""

from __future__ import annotations

import gc

import pytest
import torch
from _functions import OneEntryWrong

import gradcheck_kit as gk
from gradcheck_kit._src.engine.memory import AllocationCounter, MemoryBudget, format_bytes


def f64(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def wide(x: torch.Tensor) -> torch.Tensor:
    """Activations 512 times the input: what batches of a CNN's evaluations look like."""
    h = x.unsqueeze(-1) * torch.linspace(-1, 1, 512, dtype=x.dtype)
    return torch.tanh(h).mean(-1)


def peak_of(run: object) -> int:
    gc.collect()
    with AllocationCounter() as counter:
        run()  # type: ignore[operator]
    return counter.peak


def plain_forward_backward_peak(fn: object, x: torch.Tensor) -> int:
    def step() -> None:
        y = fn(x.detach().clone().requires_grad_())  # type: ignore[operator]
        y.sum().backward()

    return peak_of(step)


def test_the_counter_counts_live_and_peak_bytes_and_views_once() -> None:
    with AllocationCounter() as counter:
        a = torch.ones(1000, dtype=torch.float64)  # 8000 bytes
        b = a.exp()  # 8000 more
        view = b[:10]  # no new storage
        del a
    assert counter.peak == 16000
    assert counter.live == 8000
    del b, view
    gc.collect()
    assert counter.live == 0


def test_the_counter_sees_inside_vmap_and_backward() -> None:
    x = torch.randn(64, 100, dtype=torch.float64)
    with AllocationCounter() as counter:
        torch.func.vmap(lambda r: r.exp().sin())(x)
    assert counter.peak >= 2 * 64 * 100 * 8
    w = torch.randn(100, dtype=torch.float64, requires_grad=True)
    y = (w.exp() * 3).sum()
    with AllocationCounter() as counter:
        torch.autograd.grad(y, w)
    assert counter.peak >= 100 * 8


def test_a_check_stays_within_max_memory_plus_one_forward_backward() -> None:
    x = f64(300)
    budget = 1_500_000  # the full Jacobian alone is 0.7 MB, each row of activations 1.2 MB
    own = plain_forward_backward_peak(wide, x)
    peaks = {}
    for mode in ("full", "fast"):
        result = None

        def run(mode: str = mode) -> None:
            nonlocal result
            result = gk.check_gradients(wide, x, mode=mode, max_memory=budget)

        peaks[mode] = peak_of(run)
        assert result is not None and result.passed, result
        assert peaks[mode] <= budget + own, (mode, format_bytes(peaks[mode]), format_bytes(own))
    # without the bound, full mode batches a thousand rows of activations at once
    roomy = peak_of(lambda: gk.check_gradients(wide, x, mode="full"))
    assert roomy > 10 * (budget + own)


def test_full_mode_in_blocks_gives_the_same_verdict_and_worst_entries() -> None:
    x = f64(600, seed=3)
    roomy = gk.check_gradients(OneEntryWrong.apply, x, mode="full")
    tight = gk.check_gradients(OneEntryWrong.apply, x, mode="full", max_memory=300_000)
    assert not roomy.passed and not tight.passed
    assert any("blocks of" in n for n in tight.notes), tight.notes
    (r,), (t,) = roomy.pairs, tight.pairs
    assert (r.mismatched, r.total) == (t.mismatched, t.total) == (1, 600 * 600)
    assert r.worst[0] == t.worst[0]
    assert r.error_map is not None and t.error_map == r.error_map
    assert r.max_abs_error == t.max_abs_error


def test_one_evaluation_over_the_budget_is_a_typed_error_naming_what_fits() -> None:
    x = f64(1000)
    with pytest.raises(
        gk.errors.MemoryBudgetError, match=r"max_memory=100 bytes.*Pass max_memory="
    ):
        gk.check_gradients(torch.sin, x, mode="full", max_memory=100)
    # the old name still catches it
    with pytest.raises(gk.errors.JacobianTooLargeError):
        gk.check_gradients(torch.sin, x, mode="fast", max_memory=100)


def test_the_suggested_budget_is_enough() -> None:
    x = f64(100)
    with pytest.raises(gk.errors.MemoryBudgetError) as info:
        gk.check_gradients(torch.sin, x, mode="full", max_memory=1000)
    suggested = int(str(info.value).split("Pass max_memory=")[1].split(" ")[0].replace(",", ""))
    assert gk.check_gradients(torch.sin, x, mode="full", max_memory=suggested).passed


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "1GB"])
def test_max_memory_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(gk.InvalidArgument, match="max_memory"):
        gk.check_gradients(torch.sin, f64(3), max_memory=bad)  # type: ignore[arg-type]


def test_batch_rows_count_one_evaluation_as_free() -> None:
    budget = MemoryBudget(limit=10_000)
    # r rows cost r * 1000 + (r - 1) * 500: 7 rows are 9500 bytes
    assert budget.rows(per_row=1000, own_peak=500, extra=0, wanted=100, what="x") == 7
    with budget.holding(9_000):
        assert budget.rows(per_row=1000, own_peak=500, extra=0, wanted=100, what="x") == 1
        with pytest.raises(gk.errors.MemoryBudgetError, match=r"already holds 8\.8 KiB"):
            budget.rows(per_row=1000, own_peak=500, extra=100, wanted=100, what="x")
    assert budget.held == 0
