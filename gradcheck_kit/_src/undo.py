"""Undo every in-place write a check makes to tensors that existed before it started.

:func:`~.state.preserved` restores what it can reach from the objects it is
given: the inputs, the closure cells, a bound ``self``. A module reached another
way (a global, a ``functools.partial``, ``self.model`` of a callable object, a
dict of modules, a helper function) is out of its sight, and a BatchNorm in
training mode updates its running statistics in place at every evaluation.

:func:`undoing_writes` closes that gap at the level where every write happens:
a :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees each ATen op,
and for each argument the op's schema marks as written (``Tensor(a!)``: in-place
and ``out=`` ops, ``_foreach_*_``, BatchNorm's running statistics) it copies the
bytes of that tensor's storage the first time the storage is written. On exit,
also when the block raises, every such storage gets its bytes back, bit for bit.
Storages allocated inside the block (the check's own copies, intermediates) are
never copied: ops' fresh outputs are noted as they are made.

Not covered (no op writes them, or no op the dispatcher sees): rebinding
(``p.data = t``, ``module.buf = t``, a ``.grad`` created where there was none),
Python attributes and counters, tensor metadata (``resize_``, ``set_``: bytes
only), and writes that bypass the dispatcher (NumPy views of a tensor, DLPack
consumers, custom kernels writing through raw pointers, compiled graphs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["WriteLog", "undoing_writes"]

# Ops that update arguments their schema does not mark as written: BatchNorm's
# running statistics (torch kept these schemas for backward compatibility).
_UNDECLARED_WRITES: Final = {
    "aten::native_batch_norm": ("running_mean", "running_var"),
    "aten::cudnn_batch_norm": ("running_mean", "running_var"),
    "aten::miopen_batch_norm": ("running_mean", "running_var"),
}


@dataclass(frozen=True)
class _Plan:
    """What one op overload writes and which of its outputs are freshly allocated."""

    # (position, name) of each written argument; position None: keyword-only
    writes: tuple[tuple[int | None, str], ...]
    # indices of the returns that alias nothing (new storage)
    fresh: tuple[int, ...]
    single_return: bool


_PLANS: dict[Any, _Plan] = {}


def _plan(func: Any) -> _Plan:
    schema = func._schema
    undeclared = _UNDECLARED_WRITES.get(schema.name, ())
    writes = tuple(
        (None if arg.kwarg_only else position, arg.name)
        for position, arg in enumerate(schema.arguments)
        if (arg.alias_info is not None and arg.alias_info.is_write) or arg.name in undeclared
    )
    fresh = tuple(i for i, ret in enumerate(schema.returns) if ret.alias_info is None)
    plan = _Plan(writes, fresh, len(schema.returns) == 1)
    _PLANS[func] = plan
    return plan


def _storage_of(t: torch.Tensor) -> torch.UntypedStorage | None:
    """``t``'s storage, or None where it has none we can copy (sparse, meta, wrapper tensors)."""
    if t.layout != torch.strided or t.is_meta:
        return None
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None


def _bytes_of(storage: torch.UntypedStorage) -> torch.Tensor:
    """A uint8 tensor over all of ``storage``'s bytes (writes through it write the storage)."""
    view = torch.empty(0, dtype=torch.uint8, device=storage.device)
    return view.set_(storage, 0, (storage.nbytes(),), (1,))


class WriteLog(TorchDispatchMode):
    """A dispatch mode that keeps the pre-image of every pre-existing storage written in place.

    Use it through :func:`undoing_writes`, which also restores on exit.

    Examples:
        >>> buf = torch.zeros(2)
        >>> with WriteLog() as log:
        ...     _ = buf.add_(1.0)
        >>> log.restore()
        >>> buf
        tensor([0., 0.])
    """

    def __init__(self) -> None:
        super().__init__()
        # StorageImpl addresses of storages allocated inside the mode. An address is
        # reused only after its storage is freed, and a storage that existed at entry
        # cannot be freed and come back: a pre-existing one is never mistaken for these.
        self._born: set[int] = set()
        # storage address -> (storage, its bytes before the first write)
        self._saved: dict[int, tuple[torch.UntypedStorage, torch.Tensor]] = {}

    @property
    def saved_storages(self) -> int:
        """How many pre-existing storages were written (and will be restored).

        Examples:
            >>> with WriteLog() as log:
            ...     _ = torch.zeros(1).add_(1.0)  # born inside: nothing to keep
            >>> log.saved_storages
            0
        """
        return len(self._saved)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        plan = _PLANS.get(func) or _plan(func)
        for position, name in plan.writes:
            target = args[position] if position is not None and position < len(args) else None
            if target is None:
                target = kwargs.get(name)
            if isinstance(target, torch.Tensor):
                self._keep(target)
            elif isinstance(target, (list, tuple)):
                for item in target:
                    if isinstance(item, torch.Tensor):
                        self._keep(item)
        out = func(*args, **kwargs)
        if plan.fresh:
            self._note_births(out, plan)
        return out

    def _keep(self, t: torch.Tensor) -> None:
        storage = _storage_of(t)
        if storage is None:
            return
        key = storage._cdata
        if key in self._born or key in self._saved:
            return
        # Ops inside a dispatch handler do not re-enter the mode.
        self._saved[key] = (storage, _bytes_of(storage).clone())

    def _note_births(self, out: Any, plan: _Plan) -> None:
        born = self._born
        results = (out,) if plan.single_return else out
        for index in plan.fresh:
            value = results[index]
            items = value if isinstance(value, (list, tuple)) else (value,)
            for item in items:
                if isinstance(item, torch.Tensor) and item.layout == torch.strided:
                    with contextlib.suppress(RuntimeError, NotImplementedError):
                        born.add(item.untyped_storage()._cdata)

    def restore(self) -> None:
        """Write every kept pre-image back into its storage (only where the bytes differ).

        Call it after the mode has exited. Writes go through a fresh byte view of
        the storage, so no autograd graph and no tensor's ``_version`` sees them.

        Examples:
            >>> x = torch.ones(3)
            >>> with WriteLog() as log:
            ...     _ = torch.mul(x, 0, out=x)
            >>> log.restore()
            >>> x
            tensor([1., 1., 1.])
        """
        with torch.no_grad():
            for storage, before in self._saved.values():
                now = _bytes_of(storage)
                n = min(now.numel(), before.numel())  # resized storages: the common prefix
                now, old = now[:n], before[:n]
                if not torch.equal(now, old):
                    now.copy_(old)
        self._saved.clear()
        self._born.clear()


@contextlib.contextmanager
def undoing_writes() -> Iterator[WriteLog]:
    """Undo, on exit, every in-place write the block made to tensors that existed before it.

    Also when the block raises (its exception propagates unchanged). Tensors
    allocated inside the block are left as they are.

    Returns:
        A context manager yielding the :class:`WriteLog`.

    Examples:
        >>> bn = torch.nn.BatchNorm1d(2)
        >>> with undoing_writes():
        ...     _ = bn(torch.randn(4, 2))
        >>> bn.running_mean, bn.num_batches_tracked
        (tensor([0., 0.]), tensor(0))
    """
    log = WriteLog()
    try:
        with log:
            yield log
    finally:
        log.restore()
