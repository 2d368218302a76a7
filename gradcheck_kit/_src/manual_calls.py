"""Calling a hand-written derivative: its cotangent, fresh copies, and what it returns.

Used by :mod:`.manual`. ``manual_grad(*inputs)`` and ``manual_vjp(grad_output,
*inputs)`` are called on fresh copies of the working inputs; what they return
is checked against the inputs (one gradient each, of the input's shape) with
messages that name the input and say what to return instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

from .engine.run import FirstCall
from .engine.trees import InputTree, describe_tensor
from .errors import InvalidArgument

__all__ = ["ManualDerivative"]


class ManualDerivative:
    """The user's derivative of ``fn`` at the point of a first call.

    Args:
        manual: ``manual_grad`` or ``manual_vjp``.
        interface: ``"grad"`` or ``"vjp"``.
        tree: the inputs of the check.
        call: ``fn``'s first call (working copies, output structure).
        prepare_rng: run before each call (RNG replay).
        notes: the check's notes, where dtype remarks go.
    """

    def __init__(
        self,
        manual: Callable[..., Any],
        interface: str,
        tree: InputTree,
        call: FirstCall,
        prepare_rng: Callable[[], None],
        notes: list[str],
    ) -> None:
        self.manual = manual
        self.interface = interface
        self.what = "manual_grad" if interface == "grad" else "manual_vjp"
        self.tree = tree
        self.base = call.base
        self.checked = call.checked
        self.spec_leaves, self.spec = pytree.tree_flatten(call.raw)
        self.kept = call.kept
        self.prepare_rng = prepare_rng
        self.notes = notes
        self.calls = 0

    def rows(self, outs: list[torch.Tensor], U: torch.Tensor) -> list[torch.Tensor]:
        """``u_k^T J`` per input by the user's derivative: (K, n_i) float64 each."""
        per_input: list[list[torch.Tensor]] = [[] for _ in self.checked]
        for k in range(int(U.shape[0])):
            for i, g in enumerate(self.once(outs, U[k])):
                per_input[i].append(g.reshape(-1).to(torch.float64).cpu())
        return [torch.stack(rows) for rows in per_input]

    def once(self, outs: list[torch.Tensor], u: torch.Tensor) -> list[torch.Tensor]:
        """One call of the user's derivative on fresh copies: ``u^T J`` per checked input."""
        fresh = [x.detach().clone() for x in self.checked_values()]
        if self.interface == "grad":
            call: Callable[..., Any] = self.manual
        else:
            call = functools.partial(self.manual, self.grad_output(outs, u))
        self.prepare_rng()
        self.calls += 1
        try:
            value = self.tree.call(call, self.base, fresh)
        except InvalidArgument:
            raise
        except Exception as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"gradcheck_kit: raised by {self.what} on copies of the inputs")
            raise
        return [g.detach() for g in self.validate(value)]

    def checked_values(self) -> list[torch.Tensor]:
        """The working copies of the checked inputs."""
        return [self.base[i] for i, leaf in enumerate(self.tree.leaves) if leaf.checked]

    def grad_output(self, outs: list[torch.Tensor], u: torch.Tensor) -> Any:
        """The cotangent ``u`` shaped like fn's output (zeros for outputs not compared)."""
        parts: dict[int, torch.Tensor] = {}
        offset = 0
        for k, o in zip(self.kept, outs, strict=True):
            m = int(o.numel())
            parts[k] = u[offset : offset + m].reshape(o.shape).to(dtype=o.dtype, device=o.device)
            offset += m
        values: list[Any] = []
        floating = 0
        for leaf in self.spec_leaves:
            if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
                default = torch.zeros_like(leaf.detach())
                values.append(parts.get(floating, default))
                floating += 1
            else:
                values.append(None)
        return pytree.tree_unflatten(values, self.spec)

    def validate(self, value: Any) -> list[torch.Tensor]:
        """The user's return value as one gradient per checked input, or InvalidArgument."""
        what, checked, leaves = self.what, self.checked, self.tree.leaves
        expected = ", ".join(f"{leaf.path} ({describe_tensor(leaf.original)})" for leaf in checked)
        if isinstance(value, torch.Tensor):
            got: list[Any] = [value]
        elif isinstance(value, (tuple, list)):
            got = pytree.tree_flatten(value, is_leaf=lambda v: v is None)[0]
        else:
            raise InvalidArgument(
                f"{what} returned {type(value).__name__} ({value!r:.60}); it must return a "
                f"tensor or a tuple of tensors, one gradient per input that requires grad: "
                f"{expected}."
            )
        if len(got) == len(checked):
            picked = got
        elif len(got) == len(leaves):
            picked = [g for g, leaf in zip(got, leaves, strict=True) if leaf.checked]
        else:
            raise InvalidArgument(
                f"{what} returned {len(got)} value(s), but {len(checked)} input(s) require "
                f"grad: {expected}. Return one gradient per input that requires grad, in order, "
                f"or one per input with None where there is no gradient."
            )
        out: list[torch.Tensor] = []
        for leaf, g in zip(checked, picked, strict=True):
            shape = tuple(leaf.original.shape)
            if g is None:
                raise InvalidArgument(
                    f"{what} returned None for {leaf.path} ({describe_tensor(leaf.original)}), "
                    f"which requires grad; return its gradient (torch.zeros_like(...) if it is 0)."
                )
            if not isinstance(g, torch.Tensor):
                raise InvalidArgument(
                    f"{what} returned {type(g).__name__} ({g!r:.40}) for {leaf.path}, not a "
                    f"tensor; the gradient of {leaf.path} must be a tensor of shape {shape} "
                    f"(torch.full_like(x, value) makes one)."
                )
            if not g.is_floating_point():
                raise InvalidArgument(
                    f"{what} returned a {describe_tensor(g)} for {leaf.path}; a gradient is a "
                    f"floating-point tensor of shape {shape}."
                )
            if tuple(g.shape) != shape:
                raise InvalidArgument(
                    f"{what} returned a gradient of shape {tuple(g.shape)} for {leaf.path}, "
                    f"which has shape {shape}; a gradient has the shape of its input (a sum over "
                    f"a broadcast dimension missing, a stray keepdim, or a transpose?)."
                )
            x = self.base[leaves.index(leaf)]
            if g.dtype != x.dtype:
                note = (
                    f"{what} returned {str(g.dtype).removeprefix('torch.')} for {leaf.path}, "
                    f"which was checked in {str(x.dtype).removeprefix('torch.')}"
                )
                if note not in self.notes:
                    self.notes.append(note)
            out.append(g)
        return out
