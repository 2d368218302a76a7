"""Peak memory of gradient checks on real model sizes: gradcheck_kit against torch.

A check batches evaluations of the function, and each evaluation allocates the
function's activations, not only its inputs and outputs: on a CNN that is what
runs a machine out of memory. This script measures, per model and checker, the peak
resident memory the check adds (``benchmarks/_peak_memory.py``: a worker subprocess,
``/proc/self/clear_refs`` and ``VmHWM``, independent of the package), next to the peak
of one plain forward and backward pass of the same function, and the time.

Models (float64, checked with respect to their input, as vision suites check them):

* ``descriptor``: a HardNet-like descriptor, 7 convolutions with batch norm (eval) on a
  1x1x32x32 patch, L2-normalised 128-d output (1,024 inputs, 128 outputs);
* ``unet``: a 2-level UNet, 3 -> 1 channels on 1x3x32x32 (3,072 inputs, 1,024 outputs);
* ``sort``: ``torch.sort`` of 8,000 elements (the OpInfo sample full mode used to refuse).

Checkers: ``kit-full``, ``kit-fast``, ``kit-auto`` (``check_gradients``, default
``max_memory`` of 1 GiB), ``torch-fast`` and ``torch-full`` (``torch.autograd.gradcheck``).

    python benchmarks/peak_memory_models.py [--models descriptor,unet,sort]
        [--checkers ...] [--timeout S] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))

from _peak_memory import PeakMemoryWorker  # noqa: E402

CHECKERS = ("plain", "kit-full", "kit-fast", "kit-auto", "torch-fast", "torch-full")
MODELS = ("descriptor", "unet", "sort")
MIB = 1024 * 1024


def _descriptor() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout, affine=False),
            nn.ReLU(),
        ]

    torch.manual_seed(0)
    net = nn.Sequential(
        *block(1, 32),
        *block(32, 32),
        *block(32, 64, 2),
        *block(64, 64),
        *block(64, 128, 2),
        *block(128, 128),
        nn.Conv2d(128, 128, 8, bias=False),
        nn.BatchNorm2d(128, affine=False),
    ).double()
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)

    def descriptor(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(net(x).flatten(1), dim=1)

    x = torch.rand(1, 1, 32, 32, dtype=torch.float64, requires_grad=True)
    return descriptor, (x,)


def _unet() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    import torch
    from torch import nn

    def conv(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.Tanh())

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc1, self.enc2 = conv(3, 8), conv(8, 16)
            self.mid = conv(16, 16)
            self.dec2, self.dec1 = conv(32, 8), conv(16, 8)
            self.out = nn.Conv2d(8, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.enc1(x)
            e2 = self.enc2(nn.functional.avg_pool2d(e1, 2))
            m = self.mid(nn.functional.avg_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([nn.functional.interpolate(m, scale_factor=2.0), e2], 1))
            d1 = self.dec1(torch.cat([nn.functional.interpolate(d2, scale_factor=2.0), e1], 1))
            return self.out(d1)

    torch.manual_seed(0)
    net = UNet().double().eval()
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    return net, (x,)


def _sort() -> tuple[Callable[..., Any], tuple[Any, ...]]:
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(8000, generator=g, dtype=torch.float64, requires_grad=True)
    return (lambda t: torch.sort(t).values), (x,)


_BUILDERS = {"descriptor": _descriptor, "unet": _unet, "sort": _sort}


def prepare(job: dict[str, Any]) -> Callable[[], Any]:
    """The worker's runner: build the model (not measured), return the measured call."""
    import time

    import torch

    import gradcheck_kit as gk

    if job["model"] == "warmup":
        # imports and first-use set-up (vmap, forward AD, the allocation counter) are
        # paid here, once per worker, and not by the first model measured
        x = torch.rand(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
        w = torch.rand(3, 2, 3, 3, dtype=torch.float64)

        def warm(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.conv2d(t, w).tanh()

        def warm_all() -> dict[str, Any]:
            for mode in ("full", "fast", "auto"):
                gk.check_gradients(warm, (x,), mode=mode)
            for fast in (True, False):
                torch.autograd.gradcheck(warm, (x,), fast_mode=fast)
            return {}

        return warm_all
    fn, inputs = _BUILDERS[job["model"]]()
    checker = job["checker"]

    def run() -> dict[str, Any]:
        start = time.perf_counter()
        if checker == "plain":
            out = fn(*(x.detach().clone().requires_grad_() for x in inputs))
            out.sum().backward()
            return {"seconds": time.perf_counter() - start, "verdict": "-"}
        if checker.startswith("kit-"):
            mode = checker.removeprefix("kit-")
            result = gk.check_gradients(fn, inputs, mode=mode)
            return {
                "seconds": time.perf_counter() - start,
                "verdict": "pass" if result.passed else f"fail ({result.status})",
                "mode": result.mode,
                "notes": list(result.notes),
            }
        fast = checker == "torch-fast"
        ok = torch.autograd.gradcheck(fn, inputs, fast_mode=fast, raise_exception=False)
        return {"seconds": time.perf_counter() - start, "verdict": "pass" if ok else "fail"}

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--checkers", default=",".join(CHECKERS))
    parser.add_argument("--timeout", type=float, default=900.0, metavar="S")
    parser.add_argument("--threads", type=int, default=1, metavar="N")
    parser.add_argument("--memory-limit-gb", type=float, default=16.0)
    parser.add_argument("--json", type=Path, default=_HERE / "results" / "peak_memory_models.json")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    checkers = [c for c in args.checkers.split(",") if c]
    rows: list[dict[str, Any]] = []
    print("| model | checker | peak MiB | seconds | verdict | mode |")
    print("| --- | --- | ---: | ---: | --- | --- |")
    with PeakMemoryWorker(
        "peak_memory_models:prepare",
        memory_limit_gb=args.memory_limit_gb,
        threads=args.threads,
        timeout=args.timeout,
        warmup_job={"model": "warmup", "checker": "all"},
    ) as worker:
        for model in models:
            for checker in checkers:
                record = worker.measure({"model": model, "checker": checker})
                result = record.get("result") or {}
                row = {
                    "model": model,
                    "checker": checker,
                    "outcome": record.get("outcome"),
                    "peak_mib": record.get("peak_bytes", 0) / MIB,
                    "seconds": result.get("seconds", record.get("seconds")),
                    "verdict": result.get("verdict", record.get("outcome")),
                    "mode": result.get("mode", ""),
                    "message": record.get("message", ""),
                    "notes": result.get("notes", []),
                }
                rows.append(row)
                seconds = row["seconds"]
                shown = f"{seconds:.2f}" if isinstance(seconds, float) else "-"
                print(
                    f"| {model} | {checker} | {row['peak_mib']:.1f} | {shown} | "
                    f"{row['verdict']} | {row['mode']} |",
                    flush=True,
                )
    meta = {"threads": args.threads, "cpus": os.cpu_count(), "load": os.getloadavg()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
