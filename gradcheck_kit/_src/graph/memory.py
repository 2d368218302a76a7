"""Memory: whether two tensors, parameters or NumPy arrays see the same bytes.

* :func:`assert_shares_memory` / :func:`assert_no_shared_memory` — for tensors,
  parameters and NumPy arrays in any combination: element-exact on the CPU,
  by byte range elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch

from ..errors import InvalidArgument, InvalidArgumentType
from .common import Msg, check_msg, compose, conclude, describe, listed
from .sites import local_names

__all__ = ["assert_shares_memory", "assert_no_shared_memory"]


@dataclass(frozen=True)
class _Memory:
    name: str
    what: str
    device: str
    start: int
    end: int  # exclusive; start == end for an empty tensor
    array: np.ndarray[Any, Any] | None  # a NumPy view for an exact overlap test, when possible
    storage: int | None


def _extent(
    ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int
) -> tuple[int, int]:
    if any(s == 0 for s in shape):
        return ptr, ptr
    low = sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s < 0)
    high = sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s > 0)
    return ptr + low, ptr + high + itemsize


# np.shares_memory's budget; past it the answer falls back to the byte ranges.
_SHARES_MEMORY_WORK: Any = 1_000_000
_INT_BY_ITEMSIZE: Final = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _numpy_view(t: torch.Tensor) -> np.ndarray[Any, Any] | None:
    if t.device.type != "cpu" or t.layout != torch.strided or t.is_neg():
        return None
    try:
        if t.is_conj():
            t = t.conj()
        if t.is_complex():
            t = torch.view_as_real(t)
        return t.view(_INT_BY_ITEMSIZE[t.element_size()]).numpy()
    except (RuntimeError, KeyError, TypeError):
        return None


def _memory(value: Any, name: str) -> _Memory:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.layout != torch.strided or t.is_meta:
            raise InvalidArgument(
                f"{name!r} is a {t.layout} tensor; only dense tensors have memory."
            )
        start, end = _extent(
            t.data_ptr(),
            tuple(t.shape),
            tuple(s * t.element_size() for s in t.stride()),
            t.element_size(),
        )
        return _Memory(
            name,
            describe(value),
            str(t.device),
            start,
            end,
            _numpy_view(t),
            t.untyped_storage().data_ptr(),
        )
    if isinstance(value, np.ndarray):
        ptr = int(value.__array_interface__["data"][0])
        start, end = _extent(ptr, tuple(value.shape), tuple(value.strides), value.itemsize)
        what = f"{value.dtype} NumPy array of shape {tuple(value.shape)}"
        return _Memory(name, what, "cpu", start, end, value, None)
    raise InvalidArgumentType(
        f"{name}={value!r} must be a torch.Tensor, an nn.Parameter or a NumPy array, "
        f"not {type(value).__name__}."
    )


def _overlap(a: _Memory, b: _Memory) -> int:
    """Bytes of overlap between the two extents (0: no shared memory)."""
    if a.device != b.device or a.start == a.end or b.start == b.end:
        return 0
    overlap = min(a.end, b.end) - max(a.start, b.start)
    if overlap <= 0:
        return 0
    if a.array is not None and b.array is not None:
        try:
            if not np.shares_memory(a.array, b.array, max_work=_SHARES_MEMORY_WORK):
                return 0
        except np.exceptions.TooHardError:
            pass
    return overlap


# What a failed check says: its header and lines, or None where the memories pass.
_Failure = Callable[[_Memory, _Memory, int], tuple[str, list[str]] | None]


def _judge_sharing(check: str, a: Any, b: Any, msg: Msg, failure: _Failure) -> None:
    """Measure both memories, ask ``failure`` for a verdict on their overlap, publish it."""
    __tracebackhide__ = True
    check_msg(msg)
    started = time.perf_counter()
    local = local_names()
    ma, mb = _memory(a, local.get(id(a), "a")), _memory(b, local.get(id(b), "b"))
    names = [ma.name, mb.name]
    # the same object overlaps itself entirely, wherever its bytes are
    found = failure(ma, mb, ma.end - ma.start if a is b else _overlap(ma, mb))
    if found is None:
        conclude(check, listed(names), names, (), None, started)
        return
    header, lines = found
    conclude(check, listed(names), names, names, compose(header, check, lines, msg), started)


def assert_shares_memory(a: Any, b: Any, *, msg: Msg = None) -> None:
    """Assert that ``a`` and ``b`` are views of the same memory: writing one changes the other.

    For tensors, ``nn.Parameter``s and NumPy arrays in any combination: the
    NumPy bridge (``t.numpy()``, ``torch.from_numpy(a)``) shares memory, and so
    does a parameter with what an optimizer holds as long as nobody re-assigned
    it with ``nn.Parameter(...)``. Element-exact on the CPU (two interleaved
    slices of one buffer do not share), by byte range elsewhere.

    Args:
        a: a tensor, parameter or NumPy array.
        b: another.
        msg: text put before the message, or a callable that rewrites it.

    Raises:
        GraphCheckError: they do not share memory.
        InvalidArgumentType: one is neither a tensor nor a NumPy array.

    Examples:
        >>> import torch
        >>> t = torch.ones(3)
        >>> assert_shares_memory(t, t.numpy())
        >>> assert_shares_memory(t, t.clone())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] Tensors do not share ...
    """
    __tracebackhide__ = True

    def failure(ma: _Memory, mb: _Memory, overlap: int) -> tuple[str, list[str]] | None:
        if a is b or overlap:
            return None
        return "Tensors do not share memory!", [
            f"{ma.name!r}: {ma.what}, bytes [{ma.start:#x}, {ma.end:#x}).",
            f"{mb.name!r}: {mb.what}, bytes [{mb.start:#x}, {mb.end:#x}).",
            "Expected: one memory seen through both, so that writing one changes the other.",
            "Found: separate memory; writing one leaves the other as it was.",
            "Likely cause: a copy was made: nn.Parameter(...) assigned to a module attribute "
            "(the optimizer keeps the old tensor), .clone(), .copy(), torch.tensor(array), "
            "or .to() another dtype or device.",
            "Fix: share instead of copying: write parameters through `p.data = ...` or "
            "`p.copy_(...)` under torch.no_grad(); use torch.from_numpy() / Tensor.numpy() "
            "for the NumPy bridge; .view() / .detach() for tensors.",
        ]

    _judge_sharing("assert_shares_memory", a, b, msg, failure)


def assert_no_shared_memory(a: Any, b: Any, *, msg: Msg = None) -> None:
    """Assert that ``a`` and ``b`` use separate memory: writing one cannot change the other.

    Args:
        a: a tensor, parameter or NumPy array.
        b: another.
        msg: text put before the message, or a callable that rewrites it.

    Raises:
        GraphCheckError: they share memory; the message says how many bytes overlap.
        InvalidArgumentType: one is neither a tensor nor a NumPy array.

    Examples:
        >>> import torch
        >>> weights = torch.ones(3)
        >>> assert_no_shared_memory(weights, weights.clone())

        A slice is a view, so it shares the bytes it shows:

        >>> head = weights[:2]
        >>> assert_no_shared_memory(weights, head)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] Tensors share memory! ...
    """
    __tracebackhide__ = True

    def failure(ma: _Memory, mb: _Memory, overlap: int) -> tuple[str, list[str]] | None:
        if not overlap:
            return None
        how = (
            "they are the same object"
            if a is b
            else f"{overlap} bytes of their extents overlap, at [{max(ma.start, mb.start):#x}, "
            f"{min(ma.end, mb.end):#x})"
        )
        return "Tensors share memory!", [
            f"{ma.name!r}: {ma.what}.",
            f"{mb.name!r}: {mb.what}.",
            "Expected: separate memory.",
            f"Found: shared memory: {how}; writing one changes the other.",
            "Likely cause: Tensor.numpy() and torch.from_numpy() share memory with the tensor; "
            ".detach(), .data, .view(), slicing and transposes are views of it.",
            "Fix: take a copy: .clone() for a tensor, .copy() for a NumPy array, or "
            "torch.tensor(array), which copies.",
        ]

    _judge_sharing("assert_no_shared_memory", a, b, msg, failure)
