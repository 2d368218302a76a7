#!/usr/bin/env python
"""Checks run from several threads at once: verdicts against the sequential ones.

Each round runs, on 4 threads, dropout checks under ``rng="replay"`` (correct,
so they must pass), fast-mode checks of one shared BatchNorm module (correct)
and checks of a backward off by 5% (wrong, so they must fail), and compares
every verdict with the same check run alone. ``--no-lock`` replaces the lock
that makes checks run one at a time with nothing, to show what it prevents.

Run: ``PYTHONPATH=. python benchmarks/threaded_checks.py [--rounds 30] [--no-lock]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import torch
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src import serial


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class _OffBy5Percent(torch.autograd.Function):
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
    return nn.functional.dropout(x.sin(), p=0.3, training=True)


def _jobs() -> list[Callable[[], bool]]:
    norm = nn.BatchNorm1d(64).double()
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(32, 64, dtype=torch.float64, generator=gen)

    def dropout_check(seed: int) -> bool:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(3000, dtype=torch.float64, generator=g).requires_grad_()
        return gk.check_gradients(_dropout, x, rng="replay", mode="fast").passed

    def wrong_check(seed: int) -> bool:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(50, dtype=torch.float64, generator=g).requires_grad_()
        return gk.check_gradients(_OffBy5Percent.apply, x, mode="fast").passed

    def norm_check(scale: int) -> bool:
        return gk.check_module_gradients(norm, batch * scale, mode="fast").passed

    return [
        *(lambda s=s: dropout_check(s) for s in range(4)),
        *(lambda k=k: norm_check(k) for k in (1, 2)),
        *(lambda s=s: wrong_check(s) for s in range(2)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-lock", action="store_true")
    args = parser.parse_args()
    if args.no_lock:
        serial._LOCK = _NoLock()  # type: ignore[assignment]
    expected = [job() for job in _jobs()]
    sys.setswitchinterval(1e-5)
    disagreements = crashes = checks = 0
    start = time.perf_counter()
    for _ in range(args.rounds):
        with ThreadPoolExecutor(max_workers=args.threads) as pool:
            futures = [pool.submit(job) for job in _jobs()]
            for future, want in zip(futures, expected, strict=True):
                checks += 1
                try:
                    disagreements += future.result() != want
                except Exception as exc:  # a crash is what an interleaving can also cause
                    crashes += 1
                    print(f"  crash: {type(exc).__name__}: {str(exc)[:120]}")
    seconds = time.perf_counter() - start
    lock = "without the lock" if args.no_lock else "with the lock"
    print(
        f"{lock}: {args.rounds} rounds on {args.threads} threads, {checks} checks, "
        f"{disagreements} verdicts differ from the sequential run, {crashes} crashed "
        f"({seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
