"""One (output leaf, input leaf) block of a Jacobian, as the diagnosis reads it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidArgument, UnsupportedInputError
from ..validation import check_type

__all__ = ["Block"]


@dataclass(frozen=True, eq=False)
class Block:
    """One (output leaf, input leaf) block of the Jacobian, analytic and numeric.

    Row ``i`` of each matrix belongs to element ``i`` of the flattened output
    leaf, column ``j`` to element ``j`` of the flattened input leaf. Equality is
    identity (tensors have no single truth value).

    Attributes:
        output: Leaf path of the output, e.g. ``"output"`` or ``"output['loss']"``.
        input: Leaf path of the input, e.g. ``"inputs[0]"`` or ``"params/fc1.weight"``.
        output_shape: Shape of the output leaf.
        input_shape: Shape of the input leaf.
        analytic: ``(out_numel, in_numel)`` float tensor, d out[i] / d in[j] by autograd.
        numeric: Same shape, by finite differences.
        mismatch: Same shape, bool: True where ``|analytic - numeric|`` exceeds the tolerance.
        input_values: ``(in_numel,)`` float tensor, the point at which the Jacobian was taken.

    Raises:
        TypeError: A field has the wrong type.
        InvalidArgument: The tensors' shapes do not fit the leaf shapes.
        UnsupportedInputError: A matrix is complex.

    Examples:
        >>> import torch
        >>> x = torch.tensor([1.0, -2.0], dtype=torch.float64)
        >>> jac = torch.diag(2 * x)
        >>> block = Block("output", "inputs[0]", (2,), (2,), jac, jac,
        ...               torch.zeros(2, 2, dtype=torch.bool), x)
        >>> block.analytic.shape
        torch.Size([2, 2])
    """

    output: str
    input: str
    output_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    analytic: torch.Tensor
    numeric: torch.Tensor
    mismatch: torch.Tensor
    input_values: torch.Tensor

    def __post_init__(self) -> None:
        check_type(str, self.output, "output")
        check_type(str, self.input, "input")
        for name in ("output_shape", "input_shape"):
            shape = getattr(self, name)
            if not isinstance(shape, tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise InvalidArgument(f"{name}={shape!r} must be a tuple of ints >= 0.")
        for name in ("analytic", "numeric", "mismatch", "input_values"):
            check_type(torch.Tensor, getattr(self, name), name)
        rows, cols = math.prod(self.output_shape), math.prod(self.input_shape)
        for name in ("analytic", "numeric", "mismatch"):
            tensor: torch.Tensor = getattr(self, name)
            if tuple(tensor.shape) != (rows, cols):
                raise InvalidArgument(
                    f"{name} has shape {tuple(tensor.shape)}, but output_shape="
                    f"{self.output_shape} and input_shape={self.input_shape} "
                    f"need ({rows}, {cols})."
                )
            if tensor.is_complex():
                raise UnsupportedInputError(f"{name} is complex ({tensor.dtype}).")
        if self.mismatch.dtype != torch.bool:
            raise InvalidArgument(f"mismatch must be a bool tensor, not {self.mismatch.dtype}.")
        if self.input_values.numel() != cols:
            raise InvalidArgument(
                f"input_values has {self.input_values.numel()} elements, but "
                f"input_shape={self.input_shape} has {cols}."
            )
        if self.input_values.is_complex():
            raise UnsupportedInputError(f"input_values is complex ({self.input_values.dtype}).")
