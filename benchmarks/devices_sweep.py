"""CPU vs CUDA over batch sizes: the DynamicNet training step, and where CUDA starts to win.

DynamicNet(1000, 100, 10), MSELoss(reduction="sum"), SGD(lr=1e-4, momentum=0.9),
as in the original post; the batch is swept. ``gradcheck_kit.benchmark_devices``
times forward, forward+backward and the full step (zero_grad, forward, backward,
step) on each device with ``torch.utils.benchmark.Timer.blocked_autorange``, every
timed call ending in ``torch.cuda.synchronize()``. It prints the table, the
speedup per size and the crossover; on a machine without CUDA the cuda rows are
reported as skipped, with the reason.

``--check`` times the full step a second, independent way at every size: a plain
loop of ``--check-steps`` steps timed with CUDA events on CUDA (one event pair
around the loop) and ``time.perf_counter`` on the CPU, and prints its per-step
median beside the library's figure (target: within 10%).

Run: python benchmarks/devices_sweep.py [--sizes 64 256 1024 4096] [--threads N]
     [--min-run-time 0.5] [--check] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

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


class StepLoss(nn.Module):
    """DynamicNet and its loss: inputs (x, y), output the scalar loss."""

    def __init__(self) -> None:
        super().__init__()
        self.model = DynamicNet(1000, 100, 10)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(self.model(x), y, reduction="sum")


def make_inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 1000), torch.randn(batch, 10)


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1e-4, momentum=0.9)


def independent_step_time(
    module: nn.Module, batch: int, device: str, steps: int, repeats: int
) -> float:
    """Median seconds per training step from a plain loop (CUDA events / perf_counter)."""
    torch.manual_seed(0)
    random.seed(0)
    model = StepLoss().to(device)
    model.load_state_dict(module.state_dict())
    x, y = (t.to(device) for t in make_inputs(batch))
    opt = sgd(model.parameters())

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            model(x, y).backward()
            opt.step()

    run(3)  # warm-up
    samples = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            run(steps)
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / steps)
        else:
            t0 = time.perf_counter()
            run(steps)
            samples.append((time.perf_counter() - t0) / steps)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--check", action="store_true", help="independent timing of the step")
    parser.add_argument("--check-steps", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module = StepLoss()
    bench = gk.benchmark_devices(
        module,
        make_inputs,
        sizes=args.sizes,
        size_name="batch",
        optimizer=sgd,
        min_run_time=args.min_run_time,
        name="DynamicNet training step",
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(bench.summary())
    print()
    for size in args.sizes:
        speed = bench.speedup(size).get("train_step")
        shown = f"{speed:.2f}x" if speed is not None else "cuda skipped"
        print(f"batch {size:>5}: cuda speedup on the training step {shown}")
    if bench.skipped:
        for device, reason in bench.skipped.items():
            print(f"{device}: skipped ({reason})")
    else:
        print(f"crossover: {bench.crossover}")
    if args.check:
        print()
        for size in args.sizes:
            for row in bench.rows_at(size):
                lib = row.timing("train_step")
                if lib is None:
                    continue
                ref = independent_step_time(module, size, row.device, args.check_steps, 5)
                print(
                    f"check batch {size:>5} {row.device:>5}: library {lib.median_s * 1e3:.3f} ms, "
                    f"independent {ref * 1e3:.3f} ms ({100 * (lib.median_s / ref - 1):+.1f}%)"
                )
    if args.json is not None:
        args.json.write_text(json.dumps(bench.to_dict(), indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
