"""Forward mode judged by the reverse-mode engine: ``check_backward_ad=False`` of the drop-in.

torch.autograd.gradcheck with ``check_backward_ad=False`` compares only the
forward-mode Jacobian with finite differences. The engine compares reverse
mode, so :func:`forward_as_reverse` hands it ``fn`` wrapped in a Function whose
backward is ``J^T g`` with ``J`` built column by column from forward-mode AD:
the engine's finite differences, tolerances and reports then judge forward mode,
and ``fn``'s own backward is never called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd import forward_ad

__all__ = ["forward_as_reverse"]


def _outputs(out: Any) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


class _Call:
    """``fn`` of the checked tensors alone, the other arguments fixed."""

    def __init__(self, fn: Callable[..., Any], inputs: Sequence[Any]) -> None:
        self.fn = fn
        self.inputs = list(inputs)
        self.slots = [
            i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.requires_grad
        ]

    def __call__(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args = list(self.inputs)
        for slot, x in zip(self.slots, xs, strict=True):
            args[slot] = x
        return _outputs(self.fn(*args))


class _FromForward(torch.autograd.Function):
    """Outputs of ``call``; backward ``J^T g`` from forward-mode columns of ``J``."""

    @staticmethod
    def forward(ctx: Any, call: _Call, *xs: torch.Tensor) -> Any:
        ctx.call = call
        ctx.save_for_backward(*xs)
        with torch.no_grad():
            outs = call(*xs)
        return tuple(o.clone() for o in outs)

    @staticmethod
    def backward(ctx: Any, *gs: torch.Tensor | None) -> Any:
        xs = ctx.saved_tensors
        call = ctx.call
        grads: list[torch.Tensor] = []
        for i, x in enumerate(xs):
            flat = torch.zeros(x.numel(), dtype=torch.float64, device=x.device)
            for j in range(x.numel()):
                with torch.no_grad(), forward_ad.dual_level():
                    duals = []
                    for k, other in enumerate(xs):
                        tangent = torch.zeros_like(other)
                        if k == i:
                            tangent.view(-1)[j] = 1
                        duals.append(forward_ad.make_dual(other.detach(), tangent))
                    outs = call(*duals)
                    total = torch.zeros((), dtype=torch.float64, device=x.device)
                    for o, g in zip(outs, gs, strict=True):
                        t = forward_ad.unpack_dual(o).tangent
                        if t is not None and g is not None:
                            total += (t.to(torch.float64) * g.to(torch.float64)).sum()
                flat[j] = total
            grads.append(flat.reshape(x.shape).to(x.dtype))
        return (None, *grads)


def forward_as_reverse(fn: Callable[..., Any], inputs: Sequence[Any]) -> Callable[..., Any]:
    """``fn`` with a backward built from forward-mode AD (for ``check_backward_ad=False``).

    Examples:
        >>> import torch
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> wrapped = forward_as_reverse(torch.sin, (x,))
        >>> y = wrapped(x)
        >>> torch.allclose(torch.autograd.grad(y.sum(), x)[0], x.cos())
        True
    """
    del inputs  # the slots are found per call: the engine passes its own copies

    def call(*args: Any) -> Any:
        plan = _Call(fn, args)
        if not plan.slots or not torch.is_grad_enabled():
            return fn(*args)  # an evaluation for finite differences: no graph wanted
        out = fn(*args)
        outs = _FromForward.apply(plan, *(args[i] for i in plan.slots))  # type: ignore[no-untyped-call]
        return outs[0] if isinstance(out, torch.Tensor) else outs

    return call
