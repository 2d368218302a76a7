"""Full-Jacobian gradient checks on a GPU: ours vs torch.autograd.gradcheck, and why.

The case is the one in issue 7: an MLP 32-16-4 (tanh) on an 8x32 float64 batch,
checked with respect to the input and every parameter (724 inputs, 32 outputs).
Both checkers run in full mode (torch: ``fast_mode=False``). On a GPU this is
launch-bound: torch builds the numerical Jacobian one input element at a time
(two forward passes each) and the analytical one one output element at a time,
so its time is set by the number of kernels it launches and the host-device
synchronisations it waits for, not by arithmetic.

The script prints, for each checker:

* the median time of one check (torch.utils.benchmark.Timer.blocked_autorange,
  which synchronises CUDA around every measurement);
* the aten operators it dispatches (an upper bound on kernel launches: views
  and detaches launch nothing) and the ``_local_scalar_dense`` calls among them
  (``.item()``/``bool()`` on a tensor: each one waits for the GPU), counted with
  a TorchDispatchMode on the same device.

Target (issue 7): our full mode <= 0.25x torch's time on the same GPU. On a
machine without CUDA it runs on the CPU, where the operator counts are the same
and tell what the GPU run will be bound by.

Run: python benchmarks/gradcheck_cuda_cost.py [--device cuda|cpu] [--min-run-time 2]
     [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark
from torch.utils._python_dispatch import TorchDispatchMode

import gradcheck_kit as gk

TARGET_RATIO = 0.25


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def make_case(device: str) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 4)).to(device, torch.float64)
    names = [n for n, _ in mlp.named_parameters()]

    def f(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(mlp, dict(zip(names, params, strict=True)), (x,))

    x = torch.randn(8, 32, device=device, dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in mlp.parameters())
    return f, (x, *params)


def checkers(
    f: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...]
) -> dict[str, Callable[[], object]]:
    return {
        "torch full": lambda: torch.autograd.gradcheck(f, inputs),
        "ours full": lambda: gk.check_gradients(f, inputs, mode="full"),
        "torch fast": lambda: torch.autograd.gradcheck(f, inputs, fast_mode=True),
        "ours fast": lambda: gk.check_gradients(f, inputs, mode="fast"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default)
    parser.add_argument("--min-run-time", type=float, default=2.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    f, inputs = make_case(args.device)
    rows: dict[str, dict[str, Any]] = {}
    for name, run in checkers(f, inputs).items():
        verdict = run()  # warm-up: CUDA context, cuBLAS handles, vmap caches
        passed = bool(verdict) if isinstance(verdict, bool) else bool(verdict.passed)  # type: ignore[attr-defined]
        timer = benchmark.Timer(stmt="run()", globals={"run": run}, label=name)
        m = timer.blocked_autorange(min_run_time=args.min_run_time)
        with _CountOps() as counter:
            run()
        rows[name] = {
            "passed": passed,
            "median_s": m.median,
            "iqr_s": m.iqr,
            "runs": len(m.times),
            "aten_ops": sum(counter.counts.values()),
            "syncs": counter.counts["_local_scalar_dense"],
            "top_ops": counter.counts.most_common(5),
        }

    device_name = (
        torch.cuda.get_device_name(torch.device(args.device))
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    print(f"device: {args.device} ({device_name}); torch {torch.__version__}")
    print(f"{'checker':<11} {'median':>10} {'IQR':>9} {'aten ops':>9} {'syncs':>6}  passed")
    for name, r in rows.items():
        print(
            f"{name:<11} {r['median_s'] * 1e3:8.2f}ms {r['iqr_s'] * 1e3:7.2f}ms "
            f"{r['aten_ops']:>9} {r['syncs']:>6}  {r['passed']}"
        )
    ratio = rows["ours full"]["median_s"] / rows["torch full"]["median_s"]
    ops = rows["ours full"]["aten_ops"] / rows["torch full"]["aten_ops"]
    print(
        f"full mode: ours / torch = {ratio:.3f} in time, {ops:.3f} in operators "
        f"(target on a GPU: <= {TARGET_RATIO})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"device": args.device, "device_name": device_name, "torch": torch.__version__}
        payload = {"meta": meta, "rows": rows, "full_time_ratio": ratio, "full_ops_ratio": ops}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
