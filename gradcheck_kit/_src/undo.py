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

Leaves that require grad and existed before (parameters) also get their
``.grad`` object back: a backward inside the block creates or replaces it.

Not covered (no op writes them, or no op the dispatcher sees): rebinding
(``p.data = t``, ``module.buf = t``, ``p.grad = t`` on a tensor no op of the
block used), Python attributes and counters, tensor metadata (``resize_``, ``set_``: bytes
only), sparse and nested tensors, and writes that bypass the dispatcher (NumPy
views of a tensor, DLPack consumers, custom kernels writing through raw pointers,
writes fused into kernels by ``torch.compile``).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .compat import CONJ_OP, conj_of_scalar
from .readback import read_host
from .state.snapshot import StateRestoreWarning

__all__ = ["WriteLog", "undoing_writes", "watching_user_code"]

_RESTORE_ERRORS: Final = (RuntimeError, TypeError, ValueError, NotImplementedError)
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


def _storage_key(t: torch.Tensor) -> int:
    """The address of ``t``'s StorageImpl; 0 where it has none (sparse, wrapper tensors)."""
    try:
        return int(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError):  # a try, not contextlib.suppress: hot path
        return 0


def _unbatched(t: torch.Tensor) -> torch.Tensor | None:
    """The plain tensor under functorch's batching wrappers (``vmap``), or None."""
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is None:
        return t
    try:
        while functorch.is_batchedtensor(t):
            t = functorch.get_unwrapped(t)
    except (RuntimeError, AttributeError):
        return None
    return t


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
        super().__init__()  # type: ignore[no-untyped-call]
        # StorageImpl addresses of storages allocated inside the mode. An address is
        # reused only after its storage is freed, and a storage that existed at entry
        # cannot be freed and come back: a pre-existing one is never mistaken for these.
        self._born: set[int] = set()
        # storage address -> (storage, its bytes before the first write)
        self._saved: dict[int, tuple[torch.UntypedStorage, torch.Tensor]] = {}
        # id -> (leaf tensor, its .grad before the check), for leaves that require grad
        # and existed before: a backward inside gives them a .grad where there was none
        self._grads: dict[int, tuple[torch.Tensor, torch.Tensor | None] | None] = {}
        self._depth = 0  # how many spans of user code have the mode pushed now
        # Spans of user code watched so far, and whether to stop watching: see
        # watching_user_code.
        self._spans = 0
        self.quiet = False

    def __enter__(self) -> WriteLog:
        self._depth += 1
        super().__enter__()  # type: ignore[no-untyped-call]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._depth -= 1
        super().__exit__(*exc_info)  # type: ignore[no-untyped-call]

    def note_born(self, values: Iterable[Any]) -> None:
        """Treat the storages of ``values`` (tensors, batched ones too) as made inside the check.

        For tensors the check made while the mode was not watching and hands to
        user code: writes into them need no undoing.

        Examples:
            >>> mine = torch.zeros(2)
            >>> log = WriteLog()
            >>> log.note_born([mine])
            >>> with log:
            ...     _ = mine.add_(1.0)
            >>> log.saved_storages
            0
        """
        for value in values:
            if not isinstance(value, torch.Tensor):
                continue
            plain = _unbatched(value)
            storage = None if plain is None else _storage_of(plain)
            if storage is not None:
                self._born.add(storage._cdata)

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        """Let ``torch.compile`` compile under this mode (it watches the compiled code run).

        Otherwise dynamo would skip, for good, every frame it first meets while
        the mode is on: a check would leave a compiled function running eagerly.

        Examples:
            >>> WriteLog.ignore_compile_internals()
            True
        """
        return True

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
        for arg in args:
            if isinstance(arg, torch.Tensor) and arg.requires_grad and arg.is_leaf:
                self._note_leaf(arg)
        # torch releases that hand this mode a Python scalar for conj (compat.py)
        out = conj_of_scalar(func, args) if func is CONJ_OP else None
        if out is None:
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

    def _note_leaf(self, t: torch.Tensor) -> None:
        key = id(t)
        if key in self._grads:
            return
        # None: made inside (a working copy); nothing to give back
        born = _storage_key(t) in self._born
        self._grads[key] = None if born else (t, t.grad)

    def _note_births(self, out: Any, plan: _Plan) -> None:
        if plan.single_return and isinstance(out, torch.Tensor):
            self._born.add(_storage_key(out))  # the common case, kept lean: most ops
            return
        results = (out,) if plan.single_return else out
        for index in plan.fresh:
            value = results[index]
            items = value if isinstance(value, (list, tuple)) else (value,)
            for item in items:
                if isinstance(item, torch.Tensor):
                    self._born.add(_storage_key(item))

    def restore(self) -> None:
        """Write every kept pre-image back into its storage (only where the bytes differ).

        Leaves that existed before and require grad get their ``.grad`` object
        back too (a backward inside the block sets one where there was none).
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
        problems: list[str] = []
        for entry in self._grads.values():
            if entry is not None and entry[0].grad is not entry[1]:
                try:
                    entry[0].grad = entry[1]
                except _RESTORE_ERRORS as exc:
                    problems.append(f".grad of a {tuple(entry[0].shape)} leaf: {exc}")
        with torch.no_grad():
            # compared on the device and read at once: a torch.equal per storage would make
            # the host wait for a CUDA device once per buffer written
            pairs: list[tuple[torch.Tensor, torch.Tensor, int]] = []
            for storage, before in self._saved.values():
                try:
                    now = _bytes_of(storage)
                    n = min(now.numel(), before.numel())  # a resized storage: the common prefix
                    pairs.append((now[:n], before[:n], before.numel()))
                except _RESTORE_ERRORS as exc:
                    problems.append(f"a storage of {before.numel()} bytes: {exc}")
            try:
                flags = read_host([now.ne(old).any() for now, old, _ in pairs])
            except _RESTORE_ERRORS:
                flags = [[1.0]] * len(pairs)  # cannot tell: write every pre-image back
            for (now, old, size), differs in zip(pairs, flags, strict=True):
                if differs[0]:
                    try:
                        now.copy_(old)
                    except _RESTORE_ERRORS as exc:
                        problems.append(f"a storage of {size} bytes: {exc}")
        self._saved.clear()
        self._born.clear()
        self._grads.clear()
        if problems:
            # a warning, not an exception: this runs in finally blocks, where raising
            # would hide the exception of the user's function
            warnings.warn(
                "[gradcheck] could not give back all in-place writes: " + "; ".join(problems),
                StateRestoreWarning,
                stacklevel=2,
            )


# Gated logs stop watching after this many spans of user code that wrote nothing that
# existed before the check. A function that writes such state only at some perturbed
# points, never at the first calls, is not covered (the README says so).
DISCOVERY_SPANS: Final = 3


class _Gated(threading.local):
    """Per thread: the logs that watch only spans of user code (innermost last)."""

    def __init__(self) -> None:
        self.logs: list[WriteLog] = []


_GATED: Final = _Gated()


@contextlib.contextmanager
def undoing_writes(*, only_user_code: bool = False) -> Iterator[WriteLog]:
    """Undo, on exit, every in-place write the block made to tensors that existed before it.

    Also when the block raises (its exception propagates unchanged). Tensors
    allocated inside the block are left as they are.

    Args:
        only_user_code: watch only the spans marked with :func:`watching_user_code`
            (the calls of the function under test and its backward) instead of
            every op: a dispatch mode costs a few microseconds per op, and a
            check's own bookkeeping writes nothing that existed before it.

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
        if only_user_code:
            _GATED.logs.append(log)
            try:
                yield log
            finally:
                _GATED.logs.remove(log)
        else:
            with log:
                yield log
    finally:
        log.restore()


@contextlib.contextmanager
def watching_user_code(*handed_in: Any) -> Iterator[None]:
    """Watch the writes of user code run in this block, for the innermost gated log.

    ``handed_in`` are the tensors the check made and passes to the user code
    (its working copies, cotangents): writes into them need no undoing. Without
    a gated :func:`undoing_writes` around it (or inside a span already watched)
    this does nothing.

    Examples:
        >>> buf = torch.zeros(1)
        >>> with undoing_writes(only_user_code=True):
        ...     _ = buf.add_(1.0)  # the check's own work: not watched
        ...     with watching_user_code():
        ...         _ = buf.add_(1.0)  # user code: undone at the end
        >>> buf
        tensor([1.])
    """
    logs = _GATED.logs
    if not logs or logs[-1]._depth or logs[-1].quiet:
        yield
        return
    log = logs[-1]
    log.note_born(handed_in)
    with log:
        yield
    log._spans += 1
    if log._spans >= DISCOVERY_SPANS and not log._saved and not _gave_grads(log):
        # The first calls of fn (the call at the point, the repeat call, the first
        # batch or backward) wrote nothing that existed before the check: a pure
        # function. Watching its hundreds of perturbed evaluations would cost a few
        # microseconds per op for nothing (a third of a small check's time).
        log.quiet = True


def _gave_grads(log: WriteLog) -> bool:
    """Whether a pre-existing leaf took part in user code (its .grad may need giving back)."""
    return any(entry is not None for entry in log._grads.values())
