"""Checks from several threads: they run one after another and give the sequential verdicts."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src.serial import check_lock


def _x(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(6, dtype=torch.float64, generator=gen).add_(0.2).requires_grad_()


class _ScaledBackward(torch.autograd.Function):
    """exp with a backward off by 5%: a wrong gradient every check must catch."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.exp()

    @staticmethod
    def setup_context(ctx: object, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(output)  # type: ignore[attr-defined]

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * out * 1.05


def _dropout(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.dropout(x.sin(), p=0.3, training=True)


def _dropout_check(seed: int) -> bool:
    # large enough that kernels release the GIL mid-check, where another thread's draw
    # would land between the replayed seed and this check's own draws
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3000, dtype=torch.float64, generator=gen).requires_grad_()
    return gk.check_gradients(_dropout, x, rng="replay", mode="fast").passed


def _jobs() -> list[Callable[[], bool]]:
    norm = nn.BatchNorm1d(64).double()  # shared by the jobs: checks must not interleave on it
    batch = torch.randn(32, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return [
        lambda: gk.check_gradients(torch.sin, _x(0)).passed,
        lambda: gk.check_gradients(_ScaledBackward.apply, _x(1)).passed,
        lambda: _dropout_check(2),
        lambda: _dropout_check(3),
        lambda: gk.check_module_gradients(norm, batch, mode="fast").passed,
        lambda: gk.check_module_gradients(norm, batch * 2, mode="fast").passed,
        lambda: gk.check_gradients(_ScaledBackward.apply, _x(3), mode="fast").passed,
    ]


def test_concurrent_checks_give_the_sequential_verdicts() -> None:
    sequential = [job() for job in _jobs()]
    assert sequential == [True, False, True, True, True, True, False]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: interleavings a long run would meet
    try:
        for _ in range(3):
            jobs = _jobs() * 2
            with ThreadPoolExecutor(max_workers=4) as pool:
                verdicts = list(pool.map(lambda job: job(), jobs))
            assert verdicts == sequential * 2
    finally:
        sys.setswitchinterval(interval)


def test_a_check_holds_the_lock_while_it_runs_and_releases_it_after() -> None:
    inside, release = threading.Event(), threading.Event()

    def slow(x: torch.Tensor) -> torch.Tensor:
        inside.set()
        release.wait(timeout=30)
        return x.sin()

    worker = threading.Thread(target=lambda: gk.check_gradients(slow, _x(4), mode="fast"))
    worker.start()
    assert inside.wait(timeout=30)
    lock = check_lock()
    assert not lock.acquire(blocking=False)  # another thread's check holds it
    release.set()
    worker.join(timeout=60)
    assert lock.acquire(blocking=False)
    lock.release()


def test_a_check_inside_a_check_in_the_same_thread_does_not_deadlock() -> None:
    x = _x(5)

    def checks_inside(t: torch.Tensor) -> torch.Tensor:
        assert gk.check_gradients(torch.cos, x.detach().requires_grad_(), mode="fast").passed
        return t.exp()

    assert gk.check_second_order(torch.sin, x).passed
    assert gk.check_gradients(checks_inside, x, mode="fast").passed
