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
* the aten operators it dispatches, and among them those that launch a kernel
  (views, detaches and metadata checks launch nothing); the host-device
  synchronisations, by kind
  (``.item()``-style reads, copies to the host and onto the device, operators
  with data-dependent output shapes, ``torch.equal``), counted by
  :class:`_sync_counter.SyncCounter`; on the CPU it simulates the device, so the
  counts are those of a CUDA run. On CUDA the script also counts the warnings of
  ``torch.cuda.set_sync_debug_mode("warn")``, torch's own tally, as a check.

``--sites NAME`` lists where a checker's syncs come from (``file:line function``).

Target (issue 7): our full mode <= 0.25x torch's time on the same GPU. On a
machine without CUDA it runs on the CPU, where the operator counts are the same
and tell what the GPU run will be bound by.

Run: python benchmarks/gradcheck_cuda_cost.py [--device cuda|cpu] [--min-run-time 2]
     [--json PATH] [--sites "ours fast"] [--only "torch fast,ours fast"]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark

import gradcheck_kit as gk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sync_counter import SYNC_KINDS, SyncCounter

TARGET_RATIO = 0.25


def torch_sync_warnings(run: Callable[[], object]) -> int | None:
    """Syncs torch itself reports under ``set_sync_debug_mode("warn")`` (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def make_case(device: str) -> tuple[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 4)).to(device, torch.float64)
    names = [n for n, _ in mlp.named_parameters()]

    def f(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(mlp, dict(zip(names, params, strict=True)), (x,))

    x = torch.randn(8, 32, device=device, dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_() for p in mlp.parameters())
    f.module = mlp  # type: ignore[attr-defined]
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
    parser.add_argument("--only", default=None, help="comma list of checkers to run")
    parser.add_argument("--sites", default=None, help="list the call sites of this checker's syncs")
    args = parser.parse_args()

    f, inputs = make_case(args.device)
    wanted = args.only.split(",") if args.only else None
    rows: dict[str, dict[str, Any]] = {}
    sites: dict[str, list[str]] = {}
    for name, run in checkers(f, inputs).items():
        if wanted is not None and name not in wanted:
            continue
        verdict = run()  # warm-up: CUDA context, cuBLAS handles, vmap caches
        passed = bool(verdict) if isinstance(verdict, bool) else bool(verdict.passed)  # type: ignore[attr-defined]
        timer = benchmark.Timer(stmt="run()", globals={"run": run}, label=name)
        m = timer.blocked_autorange(min_run_time=args.min_run_time)
        # a steady run first: the Timer ran single-threaded, and the first run after it
        # pays for the thread pool, which would make the counted run size its batches small
        run()
        # the inputs and the module closed over live on the device
        with SyncCounter(on_device=[inputs, f.module]) as counter:  # type: ignore[attr-defined]
            run()
        sites[name] = list(counter.report())
        rows[name] = {
            "passed": passed,
            "median_s": m.median,
            "iqr_s": m.iqr,
            "runs": len(m.times),
            "aten_ops": counter.aten_ops,
            "kernels": counter.launches,
            "syncs": counter.total,
            "syncs_by_kind": counter.by_kind(),
            "torch_sync_warnings": torch_sync_warnings(run),
            "item_syncs": counter.kinds.get("item", 0),
            "top_ops": counter.ops.most_common(5),
            "sync_sites": sites[name],
        }

    device_name = (
        torch.cuda.get_device_name(torch.device(args.device))
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    print(f"device: {args.device} ({device_name}); torch {torch.__version__}")
    simulated = " (device simulated on the CPU)" if not args.device.startswith("cuda") else ""
    print(f"syncs{simulated}: " + ", ".join(SYNC_KINDS))
    kinds = " ".join(f"{k:>9}" for k in SYNC_KINDS)
    print(
        f"{'checker':<11} {'median':>10} {'IQR':>9} {'aten ops':>9} {'kernels':>8} {'syncs':>6} "
        f"{kinds}  passed"
    )
    for name, r in rows.items():
        by = " ".join(f"{r['syncs_by_kind'][k]:>9}" for k in SYNC_KINDS)
        extra = f"  torch sync warnings: {r['torch_sync_warnings']}" if args.device != "cpu" else ""
        if r["syncs_by_kind"].get("mixed"):
            extra += f"  MIXED host/device operands: {r['syncs_by_kind']['mixed']}"
        print(
            f"{name:<11} {r['median_s'] * 1e3:8.2f}ms {r['iqr_s'] * 1e3:7.2f}ms "
            f"{r['aten_ops']:>9} {r['kernels']:>8} {r['syncs']:>6} {by}  {r['passed']}{extra}"
        )
    ratio = ops = None
    if "ours full" in rows and "torch full" in rows:
        ratio = rows["ours full"]["median_s"] / rows["torch full"]["median_s"]
        ops = rows["ours full"]["aten_ops"] / rows["torch full"]["aten_ops"]
        print(
            f"full mode: ours / torch = {ratio:.3f} in time, {ops:.3f} in operators "
            f"(target on a GPU: <= {TARGET_RATIO})"
        )
    if "ours fast" in rows and "torch fast" in rows:
        fast = rows["ours fast"]["median_s"] / rows["torch fast"]["median_s"]
        print(
            f"fast mode: ours / torch = {fast:.3f} in time; syncs "
            f"{rows['ours fast']['syncs']} vs {rows['torch fast']['syncs']}"
        )
    if args.sites:
        print(f"\nwhere the syncs of {args.sites} come from:")
        for line in sites.get(args.sites, []):
            print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"device": args.device, "device_name": device_name, "torch": torch.__version__}
        payload = {"meta": meta, "rows": rows, "full_time_ratio": ratio, "full_ops_ratio": ops}
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
