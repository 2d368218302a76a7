"""Cost of fast mode on a real-sized model, in forward+backward passes.

The promise: fast mode checks a model with millions of parameters "in about the time
of a few forward+backward passes". This script builds an MLP of about 2.16M
parameters, times one training-style forward+backward with torch.utils.benchmark,
then times ``check_module_gradients(mode="fast")`` in both dtype policies and prints
the ratio, at batch 64 (parameters dominate: per-parameter bookkeeping shows) and
batch 1024 (activations dominate, as in most real training).

    python benchmarks/fast_mode_cost.py [--threads N] [--repeats R] [--probes K] [--batches 64,1024]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.utils.benchmark as tbench
from torch import nn

import gradcheck_kit as gk

_HERE = Path(__file__).resolve().parent


def make_model(width: int, depth: int, classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def forward_backward_seconds(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> float:
    m = model.to(dtype)
    inp = x.to(dtype)

    def step() -> None:
        m.zero_grad(set_to_none=True)
        m(inp).sum().backward()

    timer = tbench.Timer(stmt="step()", globals={"step": step})
    return float(timer.blocked_autorange(min_run_time=1.0).median)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), metavar="N")
    parser.add_argument("--repeats", type=int, default=3, metavar="R")
    parser.add_argument("--probes", type=int, default=None, metavar="K")
    parser.add_argument(
        "--batches", type=lambda t: [int(v) for v in t.split(",")], default=[64, 1024]
    )
    parser.add_argument("--json", type=Path, default=_HERE / "results" / "fast_mode_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for batch in args.batches:
        rows += measure(batch, args.repeats, args.probes)
    meta = {"torch": torch.__version__, "threads": args.threads}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


def measure(batch: int, repeats: int, probes: int | None) -> list[dict[str, object]]:
    torch.manual_seed(0)
    model = make_model(1024, 2, 64)
    n_params = sum(p.numel() for p in model.parameters())
    x = torch.randn(batch, 1024)
    rows: list[dict[str, object]] = []
    for policy, dtype in (("native", torch.float32), ("float64", torch.float64)):
        one = forward_backward_seconds(model, x, dtype)
        model.float()
        times = []
        result = None
        for _ in range(repeats):
            extra = {} if probes is None else {"n_probes": probes}
            start = time.perf_counter()
            result = gk.check_module_gradients(model, x, mode="fast", dtype=policy, **extra)
            times.append(time.perf_counter() - start)
        assert result is not None and result.passed, result.summary() if result else ""
        median = statistics.median(times)
        rows.append(
            {
                "batch": batch,
                "params": n_params,
                "dtype_policy": policy,
                "fwd_bwd_seconds": one,
                "check_seconds": median,
                "fwd_bwd_equivalents": median / one,
                "evaluations": result.evaluations,
                "probes": len(result.probes),
            }
        )
        print(
            f"batch {batch:5d} {policy:8s} params {n_params:,}  one fwd+bwd {one * 1e3:7.1f} ms  "
            f"fast check {median * 1e3:7.1f} ms  = {median / one:5.1f} fwd+bwd  "
            f"({result.evaluations} fn evaluations, {len(result.probes)} probes)"
        )
    return rows


if __name__ == "__main__":
    main()
