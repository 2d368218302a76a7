"""Flatten a function's inputs and outputs into leaves with stable, readable paths.

Inputs are a tensor (``fn(x)``), a tuple/list (``fn(*inputs)``) or a dict
(``fn(**inputs)``), nested pytrees allowed. Leaves that are floating tensors
requiring grad are *checked*; every other leaf is passed through. The checker
works on copies: :class:`InputTree` never hands the user's tensors to ``fn``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

from ..coverage import note_outputs
from ..errors import InvalidArgument, UnsupportedInputError
from ..undo import watching_user_code

__all__ = ["InputLeaf", "InputTree", "OutputLeaf", "flatten_outputs", "describe_tensor"]


def describe_tensor(t: torch.Tensor) -> str:
    """A short description like ``float32 tensor of shape (2, 3)`` for messages."""
    dtype = str(t.dtype).removeprefix("torch.")
    return f"{dtype} tensor of shape {tuple(t.shape)}"


def _unsupported_reason(t: torch.Tensor) -> str | None:
    if t.is_sparse or t.layout != torch.strided:
        return f"a {t.layout} tensor (sparse and other non-strided layouts are not supported yet)"
    if t.is_complex():
        return "a complex tensor (complex gradients are not supported yet)"
    if t.device.type == "meta":
        return "a meta tensor (it has no values to differentiate)"
    return None


@dataclass(frozen=True)
class InputLeaf:
    """One leaf of the inputs: where it sits, the user's tensor, and whether it is checked."""

    path: str
    original: Any
    checked: bool


@dataclass(frozen=True)
class OutputLeaf:
    """One floating output tensor and its path (``output``, ``output[1]``, ``output['a']``)."""

    path: str
    tensor: torch.Tensor


class InputTree:
    """The inputs of a check: call ``fn`` with replacement values for the checked leaves.

    Args:
        inputs: a tensor, a tuple/list of positional arguments, or a dict of
            keyword arguments; leaves may nest.
        root: the name that starts every leaf path in messages.
        select: decides which leaves are checked; by default floating tensors
            that require grad.
    """

    def __init__(
        self,
        inputs: Any,
        *,
        root: str = "inputs",
        select: Callable[[torch.Tensor], bool] | None = None,
    ) -> None:
        if isinstance(inputs, torch.Tensor):
            self.call_style = "single"
            container: Any = (inputs,)
        elif isinstance(inputs, (tuple, list)):
            self.call_style = "args"
            container = tuple(inputs)
        elif isinstance(inputs, dict):
            self.call_style = "kwargs"
            bad = [k for k in inputs if not isinstance(k, str)]
            if bad:
                raise InvalidArgument(
                    f"inputs is a dict, so its keys are passed as keyword arguments and must be "
                    f"str; got key {bad[0]!r}."
                )
            container = dict(inputs)
        else:
            raise InvalidArgument(
                f"inputs must be a tensor, a tuple/list of arguments or a dict of keyword "
                f"arguments; got {type(inputs).__name__}. Wrap a single tensor as (x,) or pass it "
                f"directly."
            )
        select = select or (lambda t: t.requires_grad)
        flat: list[tuple[Any, Any]]
        self._spec: pytree.TreeSpec | None = None
        if self.call_style == "single":
            flat = [((), inputs)]  # no pytree walk for the common case
        else:
            flat, self._spec = pytree.tree_flatten_with_path(container)
        self.leaves: list[InputLeaf] = []
        for key_path, value in flat:
            path = "input" if self.call_style == "single" else root + pytree.keystr(key_path)
            checked = False
            if isinstance(value, torch.Tensor):
                checked = value.is_floating_point() and select(value)
                if value.requires_grad or checked:
                    reason = _unsupported_reason(value)
                    if reason:
                        raise UnsupportedInputError(f"{path} is {reason}.")
            elif value.__class__.__name__ == "ndarray":
                raise InvalidArgument(
                    f"{path} is a NumPy array; convert it with torch.from_numpy(...) and set "
                    f"requires_grad=True on it if its gradient should be checked."
                )
            self.leaves.append(InputLeaf(path, value, checked))
        if not any(leaf.checked for leaf in self.leaves):
            described = ", ".join(
                f"{leaf.path} ({describe_tensor(leaf.original)}, requires_grad="
                f"{leaf.original.requires_grad})"
                if isinstance(leaf.original, torch.Tensor)
                else f"{leaf.path} ({type(leaf.original).__name__})"
                for leaf in self.leaves[:6]
            )
            inference = [
                leaf.path
                for leaf in self.leaves
                if isinstance(leaf.original, torch.Tensor) and leaf.original.is_inference()
            ]
            fix = (
                f"{', '.join(inference)} {'was' if len(inference) == 1 else 'were'} created "
                "under torch.inference_mode(), and such "
                "tensors can never require grad outside it: create the inputs outside "
                "inference_mode (torch.no_grad() builds no graph either), or run the check "
                "inside the same inference_mode block after .requires_grad_()."
                if inference
                else "Call .requires_grad_() on the inputs whose gradients should be checked."
            )
            raise InvalidArgument(
                "nothing to check: no input is a floating-point tensor with requires_grad=True "
                f"(got {described or 'no inputs'}). {fix}"
            )

    @property
    def checked(self) -> list[InputLeaf]:
        """The leaves whose gradients are checked, in order."""
        return [leaf for leaf in self.leaves if leaf.checked]

    def working_copies(self, dtype: torch.dtype | None) -> list[Any]:
        """Detached copies of every tensor leaf, floating ones cast to ``dtype`` when given."""
        out: list[Any] = []
        for leaf in self.leaves:
            value = leaf.original
            if isinstance(value, torch.Tensor):
                target = dtype if (dtype is not None and value.is_floating_point()) else value.dtype
                value = value.detach().to(dtype=target, copy=True)
            out.append(value)
        return out

    def call(
        self, fn: Callable[..., Any], base: Sequence[Any], checked_values: Sequence[torch.Tensor]
    ) -> Any:
        """Call ``fn`` on ``base`` leaves with the checked leaves replaced by ``checked_values``.

        The call is user code: in-place writes it makes to tensors that existed
        before the check are undone when the check ends (:mod:`..undo`), and the
        custom Functions in its outputs' graph count as exercised (:mod:`..coverage`).
        """
        outputs = self._call_user_code(fn, base, checked_values)
        note_outputs(outputs)
        return outputs

    def _call_user_code(
        self, fn: Callable[..., Any], base: Sequence[Any], checked_values: Sequence[torch.Tensor]
    ) -> Any:
        if self.call_style == "single" and len(checked_values) == 1:
            with watching_user_code(checked_values[0]):
                return fn(checked_values[0])  # the common case, without rebuilding a pytree
        values = list(base)
        it = iter(checked_values)
        for i, leaf in enumerate(self.leaves):
            if leaf.checked:
                values[i] = next(it)
            elif isinstance(values[i], torch.Tensor):
                # a fresh copy per call, so fn mutating a pass-through input cannot leak
                # into the next evaluation
                values[i] = values[i].clone()
        with watching_user_code(*values):
            if self._spec is None:
                return fn(values[0])
            container = pytree.tree_unflatten(values, self._spec)
            if self.call_style == "args":
                return fn(*container)
            return fn(**container)


def flatten_outputs(output: Any) -> tuple[list[OutputLeaf], list[str]]:
    """Split ``fn``'s return value into floating leaves and skipped (integer/bool) paths.

    A complex output becomes two real leaves, ``<path>.real`` and ``<path>.imag``.

    Raises:
        InvalidArgument: a leaf is not a tensor, or no leaf is a floating tensor.
        UnsupportedInputError: a leaf is sparse.
    """
    if isinstance(output, torch.Tensor):
        flat: list[tuple[str, Any]] = [("output", output)]
    else:
        try:
            pairs, _ = pytree.tree_flatten_with_path(output)
        except Exception as exc:  # pragma: no cover - defensive: exotic containers
            raise InvalidArgument(
                f"fn returned {type(output).__name__}, which is not a tensor or a pytree."
            ) from exc
        flat = [("output" + pytree.keystr(p), v) for p, v in pairs]
    floating: list[OutputLeaf] = []
    skipped: list[str] = []
    for path, value in flat:
        if not isinstance(value, torch.Tensor):
            raise InvalidArgument(
                f"fn must return a tensor or a tuple/list/dict of tensors, but {path} is "
                f"{type(value).__name__} ({value!r:.60}). Return tensors (torch.as_tensor(...)) "
                f"or drop the non-tensor part of the output."
            )
        if value.is_complex() and value.layout == torch.strided:
            # a complex output is two real ones; torch.autograd.gradcheck splits it the same way
            floating.append(OutputLeaf(f"{path}.real", value.real))
            floating.append(OutputLeaf(f"{path}.imag", value.imag))
            continue
        reason = _unsupported_reason(value)
        if reason:
            raise UnsupportedInputError(f"{path} is {reason}.")
        if value.is_floating_point():
            floating.append(OutputLeaf(path, value))
        else:
            skipped.append(path)
    if not floating:
        got = ", ".join(f"{p}" for p, _ in flat) or "nothing"
        raise InvalidArgument(
            f"fn returned no floating-point tensor to differentiate (got {got}). Gradients exist "
            f"only for floating outputs; integer and bool outputs are skipped."
        )
    return floating, skipped
