"""Count what would make the host wait for a CUDA device, also when the run is on the CPU.

A CUDA check is launch-bound, and every point where Python needs a value the
device computes (or where torch copies with ``non_blocking=False``) drains the
stream: the host waits for every kernel queued before it. These are the points
``torch.cuda.set_sync_debug_mode("warn")`` reports. :class:`SyncCounter` counts
them by kind and by call site:

* ``item``: ``_local_scalar_dense`` (``.item()``, ``bool(t)``, ``float(t)``,
  ``int(t)``, ``f"{t:.3g}"``), one per call;
* ``to_host``: a copy of a device tensor to host memory (``.cpu()``,
  ``.to("cpu")``, ``.numpy()``, ``.tolist()``, ``copy_`` into a host tensor);
* ``to_device``: a copy from host memory onto the device (``.to(x.device)`` of a
  host tensor, ``torch.tensor(data, device=...)``, ``copy_`` from a host tensor):
  torch copies with ``cudaMemcpyAsync`` followed by a stream synchronisation;
* ``shape``: an operator whose output shape depends on the data (``nonzero``,
  ``masked_select``, ``unique``, indexing with a boolean mask, ``repeat_interleave``
  without ``output_size``), which reads a count back from the device;
* ``equal``: ``torch.equal``, whose answer is a host ``bool``.

On CUDA the tensors say where they live. On the CPU everything does, so the
counter *simulates* the device (``simulate=True``, the default there): the
tensors given as ``on_device`` (a check's inputs, a module's parameters) live
on the device, an operator's outputs live there when one of its tensor inputs
does, a factory called with an explicit ``device=`` puts its result there, and
everything else (``torch.zeros(n)``, a generator's state, ``torch.tensor(data)``)
is host memory. A ``torch.device`` object names the device (code writes
``x.device``); only the string ``"cpu"`` and ``.cpu()`` name the host. Operators
that mix a device tensor with a host tensor of more than one element, which
would raise on CUDA, are counted apart as ``mixed`` (not syncs).

Examples:
    >>> import torch
    >>> x = torch.randn(4)
    >>> with SyncCounter(on_device=[x]) as count:
    ...     y = (x * 2).sum()
    ...     host = torch.zeros(3)
    ...     _ = float(y), host.tolist(), x.cpu(), host.to(x.device)
    >>> count.total, dict(sorted(count.kinds.items()))
    (3, {'item': 1, 'to_device': 1, 'to_host': 1})
"""

from __future__ import annotations

import collections
import functools
import gc
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = ["SyncCounter", "SYNC_KINDS"]

SYNC_KINDS = ("item", "to_host", "to_device", "shape", "equal")

_REAL_CLOCK = time.perf_counter
_HERE = os.path.abspath(__file__)
# Helpers that read for their callers: a sync there is named after the caller.
_PASS_THROUGH = (os.path.join("gradcheck_kit", "_src", "readback.py"),)
_SHAPE_OPS = frozenset(
    {
        "nonzero",
        "nonzero_numpy",
        "masked_select",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "unique_dim_consecutive",
        "bincount",
        "_linalg_check_errors",
    }
)
# Operators that are neither views nor kernels: metadata checks, and the read itself.
_NO_KERNEL = frozenset({"is_same_size", "_has_same_storage_numel", "_local_scalar_dense"})
_INDEX_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})
# Factories whose result is host memory unless called with device=...
_COPYING_FACTORIES = frozenset({"tensor", "as_tensor", "asarray", "from_numpy"})
_TO_HOST_METHODS = frozenset({"cpu", "numpy", "tolist", "__array__"})


def _tensors(values: Any) -> list[torch.Tensor]:
    return [v for v in tree_leaves(values) if isinstance(v, torch.Tensor)]


def _is_host_name(device: Any) -> bool:
    """Whether ``device`` spells host memory: only the string "cpu" does (see the module doc)."""
    return isinstance(device, str) and device.split(":")[0] == "cpu"


class _Dispatch(TorchDispatchMode):
    def __init__(self, owner: SyncCounter) -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        start = _REAL_CLOCK()
        kwargs = kwargs or {}
        owner = self.owner
        name = func.overloadpacket.__name__
        owner.ops[name] += 1
        if not func.is_view and name not in _NO_KERNEL:
            owner.launches += 1
        inputs = _tensors((args, kwargs))
        on_device = [owner.resident(t) for t in inputs]
        if name == "_local_scalar_dense":
            if on_device[0]:
                owner.record("item", name)
        elif name == "equal":
            if any(on_device):
                owner.record("equal", name)
        elif name in _SHAPE_OPS or (name == "repeat_interleave" and "output_size" not in kwargs):
            if any(on_device):
                owner.record("shape", name)
        elif name in _INDEX_OPS:
            masks = [
                i
                for i in _tensors(args[1])
                if i.dtype in (torch.bool, torch.uint8) and owner.resident(i)
            ]
            if masks:
                owner.record("shape", f"{name} with a boolean mask")
        elif name == "copy_" and on_device[0] != on_device[1]:
            owner.record("to_host" if on_device[1] else "to_device", name)
        elif owner.simulate and any(on_device) and not all(on_device):
            # a host tensor beside device tensors: fine as a 0-dim scalar, an error on CUDA
            hosts = [t for t, dev in zip(inputs, on_device, strict=True) if not dev]
            if any(t.dim() > 0 for t in hosts) and name not in ("copy_", "_to_copy"):
                owner.record("mixed", name)
        owner.overhead += _REAL_CLOCK() - start + owner.per_op
        out = func(*args, **kwargs)
        start = _REAL_CLOCK()
        if owner.simulate:
            # copy_ writes into its first argument, which stays where it was; a Python
            # number written into a device tensor is made on the device (scalarToTensor)
            place = on_device[0] if name == "copy_" else any(on_device) or owner.scalars_here > 0
            for t in _tensors(out):
                owner.mark(t, place)
        elif name == "_to_copy" and not kwargs.get("non_blocking", False):
            # on a real device .to()/.cpu() dispatch; in the simulation _Function sees them
            moved = inputs[0].device.type != out.device.type
            if moved:
                owner.record("to_host" if out.device.type == "cpu" else "to_device", name)
        owner.overhead += _REAL_CLOCK() - start
        return out


class _Function(TorchFunctionMode):
    """Moves between host and device, which dispatch cannot see on the CPU (``.cpu()`` is free)."""

    def __init__(self, owner: SyncCounter) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        start = _REAL_CLOCK()
        kwargs = kwargs or {}
        owner = self.owner
        name = getattr(func, "__name__", "")
        qual = getattr(func, "__qualname__", "")
        method = qual.startswith(("TensorBase.", "Tensor."))
        scalar_write = (
            name == "__setitem__"
            and len(args) == 3
            and isinstance(args[2], (bool, int, float, complex))
            and owner.resident(args[0])
        )
        owner.scalars_here += scalar_write
        owner.overhead += _REAL_CLOCK() - start + owner.per_call
        try:
            out = func(*args, **kwargs)
        finally:
            owner.scalars_here -= scalar_write
        start = _REAL_CLOCK()
        if method and args and isinstance(args[0], torch.Tensor):
            src = args[0]
            target: bool | None = None
            if name in _TO_HOST_METHODS:
                target = False
                if owner.resident(src):
                    owner.record("to_host", name)
            elif name in ("to", "cuda"):
                target = self._target(name, args[1:], kwargs)
                if target is not None and target != owner.resident(src):
                    owner.record("to_device" if target else "to_host", name)
            if target is not None and out is src and target != owner.resident(src):
                # on the CPU the "copy" is the tensor itself; a real one is another
                # tensor, and the original stays where it was: hand back an alias
                out = src.view_as(src)
            if target is not None:
                for t in _tensors(out):
                    owner.mark(t, target)
        elif not method and not _tensors((args, kwargs)):
            device = kwargs.get("device")
            explicit = device is not None and not _is_host_name(device)
            if explicit and name in _COPYING_FACTORIES:
                owner.record("to_device", name)
            for t in _tensors(out):
                owner.mark(t, explicit)
        owner.overhead += _REAL_CLOCK() - start
        return out

    def _target(self, name: str, rest: Any, kwargs: dict[str, Any]) -> bool | None:
        """Where ``.to``/``.cuda`` sends the tensor: True device, False host, None unchanged."""
        if name == "cuda":
            return True
        for value in (*rest, kwargs.get("device")):
            if isinstance(value, torch.Tensor):
                return self.owner.resident(value)
            if isinstance(value, (str, torch.device, int)) and not isinstance(value, bool):
                return not _is_host_name(value)
        return None


class SyncCounter:
    """Count host-device synchronisations (and aten operators) inside a ``with`` block.

    Args:
        on_device: tensors (or containers of them, modules) that live on the device
            when ``simulate`` is on.
        simulate: treat the CPU as the device (default: when no tensor of
            ``on_device`` is on CUDA).
        roots: directories or files whose frames name a call site (default: the
            ``gradcheck_kit`` package and ``torch/autograd/gradcheck.py``).

    Attributes:
        kinds: syncs by kind (:data:`SYNC_KINDS`, plus ``mixed``, which is not one).
        sites: syncs by (kind, ``file:line function``, what).
        ops: every aten operator dispatched, by name.
        launches: the dispatched operators that launch a kernel (views and metadata
            checks do not).
    """

    def __init__(
        self,
        on_device: Iterable[Any] = (),
        *,
        simulate: bool | None = None,
        roots: Iterable[str] | None = None,
    ) -> None:
        seeds = []
        for obj in on_device:
            if isinstance(obj, torch.nn.Module):
                seeds += list(obj.parameters()) + list(obj.buffers())
            else:
                seeds += _tensors(obj)
        if simulate is None:
            simulate = not any(t.is_cuda for t in seeds)
        self.simulate = simulate
        self._where: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        for t in seeds:
            self._where[t] = True
        if roots is None:
            import gradcheck_kit

            roots = (
                os.path.dirname(os.path.abspath(gradcheck_kit.__file__)),
                os.path.join(os.path.dirname(torch.__file__), "autograd", "gradcheck.py"),
            )
        self.roots = tuple(os.path.abspath(r) for r in roots)
        # what the counting costs, taken off the clock the check reads (see __enter__)
        self.overhead = 0.0
        self.per_op, self.per_call = _mode_costs()
        self.scalars_here = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.sites: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.ops: collections.Counter[str] = collections.Counter()
        # operators that launch a kernel on a device: not views, not metadata checks
        self.launches = 0
        self._modes: list[Any] = []

    # residency --------------------------------------------------------------------------
    def resident(self, t: torch.Tensor) -> bool:
        """Whether ``t`` lives on the device (simulated: see the module doc)."""
        if not self.simulate:
            return t.device.type != "cpu"
        return bool(self._where.get(t, False))

    def mark(self, t: torch.Tensor, on_device: bool) -> None:
        """Record where ``t`` lives (simulation only)."""
        if self.simulate:
            self._where[t] = on_device

    # counting ---------------------------------------------------------------------------
    def record(self, kind: str, what: str) -> None:
        """Count one event of ``kind`` at the innermost frame under ``roots``."""
        self.kinds[kind] += 1
        self.sites[(kind, self._site(), what)] += 1

    def _site(self) -> str:
        frame = sys._getframe(2)
        while frame is not None:
            path = os.path.abspath(frame.f_code.co_filename)
            if path != _HERE and path.startswith(self.roots) and not path.endswith(_PASS_THROUGH):
                short = path
                for root in self.roots:
                    if path.startswith(root):
                        base = os.path.dirname(root)
                        short = os.path.relpath(path, base)
                        break
                return f"{short}:{frame.f_lineno} {frame.f_code.co_name}"
            frame = frame.f_back
        return "(outside the roots)"

    @property
    def total(self) -> int:
        """Syncs of every kind (``mixed`` is not one)."""
        return sum(n for kind, n in self.kinds.items() if kind in SYNC_KINDS)

    @property
    def aten_ops(self) -> int:
        """Aten operators dispatched."""
        return sum(self.ops.values())

    def by_kind(self) -> dict[str, int]:
        """Counts for every kind of :data:`SYNC_KINDS` (zeros included), then ``mixed`` if any."""
        out = {kind: self.kinds.get(kind, 0) for kind in SYNC_KINDS}
        if self.kinds.get("mixed"):
            out["mixed"] = self.kinds["mixed"]
        return out

    def report(self, limit: int = 40) -> Iterator[str]:
        """Lines ``count kind site what``, most frequent first."""
        for (kind, site, what), n in self.sites.most_common(limit):
            yield f"{n:4d} {kind:<9} {site}  [{what}]"

    # context ----------------------------------------------------------------------------
    def clock(self) -> float:
        """``time.perf_counter`` without the time spent counting."""
        return _REAL_CLOCK() - self.overhead

    def __enter__(self) -> SyncCounter:
        # A check sizes its batches and picks vmap or a loop from how long fn took:
        # counting must not make fn look slower, or the counted run takes another path.
        # Nor may a garbage collection (timeit leaves one due after timing with gc off).
        gc.collect()
        time.perf_counter = self.clock
        self._modes = [_Dispatch(self)]
        if self.simulate:
            self._modes.insert(0, _Function(self))
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        self._modes = []
        time.perf_counter = _REAL_CLOCK


class _Empty(TorchDispatchMode):
    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


class _EmptyFunction(TorchFunctionMode):
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        return func(*args, **(kwargs or {}))


@functools.lru_cache(maxsize=1)
def _mode_costs(n: int = 2000) -> tuple[float, float]:
    """Seconds a Python dispatch mode and a function mode add per operator, outside their hooks."""
    x = torch.zeros(4)

    def run() -> float:
        start = _REAL_CLOCK()
        for _ in range(n):
            x.add(1.0)
        return _REAL_CLOCK() - start

    run()
    plain = min(run() for _ in range(3))
    with _Empty():
        dispatch = min(run() for _ in range(3))
    with _EmptyFunction(), _Empty():
        both = min(run() for _ in range(3))
    return max(0.0, dispatch - plain) / n, max(0.0, both - dispatch) / n
