"""State-safety probes: does every check give back module state reached in any way?

A check must leave every parameter, buffer and captured tensor bit-identical, also
when ``fn`` raises. The inputs, the direct closure and a bound ``self`` have long
been restored from a snapshot; this sweep probes the other ways a function reaches
state, under every check that calls user code:

* checks: ``check_gradients`` (full, fast), ``check_module_gradients``,
  ``check_matches_manual``, ``check_second_order``, ``check_autograd_function``,
  ``check_same_training``, ``benchmark_devices`` (CPU) and, where CUDA is present,
  ``check_device_parity``;
* ways of reaching the state: direct closure, a global of ``fn``'s module, a
  ``functools.partial``, ``self.model`` of a callable object, a bound method of a
  plain object, a dict and a list of modules in a closure, a helper function;
* kinds of state: BatchNorm in train mode (running statistics, batch counter),
  BatchNorm in eval mode (nothing written: a control), a module whose forward
  updates a registered buffer in place, an ``.add_`` on a captured tensor, an
  ``out=`` op into a captured tensor, a ``_foreach_add_`` over captured tensors;
* and, for the gradient checks, ``fn`` raising at its third call.

A probe is a violation when any watched tensor's bits (compared as integers, so
-0.0 and NaN payloads count) or its ``.grad`` differ after the check.

    python benchmarks/state_safety_probes.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import gradcheck_kit as gk

Call = Callable[[Any, torch.Tensor], torch.Tensor]


class EmaBuffer(nn.Module):
    """A forward that updates a registered buffer and a counter in place."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.register_buffer("ema", torch.zeros(width))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ema.mul_(0.9).add_(0.1 * x.detach().mean(0))
        self.calls.add_(1)
        return torch.tanh(self.linear(x))


@dataclass
class Kind:
    """Some state, how fn uses it, and the tensors to watch."""

    name: str
    target: Any
    call: Call
    watched: list[tuple[str, torch.Tensor]]


def _module_kind(name: str, module: nn.Module) -> Kind:
    module = module.double()
    watched = [(f"param {n}", p) for n, p in module.named_parameters()]
    watched += [(f"buffer {n}", b) for n, b in module.named_buffers()]
    return Kind(name, module, lambda m, x: m(x), watched)


def _side_effect(write: Callable[[Any, torch.Tensor], None]) -> Call:
    def call(target: Any, x: torch.Tensor) -> torch.Tensor:
        write(target, x)
        return torch.sin(x) * 2.0

    return call


def kinds(width: int) -> list[Kind]:
    """Fresh state of every kind (new tensors each time: probes must not share state)."""
    torch.manual_seed(0)
    acc = torch.randn(width, dtype=torch.float64)
    cache = torch.randn(4, width, dtype=torch.float64)
    pair = [torch.randn(width, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    return [
        _module_kind(
            "batchnorm_train", nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width))
        ),
        _module_kind(
            "batchnorm_eval", nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width)).eval()
        ),
        _module_kind("buffer_in_place", EmaBuffer(width)),
        Kind(
            "tensor_add_",
            acc,
            _side_effect(lambda t, x: t.add_(x.detach().sum(0))),
            [("captured", acc)],
        ),
        Kind(
            "out_op",
            cache,
            _side_effect(lambda t, x: torch.mul(x.detach(), 2.0, out=t)),
            [("captured", cache)],
        ),
        Kind(
            "foreach_add_",
            pair,
            _side_effect(lambda ts, x: torch._foreach_add_(ts, 1.0)),
            [("captured[0]", pair[0]), ("captured[1]", pair[1])],
        ),
    ]


class Holder:
    """A plain callable object holding the state as ``self.model``."""

    def __init__(self, model: Any, call: Call) -> None:
        self.model = model
        self._call = call

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.model, x)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.model, x)


def _closure(target: Any, call: Call) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return call(target, x)

    return fn


def _global(target: Any, call: Call) -> Callable[[torch.Tensor], torch.Tensor]:
    namespace: dict[str, Any] = {"STATE": target, "CALL": call}
    exec("def fn(x):\n    return CALL(STATE, x)\n", namespace)  # a module-level global
    fn: Callable[[torch.Tensor], torch.Tensor] = namespace["fn"]
    return fn


def _dict(target: Any, call: Call) -> Callable[[torch.Tensor], torch.Tensor]:
    table = {"state": target}

    def fn(x: torch.Tensor) -> torch.Tensor:
        return call(table["state"], x)

    return fn


def _list(target: Any, call: Call) -> Callable[[torch.Tensor], torch.Tensor]:
    items = [target]

    def fn(x: torch.Tensor) -> torch.Tensor:
        return call(items[0], x)

    return fn


def _helper(target: Any, call: Call) -> Callable[[torch.Tensor], torch.Tensor]:
    def helper(x: torch.Tensor) -> torch.Tensor:
        return call(target, x)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return helper(x)

    return fn


WAYS: dict[str, Callable[[Any, Call], Callable[[torch.Tensor], torch.Tensor]]] = {
    "closure": _closure,
    "global": _global,
    "partial": lambda target, call: functools.partial(call, target),
    "self.model": Holder,
    "bound_method": lambda target, call: Holder(target, call).run,
    "dict_closure": _dict,
    "list_closure": _list,
    "helper_function": _helper,
}


def _raising(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    calls = [0]

    def raising(x: torch.Tensor) -> torch.Tensor:
        out = fn(x)  # the state is written first
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("probe: fn raises at its third call")
        return out

    return raising


class _Wrap(nn.Module):
    """A module around fn (not a submodule: fn's state stays out of sight of the snapshot)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))
        object.__setattr__(self, "fn", fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.scale


def _function_class(fn: Callable[[torch.Tensor], torch.Tensor]) -> type[torch.autograd.Function]:
    class UsesState(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            fn(x)  # the side effect on the state; the output is x * 2
            return x * 2.0

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            return grad * 2.0

    return UsesState


def _manual(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Any:
    def vjp(v: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaf = point.detach().requires_grad_()
            return torch.autograd.grad(fn(leaf), leaf, v)[0]

    return gk.check_matches_manual(fn, inputs=x, manual_vjp=vjp, mode="full")


def _same_training(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Any:
    def step(p: torch.Tensor) -> None:
        fn(x.detach())
        p.mul_(0.9)

    return gk.check_same_training(step, step, torch.ones(3, dtype=torch.float64), steps=2)


CHECKS: dict[str, Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], Any]] = {
    "check_gradients/full": lambda fn, x: gk.check_gradients(fn, x, mode="full"),
    "check_gradients/fast": lambda fn, x: gk.check_gradients(fn, x, mode="fast"),
    "check_module_gradients": lambda fn, x: gk.check_module_gradients(_Wrap(fn), x.detach()),
    "check_matches_manual": _manual,
    "check_second_order": lambda fn, x: gk.check_second_order(fn, x, mode="fast"),
    "check_autograd_function": lambda fn, x: gk.check_autograd_function(_function_class(fn), (x,)),
    "check_same_training": _same_training,
    "benchmark_devices": lambda fn, x: gk.benchmark_devices(
        fn,
        lambda: x.detach().clone().requires_grad_(),
        devices=("cpu",),
        warmup=1,
        min_run_time=0.001,
    ),
}
if torch.cuda.is_available():
    CHECKS["check_device_parity"] = lambda fn, x: gk.check_device_parity(
        fn, lambda: x.detach().clone().requires_grad_(), devices=("cpu", "cuda")
    )
RAISING_CHECKS = ("check_gradients/full", "check_gradients/fast")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().reshape(-1).view(torch.uint8)


def _changes(watched: list[tuple[str, torch.Tensor]], before: list[Any]) -> list[str]:
    out = []
    for (label, t), (bits, grad) in zip(watched, before, strict=True):
        if not torch.equal(_bits(t), bits):
            out.append(f"{label} bits")
        if t.grad is not grad:
            out.append(f"{label} .grad")
    return out


@dataclass
class Probe:
    check: str
    way: str
    kind: str
    raises: bool
    changed: list[str]
    error: str | None


def run_probe(check: str, way: str, kind_index: int, raises: bool, width: int = 3) -> Probe:
    """One probe on fresh state: run the check, then compare every watched tensor."""
    kind = kinds(width)[kind_index]
    fn = WAYS[way](kind.target, kind.call)
    if raises:
        fn = _raising(fn)
    x = torch.randn(4, width, dtype=torch.float64, requires_grad=True)
    before = [(_bits(t), t.grad) for _, t in kind.watched]
    error = None
    try:
        CHECKS[check](fn, x)
    except Exception as exc:  # a probe records what the check raised
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    return Probe(check, way, kind.name, raises, _changes(kind.watched, before), error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the gradient checks only")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every probe here")
    args = parser.parse_args()
    checks = list(RAISING_CHECKS) if args.quick else list(CHECKS)
    plan = [
        (check, way, k, False) for check in checks for way in WAYS for k in range(len(kinds(3)))
    ]
    plan += [(check, way, k, True) for check in RAISING_CHECKS for way in WAYS for k in range(6)]
    start = time.perf_counter()
    probes = [run_probe(*p) for p in plan]
    bad = [p for p in probes if p.changed]
    unexpected = [p for p in probes if p.error and not p.raises]
    seconds = time.perf_counter() - start
    raising = len(RAISING_CHECKS) * len(WAYS) * 6
    print(f"probes run: {len(probes)} ({len(checks)} checks x {len(WAYS)} ways x 6 kinds", end="")
    print(f", + {raising} with fn raising) in {seconds:.1f} s")
    print(f"violations: {len(bad)}")
    for p in bad:
        how = " (fn raises)" if p.raises else ""
        print(f"  {p.check} / {p.way} / {p.kind}{how}: {', '.join(p.changed)}")
    print(f"checks that raised without being asked to: {len(unexpected)}")
    for p in unexpected:
        print(f"  {p.check} / {p.way} / {p.kind}: {p.error}")
    if args.json:
        args.json.write_text(json.dumps([p.__dict__ for p in probes], indent=1))


if __name__ == "__main__":
    main()
