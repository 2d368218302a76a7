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
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import MemoryBudgetError

__all__ = [
    "AllocationCounter",
    "MemoryBudget",
    "Footprint",
    "MAX_BATCH_ROWS",
    "format_bytes",
]

T = TypeVar("T")

# vmap and batched backward gain little from batches longer than this, and per-row
# bookkeeping tensors stay small.
MAX_BATCH_ROWS = 1024
# Bytes per second that no CPU thread writes faster: a function that ran in t seconds
# cannot have allocated (and filled) more than t * this. Generous on purpose, so that
# the bound only saves a measurement where the answer is obvious.
_BYTES_PER_SECOND_PER_THREAD = 32e9
# The share of the budget a batch may take without measuring its evaluations first.
_UNMEASURED_SHARE = 8


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


def measured(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and the peak bytes it allocated (its result included)."""
    with AllocationCounter() as counter:
        value = fn()
    return value, counter.peak


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
            raise MemoryBudgetError(
                f"{what} needs at least {format_bytes(need)} for one evaluation's copies of "
                f"inputs and outputs (on top of fn's own forward and backward peak), over "
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
        room = self.available - extra
        if room < per_row:
            need = self.held + extra + per_row
            raise MemoryBudgetError(
                f"{what} needs {format_bytes(per_row + extra)} for one evaluation (on top of "
                f"fn's own forward and backward peak), and the check already holds "
                f"{format_bytes(self.held)}: that is over max_memory={self.limit:,} bytes "
                f"({format_bytes(self.limit)}). Pass max_memory={_round_up(need):,} or more."
            )
        fit = 1 + (room - per_row) // max(1, per_row + own_peak)
        return int(max(1, min(wanted, fit, MAX_BATCH_ROWS)))


def _round_up(n: int) -> int:
    """``n`` rounded up to two significant digits, for a suggestion in a message."""
    if n <= 0:
        return 1
    scale: int = 10 ** max(0, int(math.log10(n)) - 1)
    return -(-n // scale) * scale


class Footprint:
    """What one evaluation of ``fn`` allocates: measured where it matters, bounded elsewhere.

    ``seconds`` is how long the first call took. A function that ran that long
    cannot have filled more than ``seconds`` times a generous memory bandwidth;
    when that bound times the rows of a batch is a small share of the budget,
    no measurement is needed. Otherwise one evaluation runs under
    :class:`AllocationCounter` and its peak is used instead. On CUDA, where calls
    return before the work is done, the time says nothing and evaluations are
    always measured.
    """

    def __init__(self, seconds: float, *, on_cuda: bool) -> None:
        threads = max(1, torch.get_num_threads())
        self.bound = int(seconds * _BYTES_PER_SECOND_PER_THREAD * threads)
        self.on_cuda = on_cuda
        self.forward: int | None = None
        self.backward: int | None = None

    def needs_measuring(self, rows: int, budget: MemoryBudget, factor: int = 1) -> bool:
        """Whether ``rows`` evaluations could come near the budget by the time bound."""
        if self.on_cuda:
            return True
        return rows * factor * self.bound > budget.available // _UNMEASURED_SHARE

    def forward_peak(self) -> int:
        """The measured peak of one evaluation without graph, else the time bound."""
        return self.forward if self.forward is not None else self.bound

    def backward_peak(self) -> int:
        """The measured peak of one single-row backward, else a bound from the forward."""
        if self.backward is not None:
            return self.backward
        # a backward writes a gradient for each saved activation: about the forward again
        return 3 * self.forward_peak()


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Yields a list that holds the elapsed seconds once the block ends."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)
