"""What one gradient check of a small input costs: gradcheck_kit against torch, per size.

Real suites run hundreds of small checks, so a check's fixed cost matters as much as its
scaling. For inputs of 1 to 10,000 elements this times ``check_gradients`` in fast and
auto mode and ``torch.autograd.gradcheck`` in fast and full mode on the same functions,
interleaved round by round in one process, and prints medians and 90th percentiles.

With ``--busy`` the same measurements are repeated while a second process keeps one
core busy: with torch's default of one OpenMP thread per core, an operator that
parallelises waits for the thread whose core is taken, which is how a 5 x 100
``index_add_`` took 12-60 ms on a loaded 2-core machine. The 90th percentile shows
such stalls where the median hides them.

    python benchmarks/small_check_cost.py [--sizes 1,10,100,1000,10000] [--threads N]
        [--seconds S] [--busy] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import gradcheck_kit as gk

_HERE = Path(__file__).resolve().parent
# torch's full mode evaluates fn twice per input element, one at a time: skipped above this
_TORCH_FULL_MAX = 1000


def _functions(n: int) -> dict[str, tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]]:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True)
    m = max(1, min(n, 64))
    a = torch.randn(m, n, generator=g, dtype=torch.float64)
    return {
        "elementwise": (lambda t: torch.tanh(t).sin(), (x,)),
        "matvec+softmax": (lambda t: torch.softmax(a @ t, dim=0), (x,)),
    }


def _checkers(
    n: int,
) -> dict[str, Callable[[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]], object]]:
    found: dict[str, Callable[[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]], object]] = {
        "kit fast": lambda f, xs: gk.check_gradients(f, xs, mode="fast"),
        "kit auto": lambda f, xs: gk.check_gradients(f, xs),
        "torch fast": lambda f, xs: torch.autograd.gradcheck(f, xs, fast_mode=True),
    }
    if n <= _TORCH_FULL_MAX:
        found["torch full"] = lambda f, xs: torch.autograd.gradcheck(f, xs, fast_mode=False)
    return found


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = (a @ a).tanh_()


def measure(sizes: list[int], seconds: float) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n in sizes:
        for fname, (fn, xs) in _functions(n).items():
            checkers = _checkers(n)
            # torch's full mode runs thousands of evaluations per check; interleaved, it
            # leaves caches and the allocator cold for whichever check follows it
            slow = {k: checkers.pop(k) for k in ("torch full",) if k in checkers}
            times: dict[str, list[float]] = {name: [] for name in checkers}
            for check in checkers.values():  # warm-up
                check(fn, xs)
            names = list(checkers)
            start = time.perf_counter()
            rounds = 0
            while time.perf_counter() - start < seconds * len(names) or rounds < 5:
                # the order rotates, so that no checker always runs first
                for name in names[rounds % len(names) :] + names[: rounds % len(names)]:
                    t0 = time.perf_counter()
                    checkers[name](fn, xs)
                    times[name].append(time.perf_counter() - t0)
                rounds += 1
            for name, check in slow.items():
                check(fn, xs)
                times[name] = []
                while len(times[name]) < 3 or sum(times[name]) < seconds:
                    t0 = time.perf_counter()
                    check(fn, xs)
                    times[name].append(time.perf_counter() - t0)
            row: dict[str, object] = {"size": n, "function": fname}
            for name, ts in times.items():
                ts.sort()
                row[name] = {
                    "median_ms": 1e3 * statistics.median(ts),
                    "p90_ms": 1e3 * ts[int(0.9 * (len(ts) - 1))],
                    "runs": len(ts),
                }
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _line(row: dict[str, object]) -> str:
    def cell(name: str) -> str:
        stats = row.get(name)
        if not isinstance(stats, dict):
            return "—"
        return f"{stats['median_ms']:.2f} ({stats['p90_ms']:.2f})"

    def ratio(name: str) -> str:
        a, b = row.get(name), row.get("torch fast")
        if not isinstance(a, dict) or not isinstance(b, dict):
            return "—"
        return f"{a['median_ms'] / b['median_ms']:.2f}"

    return (
        f"| {row['size']:,} | {row['function']} | {cell('kit fast')} | {cell('kit auto')} | "
        f"{cell('torch fast')} | {cell('torch full')} | {ratio('kit fast')} | {ratio('kit auto')} |"
    )


_HEADER = (
    "| elements | function | kit fast ms | kit auto ms | torch fast ms | torch full ms | "
    "fast / torch fast | auto / torch fast |\n"
    "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=lambda t: [int(v) for v in t.split(",")], default=[1, 10, 100, 1000, 10000]
    )
    parser.add_argument("--threads", type=int, default=None, metavar="N")
    parser.add_argument("--seconds", type=float, default=0.5, metavar="S")
    parser.add_argument("--busy", action="store_true", help="also measure beside a busy process")
    parser.add_argument("--json", type=Path, default=_HERE / "results" / "small_check_cost.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
    }
    print(f"torch {meta['torch']}, {meta['threads']} thread(s), load {meta['load_before']}")
    print("median ms (90th percentile ms)\n\nidle:\n" + _HEADER)
    result: dict[str, object] = {"meta": meta, "idle": measure(args.sizes, args.seconds)}
    if args.busy:
        stop = multiprocessing.Event()
        spinner = multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
        spinner.start()
        try:
            time.sleep(0.5)
            print("\nbeside a busy process (one core kept busy):\n" + _HEADER)
            result["busy"] = measure(args.sizes, args.seconds)
        finally:
            stop.set()
            spinner.join(timeout=10)
    meta["load_after"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
