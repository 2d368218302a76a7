"""What watch_training costs per step on scenario 5's DynamicNet training loop (target: <= 5%).

DynamicNet(D_in=1000, H=100, D_out=10), batch 64, MSELoss(reduction="sum"),
SGD(lr=1e-4, momentum=0.9), as in the original post. One timed statement runs
``--steps`` training steps (zero_grad, forward, backward, step) with Python's
``random`` reseeded first, so the plain and the watched loop build the same
sequence of graphs. The watcher is entered once around all the timing of its
side, as it is entered once around a real loop: entry and exit are not per-step
costs. Samples come in ``--pairs`` sandwiches, timed with
``torch.utils.benchmark.Timer``: plain, watched, plain; the overhead is the
median over the sandwiches of watched / mean(plain before, plain after), with a
bootstrap 95% interval. Pairing neighbours cancels the slow drifts of a shared
machine's load; the plain-after / plain-before ratio is printed beside it as a
control (its distance from 0% is the noise floor).

The clock is this process's CPU time by default (``--clock cpu``): with one
thread, and the CPU autograd engine running backward on the calling thread, it
is the loop's own work, while wall-clock time on a shared machine also measures
how busy the neighbours are. ``--clock wall`` uses ``time.perf_counter``.

Variants:

* ``set_to_none``: ``optimizer.zero_grad()`` (the default, ``set_to_none=True``).
* ``in_place_clip``: ``zero_grad(set_to_none=False)`` and ``clip_grad_norm_``,
  where the watcher has to look at gradients that were written in place.

Run: python benchmarks/watch_training_overhead.py [--steps 10] [--pairs 200] [--clock cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.utils.benchmark as tb
from torch import nn

import gradcheck_kit as gk

CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
VARIANTS = ("set_to_none", "in_place_clip")


class DynamicNet(nn.Module):
    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.input_linear = nn.Linear(d_in, hidden)
        self.middle_linear = nn.Linear(hidden, hidden)
        self.output_linear = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_relu = self.input_linear(x).clamp(min=0)
        for _ in range(random.randint(0, 3)):
            h_relu = self.middle_linear(h_relu).clamp(min=0)
        return self.output_linear(h_relu)


def make_loop(variant: str) -> tuple[nn.Module, torch.optim.Optimizer, Callable[[int], None]]:
    torch.manual_seed(0)
    x, y = torch.randn(64, 1000), torch.randn(64, 10)
    model = DynamicNet(1000, 100, 10)
    criterion = nn.MSELoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    in_place = variant == "in_place_clip"

    def run(steps: int) -> None:
        random.seed(0)
        for _ in range(steps):
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=not in_place)
            loss.backward()
            if in_place:
                nn.utils.clip_grad_norm_(model.parameters(), 1e3)
            optimizer.step()

    return model, optimizer, run


def _median_ci(values: list[float], rng: random.Random) -> tuple[float, float, float]:
    """The median and a bootstrap 95% interval for it."""
    boots = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(1000))
    return statistics.median(values), boots[25], boots[974]


def measure(variant: str, steps: int, pairs: int, clock: str) -> dict[str, Any]:
    model, optimizer, run = make_loop(variant)
    run(steps)  # warm up
    watcher = gk.watch_training(model, optimizer, on_error="record")
    timer = tb.Timer(stmt="run(steps)", globals={"run": run, "steps": steps}, timer=CLOCKS[clock])
    ratios: list[float] = []
    controls: list[float] = []
    plain: list[float] = []
    watched: list[float] = []
    for _ in range(pairs):
        before = timer.timeit(1).median
        with watcher:
            during = timer.timeit(1).median
        after = timer.timeit(1).median
        ratios.append(during / ((before + after) / 2))
        controls.append(after / before)  # plain against plain: the noise floor
        plain += [before, after]
        watched.append(during)
    report = watcher.report
    assert report is not None and report.passed, report
    rng = random.Random(0)
    ratio, low, high = _median_ci(ratios, rng)
    control, c_low, c_high = _median_ci(controls, rng)
    plain_step = statistics.median(plain) / steps
    return {
        "variant": variant,
        "clock": clock,
        "steps_per_sample": steps,
        "pairs": pairs,
        "plain_ms_per_step": 1e3 * plain_step,
        "watched_ms_per_step": 1e3 * statistics.median(watched) / steps,
        "overhead_pct": 100.0 * (ratio - 1.0),
        "overhead_pct_ci95": [100.0 * (low - 1.0), 100.0 * (high - 1.0)],
        "overhead_us_per_step": 1e6 * (ratio - 1.0) * plain_step,
        "control_pct": 100.0 * (control - 1.0),
        "control_pct_ci95": [100.0 * (c_low - 1.0), 100.0 * (c_high - 1.0)],
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=10, metavar="N", help="Default: %(default)r")
    parser.add_argument("--pairs", type=int, default=200, metavar="N", help="Default: %(default)r")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="Default: %(default)r")
    parser.add_argument(
        "--clock", choices=sorted(CLOCKS), default="cpu", help="Default: %(default)r"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("benchmarks/results/watch_training_overhead.json"),
        metavar="PATH",
        help="Default: %(default)s",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(variant, args.steps, args.pairs, args.clock) for variant in VARIANTS]
    meta = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "machine": platform.machine(),
        "clock": args.clock,
    }
    print(
        f"torch {meta['torch']}, {meta['threads']} thread(s), {args.clock} time, "
        f"load average {meta['load_average']}, DynamicNet(1000, 100, 10), batch 64"
    )
    print(
        f"{'variant':<15} {'plain ms/step':>13} {'watched ms/step':>15}  "
        f"{'overhead [95% CI]':<24} {'us/step':>7}  {'A/A control [95% CI]':<24}"
    )
    for row in rows:
        lo, hi = row["overhead_pct_ci95"]
        clo, chi = row["control_pct_ci95"]
        print(
            f"{row['variant']:<15} {row['plain_ms_per_step']:>13.3f} "
            f"{row['watched_ms_per_step']:>15.3f}  "
            f"{row['overhead_pct']:+5.1f}% [{lo:+5.1f}, {hi:+5.1f}]{'':<6} "
            f"{row['overhead_us_per_step']:>7.1f}  "
            f"{row['control_pct']:+5.1f}% [{clo:+5.1f}, {chi:+5.1f}]"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
