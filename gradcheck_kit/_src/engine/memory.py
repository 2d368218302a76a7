"""The memory budget of a check, and the measured footprint of one evaluation.

A check evaluates ``fn`` at many points at once (a ``vmap`` over perturbed
inputs, a batched backward over cotangents), and each of those evaluations
allocates what one plain call allocates: its intermediate activations, not only
its inputs and outputs. So batches are sized from a *measured* per-evaluation
peak: :class:`AllocationCounter`, a ``TorchDispatchMode``, adds up the bytes of
every tensor storage created while it is active and subtracts them when the
storage is freed, on any device. Counting costs a few microseconds per
operator, so it runs only where a batch could come near the budget.

The promise: a check's peak stays within ``max_memory`` plus the peak of one
plain forward and backward pass of ``fn`` (the one evaluation that any check,
torch's included, must afford). :class:`MemoryBudget` keeps that account; only
when even one evaluation does not fit does it raise :class:`MemoryBudgetError`,
naming what would fit.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..compat import CONJ_OP, conj_of_scalar
from ..errors import MemoryBudgetError

__all__ = [
    "AllocationCounter",
    "MemoryBudget",
    "Footprint",
    "MAX_BATCH_ROWS",
    "format_bytes",
]


# vmap and batched backward gain little from batches longer than this, and per-row
# bookkeeping tensors stay small.
MAX_BATCH_ROWS = 1024
# Bytes per second that no CPU thread writes faster: a function that ran in t seconds
# cannot have filled more than t * this. Generous on purpose (memory bandwidth per core
# is 10-20 GB/s), as a batch's size rests on it.
_BYTES_PER_SECOND_PER_THREAD = 32e9
# The share of the budget a batch may take before its backward rows are measured.
_UNMEASURED_SHARE = 8
# cuDNN workspaces and other device scratch no tensor count sees, as a multiple of the
# tensors' own bytes.
_CUDA_SCRATCH = 3


def format_bytes(n: float) -> str:
    """A byte count for people: ``'3.2 MiB'``.

    Examples:
        >>> format_bytes(3 * 2**20)
        '3.0 MiB'
        >>> format_bytes(512)
        '512 B'
    """
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
    return f"{n:.1f} GiB"  # pragma: no cover - the loop returns


class AllocationCounter(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while the mode is active.

    Views share their base's storage and count once; a storage is subtracted
    when it is freed, also after the mode was left (so ``live`` tells what a
    block left allocated). Works on every device and under ``vmap`` and the
    autograd engine.

    Examples:
        >>> with AllocationCounter() as counter:
        ...     y = torch.ones(1000, dtype=torch.float64).exp()
        >>> counter.peak >= 16000, counter.live == 8000
        (True, True)
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.live = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref[torch.UntypedStorage]] = {}

    def _freed(self, key: int, nbytes: int, _: object = None) -> None:
        if self._refs.pop(key, None) is not None:
            self.live -= nbytes

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: Any = (),
        kwargs: Any = None,
    ) -> Any:
        # torch releases that hand this mode a Python scalar for conj (compat.py)
        out = conj_of_scalar(func, args) if func is CONJ_OP else None
        if out is None:
            out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in self._refs:
                continue
            nbytes = int(storage.nbytes())
            self._refs[key] = weakref.ref(storage, functools.partial(self._freed, key, nbytes))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


@dataclass
class MemoryBudget:
    """The bytes a check may hold beyond one plain forward and backward pass.

    ``held`` counts what the check keeps between batches (Jacobian blocks);
    :meth:`rows` sizes a batch so that the batch, with what is held, fits.

    Examples:
        >>> budget = MemoryBudget(limit=10_000)
        >>> budget.rows(per_row=1_000, own_peak=0, extra=0, wanted=64, what="a batch")
        10
    """

    limit: int
    held: int = 0

    @property
    def available(self) -> int:
        """Bytes not held, that a batch may use."""
        return self.limit - self.held

    @contextmanager
    def holding(self, nbytes: int) -> Iterator[None]:
        """Count ``nbytes`` as held for the span of the block."""
        self.held += nbytes
        try:
            yield
        finally:
            self.held -= nbytes

    def require(self, need: int, what: str) -> None:
        """Raise :class:`MemoryBudgetError` unless ``need`` bytes are available.

        Raises:
            MemoryBudgetError: naming ``what``, the need and a budget that fits.
        """
        if need > self.available:
            held = f" while the check already holds {format_bytes(self.held)}" if self.held else ""
            raise MemoryBudgetError(
                f"{what} needs at least {format_bytes(need)} for one evaluation's copies of "
                f"inputs and outputs (on top of fn's own forward and backward peak){held}, over "
                f"max_memory={self.limit:,} bytes ({format_bytes(self.limit)}). Pass "
                f"max_memory={_round_up(need + self.held):,} or more."
            )

    def rows(self, *, per_row: int, own_peak: int, extra: int, wanted: int, what: str) -> int:
        """How many rows of a batch fit: at least 1, at most ``wanted``.

        A batch of ``r`` rows costs ``r * per_row`` (copies of inputs and outputs)
        plus ``(r - 1) * own_peak``: one evaluation's own peak is what a plain
        forward and backward pass costs anyway. ``extra`` is what the batch needs
        once whatever its size.

        Raises:
            MemoryBudgetError: not even one row fits.
        """
        self.require(per_row + extra, what)
        room = self.available - extra
        fit = 1 + (room - per_row) // max(1, per_row + own_peak)
        return int(max(1, min(wanted, fit, MAX_BATCH_ROWS)))


def _round_up(n: int) -> int:
    """``n`` rounded up to two significant digits, for a suggestion in a message."""
    if n <= 0:
        return 1
    scale: int = 10 ** max(0, int(math.log10(n)) - 1)
    return -(-n // scale) * scale


class Footprint:
    """What one evaluation of ``fn`` may allocate, from measurements of one evaluation.

    On the CPU, from its time: a call that ran ``t`` seconds cannot have filled
    more than ``t`` times a generous memory bandwidth, and memory a call never
    writes is never resident. This bound covers what no tensor count sees: the
    scratch buffers of oneDNN convolutions, for one, which on a 7-layer
    descriptor CNN are 2.9 MB a row against 0.5 MB of tensors. On CUDA, where a
    call returns before its kernels finish, from a count of its tensors' bytes
    (:class:`AllocationCounter`) times :data:`_CUDA_SCRATCH` for cuDNN workspaces.

    ``forward`` is for an evaluation without graph (timed or counted on the
    repeat call), ``backward`` for one row of a backward pass (measured on the
    first row a batched backward computes, where its batches could matter).
    """

    def __init__(self, first_call_seconds: float, *, on_cuda: bool) -> None:
        self.on_cuda = on_cuda
        self.bandwidth = _BYTES_PER_SECOND_PER_THREAD * max(1, torch.get_num_threads())
        # until the repeat call is measured: the first call built a graph too, so it
        # bounds an evaluation without one
        self.forward_seconds = first_call_seconds
        self.forward_counted: int | None = None
        self.backward_seconds: float | None = None
        self.backward_counted: int | None = None

    def forward_peak(self) -> int:
        """Bytes one evaluation without graph may allocate."""
        if self.on_cuda:
            return _CUDA_SCRATCH * (self.forward_counted or 0)
        return max(int(self.forward_seconds * self.bandwidth), self.forward_counted or 0)

    def backward_peak(self) -> int:
        """Bytes one row of a backward pass may allocate (thrice a forward until measured)."""
        if self.on_cuda:
            counted = self.backward_counted
            return _CUDA_SCRATCH * counted if counted is not None else 3 * self.forward_peak()
        if self.backward_seconds is None:
            return 3 * self.forward_peak()
        return max(int(self.backward_seconds * self.bandwidth), self.backward_counted or 0)

    def needs_forward_count(self, rows: int, budget: MemoryBudget) -> bool:
        """Whether the repeat call should be counted: on CUDA, where ``rows`` could matter."""
        return self.on_cuda and rows > 1

    def needs_backward_measure(self, rows: int, budget: MemoryBudget) -> bool:
        """Whether to time (and on CUDA count) one backward row before batching ``rows``."""
        if rows <= 1 or self.backward_seconds is not None or self.backward_counted is not None:
            return False
        return rows * self.backward_peak() > budget.available // _UNMEASURED_SHARE
