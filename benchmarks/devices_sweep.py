"""CPU vs CUDA over batch sizes: the DynamicNet training step, and where CUDA starts to win.

DynamicNet(1000, 100, 10), MSELoss(reduction="sum"), SGD(lr=1e-4, momentum=0.9),
as in the original post; the batch is swept. ``gradcheck_kit.benchmark_devices``
times forward, forward+backward and the full step (zero_grad, forward, backward,
step) on each device in rounds (calibrated iterations per round, warm-up rounds,
median and IQR over the rounds), each round timed between two device
synchronisations and replaying the same work: the device's copy of the model and
optimizer back as prepared, every RNG seeded with ``--seed``. It prints the table,
the speedup per size and the crossover; on a machine without CUDA the cuda rows
are reported as skipped, with the reason.

``--check`` times the full step a second, independent way at every size and
device, and says whether the two agree within 10%. The independent timer is a
plain loop written here (no gradcheck_kit code): its own model, loaded with the
same weights, the same inputs (drawn from the same seed), and rounds that replay
the same work as the library's: before each round the weights are loaded again,
the optimizer is built afresh, and Python ``random``, NumPy and torch are seeded
with ``--seed``, so DynamicNet draws the same depth sequence in every round of
both timers. Both run rounds of as many steps as the sweep's rounds at that size
(``iterations``; the count is part of the work, as a round replays the first
``iterations`` depths), and the independent loop as many rounds as the library.
A round is timed with ``time.perf_counter`` on the CPU and with one pair of CUDA
events around the loop on CUDA. The two
timers alternate, ``--check-passes`` times (library first in odd passes,
independent first in even ones), so that a change in the machine's load hits
both alike; the figures compared are the medians over the passes of each
timer's median.

Every round of both timers replays the first ``--iterations`` (default 20) depths
drawn from the seed, at every size and on every device: 20 depths average 1.65
middle layers with seed 0 (the expectation is 1.5), where rounds calibrated per
size would replay 2 depths (3 and 3) at batch 4096 and 39 at batch 64 on this
CPU, timing different work at each size.

Run: python benchmarks/devices_sweep.py [--sizes 64 256 1024 4096] [--threads N]
     [--min-run-time 0.5] [--seed 0] [--iterations 20] [--check] [--check-passes 5]
     [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import gradcheck_kit as gk

TOLERANCE = 0.10  # the check's target: the two medians within 10%


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


# ------------------------------------------------------------------ the independent timer


def seed_all(seed: int) -> None:
    """What the library seeds before each round: Python, NumPy, torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def independent_rounds(
    module: nn.Module,
    batch: int,
    device: str,
    *,
    seed: int,
    rounds: int,
    iterations: int,
    warmup: int,
) -> list[float]:
    """Seconds per training step of each of ``rounds`` rounds of ``iterations`` steps."""
    cuda = device.startswith("cuda")
    seed_all(seed)
    x, y = (t.to(device) for t in make_inputs(batch))
    model = StepLoss().to(device)
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}

    def one_round() -> float:
        model.load_state_dict(initial)
        for p in model.parameters():
            p.grad = None
        opt = sgd(model.parameters())
        seed_all(seed)
        if cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
        else:
            t0 = time.perf_counter()
        for _ in range(iterations):
            opt.zero_grad(set_to_none=True)
            model(x, y).backward()
            opt.step()
        if cuda:
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        return time.perf_counter() - t0

    one_round()  # lazy state, as the library's untimed first call
    for _ in range(warmup):
        one_round()
    return [one_round() / iterations for _ in range(rounds)]


def _iqr(samples: list[float]) -> float | None:
    if len(samples) < 2:
        return None
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q3 - q1


def _stats(median: float, iqr: float | None, rounds: int, iterations: int) -> dict[str, Any]:
    return {"median_s": median, "iqr_s": iqr, "rounds": rounds, "iterations": iterations}


def _fmt(stats: dict[str, Any]) -> str:
    iqr = stats["iqr_s"]
    spread = f"IQR {iqr * 1e3:.3f} ms" if iqr is not None else "no IQR"
    return (
        f"{stats['median_s'] * 1e3:8.3f} ms ({spread}, "
        f"{stats['rounds']} rounds x {stats['iterations']})"
    )


def _verdict(within: bool) -> str:
    return f"within {TOLERANCE:.0%}" if within else f"OUTSIDE {TOLERANCE:.0%}"


def check_one(
    module: nn.Module,
    size: int,
    device: str,
    *,
    iterations: int,
    passes: int,
    seed: int,
    min_run_time: float,
) -> dict[str, Any]:
    """The library and the independent loop, alternating, at one size on one device.

    Every pass of both timers runs rounds of ``iterations`` steps (the sweep's
    count at this size): under replay a round's work is the first
    ``iterations`` depths drawn from the seed, so the count is part of the work.
    """
    rows: list[dict[str, Any]] = []

    def library() -> dict[str, Any]:
        bench = gk.benchmark_devices(
            module,
            lambda: make_inputs(size),
            devices=(device,),
            backward=False,
            optimizer=sgd,
            iterations=iterations,
            min_run_time=min_run_time,
            seed=seed,
            name="DynamicNet training step (check)",
        )
        t = bench.timing(device).timing("train_step")
        assert t is not None and t.iterations is not None and t.warmup_rounds is not None
        iqr = t.iqr_s if math.isfinite(t.iqr_s) else None
        out = _stats(t.median_s, iqr, t.runs, t.iterations)
        out["warmup_rounds"] = t.warmup_rounds
        return out

    def independent(lib: dict[str, Any]) -> dict[str, Any]:
        samples = independent_rounds(
            module,
            size,
            device,
            seed=seed,
            rounds=lib["rounds"],
            iterations=lib["iterations"],
            warmup=lib["warmup_rounds"],
        )
        return _stats(statistics.median(samples), _iqr(samples), len(samples), lib["iterations"])

    previous: dict[str, Any] | None = None
    for k in range(passes):
        if k % 2 == 0 or previous is None:
            lib = library()
            ind = independent(lib)
        else:
            # independent first, as many rounds as the library ran last time
            ind = independent(previous)
            lib = library()
        previous = lib
        delta = lib["median_s"] / ind["median_s"] - 1
        within = abs(delta) <= TOLERANCE
        rows.append(
            {"library": lib, "independent": ind, "delta": delta, "within_tolerance": within}
        )
        print(
            f"  batch {size:>5} {device:>5} pass {k + 1}: library {_fmt(lib)}  "
            f"independent {_fmt(ind)}  {100 * delta:+.1f}% {_verdict(within)}",
            flush=True,
        )
    lib_median = statistics.median(r["library"]["median_s"] for r in rows)
    ind_median = statistics.median(r["independent"]["median_s"] for r in rows)
    delta = lib_median / ind_median - 1
    return {
        "size": size,
        "device": device,
        "library_median_s": lib_median,
        "independent_median_s": ind_median,
        "delta": delta,
        "within_tolerance": abs(delta) <= TOLERANCE,
        "passes": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="every round starts from it")
    parser.add_argument(
        "--iterations",
        type=int,
        default=20,
        help="training steps per round at every size and device (0: calibrated per size); "
        "a round replays the first ITERATIONS depths drawn from the seed, so one count for "
        "all sizes times the same work everywhere. Default: %(default)r",
    )
    parser.add_argument("--check", action="store_true", help="independent timing of the step")
    parser.add_argument("--check-passes", type=int, default=5)
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
        iterations=args.iterations or None,
        min_run_time=args.min_run_time,
        seed=args.seed,
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
    record = bench.to_dict()
    if args.check:
        print()
        print(
            f"check: training step, library vs independent loop, same work replayed "
            f"(seed {args.seed}), {args.check_passes} alternating passes; target within "
            f"{TOLERANCE:.0%}"
        )
        checks = []
        for size in args.sizes:
            for row in bench.rows_at(size):
                step = row.timing("train_step")
                if step is None or step.iterations is None:
                    continue
                checks.append(
                    check_one(
                        module,
                        size,
                        row.device,
                        iterations=step.iterations,
                        passes=args.check_passes,
                        seed=args.seed,
                        min_run_time=args.min_run_time,
                    )
                )
        print()
        for c in checks:
            per_pass = ", ".join(f"{100 * r['delta']:+.1f}%" for r in c["passes"])
            print(
                f"check batch {c['size']:>5} {c['device']:>5}: library "
                f"{c['library_median_s'] * 1e3:.3f} ms, independent "
                f"{c['independent_median_s'] * 1e3:.3f} ms ({100 * c['delta']:+.1f}%) "
                f"{_verdict(c['within_tolerance'])} (passes: {per_pass})"
            )
        record["check"] = {
            "seed": args.seed,
            "passes": args.check_passes,
            "tolerance": TOLERANCE,
            "threads": torch.get_num_threads(),
            "all_within_tolerance": all(c["within_tolerance"] for c in checks),
            "rows": checks,
        }
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
