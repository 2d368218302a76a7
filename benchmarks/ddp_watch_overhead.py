"""What watch_training's cross-rank checks cost per step of a 2-rank DDP loop (target: <= 5%).

Two gloo ranks on the CPU (``run_on_ranks``, one torch thread each), each with
its own batch of ``--batch`` rows: a 2-layer MLP (``--width`` in, ``--width``
hidden, 10 out) wrapped in ``DistributedDataParallel``, ``SGD(lr=0.01,
momentum=0.9)``, one training step = ``zero_grad``, forward, MSE loss, backward
(DDP's all-reduce), ``step``. A sample is ``--steps`` steps (default 64: two
of the watcher's all-gathers, one waited for, fall inside it) timed with
``time.perf_counter`` (wall clock: a rank's step includes waiting for the other
in DDP's all-reduce and in the watcher's all-gather, which is the cost to
measure) and with ``time.process_time`` (the rank's CPU time, every thread: the
work itself, steadier when other jobs share the cores). The sides come in rounds
``plain, watched, plain, watched_every_step, plain, watched_local, plain``:

* ``watched``: ``watch_training(model, opt)`` with the cross-rank checks at their
  defaults: two flags per step, one checksum per tensor at the first 8 steps and
  every 8th (``compare_every=8``), 32 steps per background all-gather;
* ``watched_every_step``: the same with ``compare_every=1``, every tensor summed
  up after every step;
* ``watched_local``: ``watch_training(..., distributed=False)``, only the
  single-process checks, to split the cost.

The time inside the cross-rank check itself (checksums, the all-gather, with
any wait for the other rank in it, and the judging) is also clocked per step;
its mean, a share of the plain step, is a steadier figure on a loaded machine
than the difference of two noisy medians. A watcher is entered once around its
whole sample, as around a real loop; entry and exit are not per-step costs.
The overhead of a side is the median over the rounds of side / mean(plain
before, plain after), with a bootstrap 95 % interval; the plain-after /
plain-before ratio is the A/A control (its distance from 0 % is the noise
floor). Both ranks run in lock step; rank 0's clocks are reported.

Run: python benchmarks/ddp_watch_overhead.py [--width 256] [--batch 32] [--steps 64] [--rounds 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src.distributed.launch import run_on_ranks
from gradcheck_kit._src.training.across_ranks import RankChecks


def _ranks_main(
    rank: int, world_size: int, width: int, batch: int, steps: int, rounds: int
) -> dict[str, list[float]]:
    torch.set_num_threads(1)
    inside: list[float] = []  # seconds in the cross-rank check, per step
    real_after_step = RankChecks.after_step

    def timed_after_step(self: RankChecks, *a: Any, **kw: Any) -> None:
        started = time.perf_counter()
        real_after_step(self, *a, **kw)
        inside.append(time.perf_counter() - started)

    RankChecks.after_step = timed_after_step  # type: ignore[method-assign]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    model = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(batch, width, generator=g), torch.randn(batch, 10, generator=g)

    def sample(watch: dict[str, Any] | None) -> tuple[float, float]:
        watcher = (
            gk.watch_training(model, opt, on_error="record", **watch) if watch is not None else None
        )
        if watcher is not None:
            watcher.__enter__()
        try:
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                opt.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                opt.step()
            return (time.perf_counter() - started) / steps, (time.process_time() - cpu) / steps
        finally:
            if watcher is not None:
                watcher.__exit__(None, None, None)
                assert watcher.report is not None and watcher.report.passed

    for _ in range(3):  # warm-up: DDP's first iterations rebuild buckets
        sample(None)
        for options in SIDES.values():
            sample(options)
    out: dict[str, Any] = {"plain": [sample(None)]}
    for side in SIDES:
        out[side], out[f"{side}_inside"] = [], []
    for _ in range(rounds):
        for side, options in SIDES.items():
            inside.clear()
            out[side].append(sample(options))
            out[f"{side}_inside"].append(sum(inside) / steps)
            out["plain"].append(sample(None))
    return out


SIDES: dict[str, dict[str, Any]] = {
    "watched": {},
    "watched_every_step": {"compare_every": 1},
    "watched_local": {"distributed": False},
}


def _overhead(side: list[float], plain: list[float], at: int) -> list[float]:
    # round i: plain[k*i + at], side, plain[k*i + at + 1], with k sides per round
    k = len(SIDES)
    return [s / ((plain[k * i + at] + plain[k * i + at + 1]) / 2) - 1 for i, s in enumerate(side)]


def _ci(ratios: list[float], draws: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return meds[int(0.025 * draws)], meds[int(0.975 * draws)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    run = run_on_ranks(
        _ranks_main,
        2,
        args=(args.width, args.batch, args.steps, args.rounds),
        timeout=1800,
    )
    times = run.values[0]
    print(
        f"2 gloo ranks, MLP {args.width}-{args.width}-10, batch {args.batch}/rank, "
        f"{args.steps} steps x {args.rounds} rounds; torch {torch.__version__}, "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for clock, what in ((0, "wall clock"), (1, "CPU time")):
        plain = [t[clock] for t in times["plain"]]
        control = [plain[i + 1] / plain[i] - 1 for i in range(len(plain) - 1)]
        print(
            f"{what}: plain {statistics.median(plain) * 1e3:.3f} ms/step (median); "
            f"A/A control (plain after / plain before) {statistics.median(control):+.1%}"
        )
        for at, side in enumerate(SIDES):
            values = [t[clock] for t in times[side]]
            ratios = _overhead(values, plain, at)
            low, high = _ci(ratios)
            per_step = statistics.median(values) - statistics.median(plain)
            print(
                f"  {side}: {statistics.median(values) * 1e3:.3f} ms/step, overhead "
                f"{statistics.median(ratios):+.1%} [95% CI {low:+.1%}, {high:+.1%}], "
                f"{per_step * 1e6:+.0f} us/step"
            )
    plain_wall = statistics.median(t[0] for t in times["plain"])
    for side in SIDES:
        inside = statistics.median(times[f"{side}_inside"])
        if inside:
            print(
                f"inside the cross-rank check, {side} (checksums, all-gathers, judging): "
                f"{inside * 1e6:.0f} us/step (mean over a sample) = "
                f"{inside / plain_wall:.1%} of a plain step"
            )


if __name__ == "__main__":
    main()
