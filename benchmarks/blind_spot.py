"""One wrong Jacobian entry in a 1,000-element input: caught how often, by whom.

A custom Function computes sin with the derivative of one entry (index 417) doubled.
Twenty inputs (seeded), fast mode of both checkers: gradcheck_kit's probes weigh
every entry by at least 1 and are judged against the finite differences' own error,
torch's fast mode judges one Gaussian projection against a tolerance summed over all
entries, which hides one entry among a thousand.

    python benchmarks/blind_spot.py [--trials 20] [--size 1000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import gradcheck_kit as gk

_WRONG = 417


class OneEntryWrong(torch.autograd.Function):
    """sin, with the derivative of one entry doubled."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        out = (grad * torch.cos(x)).clone()
        out.view(-1)[_WRONG] *= 2
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--size", type=int, default=1000)
    args = parser.parse_args()
    kit = kit_located = torch_caught = 0
    kit_seconds = torch_seconds = 0.0
    for trial in range(args.trials):
        g = torch.Generator().manual_seed(100 + trial)
        x = (torch.rand(args.size, generator=g, dtype=torch.float64) * 6 - 3).requires_grad_()
        start = time.perf_counter()
        result = gk.check_gradients(OneEntryWrong.apply, x, mode="fast", seed=trial)
        kit_seconds += time.perf_counter() - start
        if not result.passed:
            kit += 1
            kit_located += result.pairs[0].worst[0].input_index == (_WRONG,)
        start = time.perf_counter()
        ok = torch.autograd.gradcheck(
            OneEntryWrong.apply, (x,), fast_mode=True, raise_exception=False
        )
        torch_seconds += time.perf_counter() - start
        torch_caught += not ok
    kit_ms, torch_ms = kit_seconds / args.trials * 1e3, torch_seconds / args.trials * 1e3
    print(
        f"one wrong entry in {args.size:,}: gradcheck_kit fast mode caught it {kit}/{args.trials} "
        f"times (named index {_WRONG} {kit_located} times, {kit_ms:.1f} ms a check); torch "
        f"fast mode {torch_caught}/{args.trials} ({torch_ms:.1f} ms a check)"
    )


if __name__ == "__main__":
    main()
