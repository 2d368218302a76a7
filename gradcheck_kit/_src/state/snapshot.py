"""Leave no trace: snapshot and restore everything a check could disturb.

A check promises to leave every tensor, parameter, buffer, ``.grad``,
``requires_grad`` flag, module training mode, optimizer state, global autograd
mode, TF32 switch and random number generator exactly as it found them, whether it passes,
fails, or the user's function raises. This module is the one mechanism for that:
:func:`snapshot` / :func:`preserved` record the state reachable from some
objects (tensors, modules, optimizers, nested in tuples, lists and dicts)
plus the global modes (:mod:`.modes`) and RNG states (:mod:`.rng`), and write it back.

Only public torch API is used, except ``nn.Module``'s
``_parameters``/``_buffers``/``_modules``/hook dicts, read in one helper each
(there is no public way to put back the very objects a check replaced).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import nn

from ..readback import read_host
from .modes import GlobalModes
from .rng import capture_rng_state, restore_rng_state

__all__ = [
    "RESTORE_ERRORS",
    "Collector",
    "Snapshot",
    "StateRestoreWarning",
    "bits_equal",
    "hook_dicts",
    "int_view",
    "is_dense",
    "preserved",
    "snapshot",
]

# An integer dtype per element size: equal integer views mean equal bits
# (NaN payloads and -0.0 included, which value comparison would miss).
_INT_BY_ITEMSIZE: Final = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
# What reading or writing back an odd tensor or object may raise; each is reported, not raised.
RESTORE_ERRORS: Final = (RuntimeError, TypeError, ValueError, NotImplementedError)


class StateRestoreWarning(RuntimeWarning):
    """Some state could not be put back after a check (e.g. a leaf turned into a view of a graph).

    A warning rather than an exception: restoring runs in ``finally`` blocks,
    where raising would hide the exception the user's function raised.

    Examples:
        >>> issubclass(StateRestoreWarning, RuntimeWarning)
        True
    """

    # Named where users import it from (warnings filters, tracebacks), like errors.py's.
    __module__ = "gradcheck_kit.errors"


# ------------------------------------------------------------------ walking inputs


def is_dense(t: torch.Tensor) -> bool:
    """Whether `t`'s elements live in ordinary memory we can copy and write back.

    Examples:
        >>> is_dense(torch.zeros(2)), is_dense(torch.zeros(2).to_sparse())
        (True, False)
    """
    return (
        t.layout == torch.strided
        and not t.is_meta
        and not t.is_quantized
        and not t.is_nested
        and not nn.parameter.is_lazy(t)
    )


class Collector:
    """Find every tensor, module and optimizer reachable from some objects, once each, with a label.

    Labels are paths from the argument list: ``tensor #1[0]['w']``,
    ``module #0.fc1.weight``, ``optimizer #2.state[module #0.fc1.weight]['exp_avg']``.

    Examples:
        >>> x = torch.zeros(1)
        >>> [label for label, _ in Collector(({"x": x}, [x])).tensors.values()]
        ["tensor #0['x']"]
    """

    def __init__(self, objects: tuple[object, ...]) -> None:
        self.tensors: dict[int, tuple[str, torch.Tensor]] = {}
        self.modules: dict[int, tuple[str, nn.Module]] = {}
        self.optimizers: dict[int, tuple[str, torch.optim.Optimizer]] = {}
        self._containers: set[int] = set()
        for index, obj in enumerate(objects):
            self._visit(obj, f"#{index}")

    def label_of(self, t: torch.Tensor) -> str:
        """The label `t` was found under, or one naming its id where it was not found.

        Examples:
            >>> x = torch.zeros(1)
            >>> Collector((torch.nn.Linear(1, 1), x)).label_of(x)
            'tensor #1'
        """
        entry = self.tensors.get(id(t))
        return entry[0] if entry is not None else f"<tensor id {id(t):#x}>"

    def _add_tensor(self, t: torch.Tensor, label: str) -> None:
        self.tensors.setdefault(id(t), (label, t))

    def _visit(self, obj: object, where: str) -> None:
        if isinstance(obj, torch.Tensor):
            self._add_tensor(obj, f"tensor {where}")
        elif isinstance(obj, nn.Module):
            self._visit_module(obj, f"module {where}")
        elif isinstance(obj, torch.optim.Optimizer):
            self._visit_optimizer(obj, f"optimizer {where}")
        else:
            for key, value in self._children(obj):
                self._visit(value, f"{where}[{key!r}]")

    def _visit_inner(self, obj: object, label: str) -> None:
        """Like _visit, for values inside an optimizer: tensors keep the label as is."""
        if isinstance(obj, torch.Tensor):
            self._add_tensor(obj, label)
        else:
            for key, value in self._children(obj):
                self._visit_inner(value, f"{label}[{key!r}]")

    def _children(self, obj: object) -> Iterable[tuple[object, object]]:
        if not isinstance(obj, (list, tuple, Mapping)) or id(obj) in self._containers:
            return ()
        self._containers.add(id(obj))
        return list(obj.items()) if isinstance(obj, Mapping) else list(enumerate(obj))

    def _visit_module(self, root: nn.Module, label: str) -> None:
        for name, module in root.named_modules():
            if id(module) in self.modules:
                continue
            sub_label = f"{label}.{name}" if name else label
            self.modules[id(module)] = (sub_label, module)
            for table in (module._parameters, module._buffers):
                for key, value in table.items():
                    if value is not None:
                        self._add_tensor(value, f"{sub_label}.{key}")

    def _visit_optimizer(self, opt: torch.optim.Optimizer, label: str) -> None:
        if id(opt) in self.optimizers:
            return
        self.optimizers[id(opt)] = (label, opt)
        for index, group in enumerate(opt.param_groups):
            for key, value in group.items():
                self._visit_inner(value, f"{label}.param_groups[{index}][{key!r}]")
        for position, (param, entry) in enumerate(list(opt.state.items())):
            if isinstance(param, torch.Tensor):
                # Normally a parameter already labelled through param_groups or a module.
                self._add_tensor(param, f"{label}.state key #{position}")
                key_label = self.label_of(param)
            else:
                key_label = repr(param)
            self._visit_inner(entry, f"{label}.state[{key_label}]")


# ------------------------------------------------------------------ bit helpers


def int_view(t: torch.Tensor) -> torch.Tensor:
    """An integer view of `t`'s logical elements, one int per real scalar.

    Examples:
        >>> int_view(torch.tensor([-0.0]))
        tensor([-2147483648], dtype=torch.int32)
    """
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.view(_INT_BY_ITEMSIZE[t.element_size()])


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors hold the same bits (NaN payloads and -0.0 included).

    Examples:
        >>> bits_equal(torch.tensor([0.0]), torch.tensor([-0.0]))
        False
    """
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(int_view(a), int_view(b))


def _same_storage_view(t: torch.Tensor, ref: torch.Tensor) -> bool:
    return (
        t.dtype == ref.dtype
        and t.device == ref.device
        and t.shape == ref.shape
        and t.stride() == ref.stride()
        and t.storage_offset() == ref.storage_offset()
        and t.untyped_storage().data_ptr() == ref.untyped_storage().data_ptr()
    )


def _write_bits(t: torch.Tensor, bits: torch.Tensor) -> None:
    """Copy `bits` into `t` in place, unseen by autograd (bumps `t._version`)."""
    mode: contextlib.AbstractContextManager[Any] = (
        torch.inference_mode() if t.is_inference() else torch.no_grad()
    )
    with mode:
        dst, src = t.detach(), bits
        # Expanded dims alias one element many times; copy_ refuses to write those.
        for dim, (size, stride) in enumerate(zip(dst.shape, dst.stride(), strict=True)):
            if stride == 0 and size > 1:
                dst, src = dst.narrow(dim, 0, 1), src.narrow(dim, 0, 1)
        dst.copy_(src)


def _same_key(a: object, b: object) -> bool:
    if a is b:
        return True
    # Tensors as keys compare by identity only (== would compare elements).
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    return bool(a == b)


def _same_items(current: Mapping[Any, Any], saved: list[tuple[Any, Any]]) -> bool:
    return len(current) == len(saved) and all(
        _same_key(ck, sk) and cv is sv
        for (ck, cv), (sk, sv) in zip(current.items(), saved, strict=False)
    )


def _restore_items(current: MutableMapping[Any, Any], saved: list[tuple[Any, Any]]) -> None:
    """Make `current` hold exactly `saved` (same objects, same order), mutating it in place."""
    if not _same_items(current, saved):
        current.clear()
        current.update(saved)


def hook_dicts(module: nn.Module) -> list[tuple[str, dict[Any, Any]]]:
    """``module``'s own hook dicts (``_forward_hooks``, ...), by attribute name.

    Read from ``vars(module)``: torch has no public list of them, and a name
    pattern also catches the hook kinds newer torch versions add.

    Examples:
        >>> "_forward_hooks" in dict(hook_dicts(torch.nn.Linear(1, 1)))
        True
    """
    return [
        (name, value)
        for name, value in vars(module).items()
        if name.startswith("_") and "hooks" in name and isinstance(value, dict)
    ]


# ------------------------------------------------------------------ snapshot


@dataclass(eq=False)
class _TensorRecord:
    tensor: torch.Tensor
    label: str
    # `tensor.data` at snapshot time: shares the original storage, so a check that
    # swapped the storage (`p.data = ...`) can be undone without breaking aliasing.
    data: torch.Tensor | None
    bits: torch.Tensor | None  # None: sparse, meta, quantized, ... (identity only)
    bits_int: torch.Tensor | None  # `bits` as integers, compared with the tensor at restore
    requires_grad: bool
    is_leaf: bool
    has_grad_slot: bool
    grad: torch.Tensor | None


@dataclass(eq=False)
class _ModuleRecord:
    module: nn.Module
    label: str
    training: bool
    children: list[tuple[str, nn.Module | None]]
    parameters: list[tuple[str, nn.Parameter | None]]
    buffers: list[tuple[str, torch.Tensor | None]]
    non_persistent: set[str]
    hooks: list[tuple[dict[Any, Any], list[tuple[Any, Any]]]]
    full_backward_hook: object  # the flag register_full_backward_hook sets beside its dict
    shadowed: set[str]


@dataclass(eq=False)
class _OptimizerRecord:
    optimizer: torch.optim.Optimizer
    label: str
    state_items: list[tuple[Any, Any]]
    entries: list[tuple[MutableMapping[Any, Any], list[tuple[Any, Any]]]]
    groups: list[dict[str, Any]]
    group_items: list[tuple[dict[str, Any], list[tuple[str, Any]]]]
    param_lists: list[tuple[list[Any], list[Any]]]
    defaults: list[tuple[str, Any]]


def _record_tensor(t: torch.Tensor, label: str) -> _TensorRecord:
    is_leaf = t.is_leaf
    # Reading .grad of a non-leaf that does not retain it only warns.
    has_grad_slot = is_leaf or t.retains_grad
    data = bits = bits_int = None
    if is_dense(t):
        try:
            with torch.no_grad():
                data = t.data
                bits = data.clone()
            bits_int = int_view(bits)  # fails early for dtypes without an integer twin
        except (*RESTORE_ERRORS, KeyError):
            data = bits = bits_int = None
    return _TensorRecord(
        tensor=t,
        label=label,
        data=data,
        bits=bits,
        bits_int=bits_int,
        requires_grad=t.requires_grad,
        is_leaf=is_leaf,
        has_grad_slot=has_grad_slot,
        grad=t.grad if has_grad_slot else None,
    )


def _record_module(module: nn.Module, label: str) -> _ModuleRecord:
    names = {*module._modules, *module._parameters, *module._buffers}
    return _ModuleRecord(
        module=module,
        label=label,
        training=module.training,
        children=list(module._modules.items()),
        parameters=list(module._parameters.items()),
        buffers=list(module._buffers.items()),
        non_persistent=set(module._non_persistent_buffers_set),
        hooks=[(d, list(d.items())) for _, d in hook_dicts(module)],
        full_backward_hook=vars(module).get("_is_full_backward_hook"),
        shadowed={n for n in names if n in vars(module)},
    )


def _record_optimizer(opt: torch.optim.Optimizer, label: str) -> _OptimizerRecord:
    entries = [
        (entry, list(entry.items()))
        for entry in opt.state.values()
        if isinstance(entry, MutableMapping)
    ]
    param_lists = [
        (group["params"], list(group["params"]))
        for group in opt.param_groups
        if isinstance(group.get("params"), list)
    ]
    return _OptimizerRecord(
        optimizer=opt,
        label=label,
        state_items=list(opt.state.items()),
        entries=entries,
        groups=list(opt.param_groups),
        group_items=[(group, list(group.items())) for group in opt.param_groups],
        param_lists=param_lists,
        defaults=list(opt.defaults.items()),
    )


class Snapshot:
    """Everything :func:`snapshot` recorded; :meth:`restore` writes it back.

    Restoring keeps every object's identity: tensor bits are copied back in
    place, the original ``.grad`` objects, ``Parameter`` objects and submodules
    are put back where a check replaced them, and storage swapped with
    ``.data = ...`` is swapped back. Writes happen under ``torch.no_grad()``.

    A tensor whose bits are unchanged is not written, so its ``_version``
    counter stays as it was. One whose bits changed is written in place, which
    bumps ``_version`` (unavoidable): autograd graphs that saved it before the
    check will refuse to run backward.

    Can be used as a context manager (restores on exit). :meth:`restore` can be
    called any number of times.

    Examples:
        >>> x = torch.zeros(3, requires_grad=True)
        >>> snap = snapshot(x)
        >>> with torch.no_grad():
        ...     _ = x.add_(1.0)
        >>> x.grad = torch.ones(3)
        >>> snap.restore()
        >>> x, x.grad
        (tensor([0., 0., 0.], requires_grad=True), None)
    """

    def __init__(self, objects: tuple[object, ...]) -> None:
        collector = Collector(objects)
        self._modes = GlobalModes.capture()
        self._rng = capture_rng_state()
        self._modules = [_record_module(m, label) for label, m in collector.modules.values()]
        self._optimizers = [
            _record_optimizer(o, label) for label, o in collector.optimizers.values()
        ]
        self._tensors: dict[int, _TensorRecord] = {}
        pending = list(collector.tensors.values())
        while pending:
            label, t = pending.pop(0)
            if id(t) in self._tensors:
                continue
            record = _record_tensor(t, label)
            self._tensors[id(t)] = record
            if record.grad is not None:
                pending.append((f"{label}.grad", record.grad))

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()

    def __repr__(self) -> str:
        return (
            f"Snapshot({len(self._tensors)} tensors, {len(self._modules)} modules, "
            f"{len(self._optimizers)} optimizers)"
        )

    def restore(self) -> None:
        """Write the recorded state back: structure, tensor bits, grads, flags, modes, RNG.

        Everything that can be restored is; anything that cannot (a leaf
        turned into a view of a graph, an unwritable tensor) is named in one
        :class:`StateRestoreWarning` instead of an exception, so that an
        exception from the user's function is not replaced.

        Examples:
            >>> m = torch.nn.Linear(2, 2)
            >>> w = m.weight
            >>> snap = snapshot(m)
            >>> m.weight = torch.nn.Parameter(torch.zeros(2, 2))
            >>> _ = m.eval()
            >>> snap.restore()
            >>> m.weight is w, m.training
            (True, True)
        """
        problems: list[str] = []
        for module_record in self._modules:
            self._attempt(problems, module_record.label, self._restore_structure, module_record)
        for opt_record in self._optimizers:
            self._attempt(problems, opt_record.label, self._restore_optimizer, opt_record)
        changed = self._changed_bits(problems)
        for record in self._tensors.values():
            self._attempt(
                problems,
                record.label,
                self._restore_tensor,
                record,
                id(record) in changed,
                problems,
            )
        for record in self._tensors.values():
            self._attempt(problems, f"{record.label}.grad", self._restore_grad, record)
        for module_record in self._modules:
            if module_record.module.training != module_record.training:
                module_record.module.training = module_record.training
        self._attempt(problems, "global modes", self._modes.restore)
        self._attempt(problems, "RNG state", restore_rng_state, self._rng)
        if problems:
            warnings.warn(
                "[gradcheck] could not restore all state after a check: " + "; ".join(problems),
                StateRestoreWarning,
                stacklevel=2,
            )

    @staticmethod
    def _attempt(problems: list[str], what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except RESTORE_ERRORS as exc:
            problems.append(f"{what}: {type(exc).__name__}: {exc}")

    @staticmethod
    def _restore_structure(record: _ModuleRecord) -> None:
        module = record.module
        _restore_items(module._modules, record.children)
        _restore_items(module._parameters, record.parameters)
        _restore_items(module._buffers, record.buffers)
        if module._non_persistent_buffers_set != record.non_persistent:
            module._non_persistent_buffers_set.clear()
            module._non_persistent_buffers_set.update(record.non_persistent)
        for hooks, items in record.hooks:
            _restore_items(hooks, items)
        if vars(module).get("_is_full_backward_hook") is not record.full_backward_hook:
            module._is_full_backward_hook = record.full_backward_hook  # type: ignore[assignment]
        # A plain attribute of the same name would shadow the restored entry.
        attrs = vars(module)
        for name, _ in (*record.children, *record.parameters, *record.buffers):
            if name in attrs and name not in record.shadowed:
                del attrs[name]

    @staticmethod
    def _restore_optimizer(record: _OptimizerRecord) -> None:
        opt = record.optimizer
        _restore_items(opt.state, record.state_items)
        for entry, items in record.entries:
            _restore_items(entry, items)
        if len(opt.param_groups) != len(record.groups) or any(
            a is not b for a, b in zip(opt.param_groups, record.groups, strict=False)
        ):
            opt.param_groups[:] = record.groups
        for group, group_items in record.group_items:
            _restore_items(group, group_items)
        for params, saved in record.param_lists:
            if len(params) != len(saved) or any(
                a is not b for a, b in zip(params, saved, strict=False)
            ):
                params[:] = saved
        _restore_items(opt.defaults, record.defaults)

    def _changed_bits(self, problems: list[str]) -> set[int]:
        """Ids of the records whose tensor no longer holds the recorded bits.

        Swapped storage is swapped back first. The comparisons stay on the device and
        are read in one copy per device: on CUDA each ``torch.equal`` would make the
        host wait for the device, once per tensor of a model.
        """
        changed: set[int] = set()
        pending: list[tuple[int, torch.Tensor]] = []
        for record in self._tensors.values():
            if record.data is None or record.bits is None or record.bits_int is None:
                continue
            try:
                t = record.tensor
                if not _same_storage_view(t, record.data):
                    t.data = record.data
                now, bits = t.detach(), record.bits
                if now.shape != bits.shape or now.dtype != bits.dtype:
                    changed.add(id(record))
                else:
                    pending.append((id(record), int_view(now).ne(record.bits_int).any()))
            except RESTORE_ERRORS as exc:
                problems.append(f"{record.label}: {type(exc).__name__}: {exc}")
        flags = read_host([flag for _, flag in pending])
        changed.update(key for (key, _), flag in zip(pending, flags, strict=True) if flag[0])
        return changed

    @staticmethod
    def _restore_tensor(record: _TensorRecord, changed: bool, problems: list[str]) -> None:
        t = record.tensor
        if record.data is not None and record.bits is not None and changed:
            _write_bits(t, record.bits)
        if record.is_leaf:
            if not t.is_leaf:
                # An in-place op with a grad-requiring operand made it part of a graph.
                with torch.no_grad():
                    t.detach_()
            if t.requires_grad != record.requires_grad:
                t.requires_grad_(record.requires_grad)
        elif t.is_leaf:
            problems.append(f"{record.label}: was detached from its graph; cannot re-attach it")

    @staticmethod
    def _restore_grad(record: _TensorRecord) -> None:
        if not record.has_grad_slot:
            return
        t = record.tensor
        current = t.grad if (t.is_leaf or t.retains_grad) else None
        if current is not record.grad:
            t.grad = record.grad


def snapshot(*objects: object) -> Snapshot:
    """Record the state of ``objects`` and of the process-wide torch modes and RNGs.

    Args:
        *objects: tensors, ``nn.Module``s, ``torch.optim.Optimizer``s, and
            tuples/lists/dicts nesting them; other values are ignored. A module
            contributes every submodule's training flag, parameters, buffers,
            hooks and which objects sit at which names; an optimizer its state
            tensors, hyper-parameters and parameter lists. Tensors reachable
            more than once are recorded once. Sparse, meta and quantized tensors
            are recorded by identity only.

    Costs one copy of every recorded dense tensor (and ``.grad``), on its device.

    Returns:
        A :class:`Snapshot`; call :meth:`Snapshot.restore` (or use
        :func:`preserved`) to put everything back.

    Examples:
        >>> x = torch.tensor([1.0, -0.0])
        >>> snap = snapshot(x)
        >>> x.mul_(0)
        tensor([0., -0.])
        >>> snap.restore()
        >>> x
        tensor([1., -0.])
    """
    return Snapshot(objects)


@contextlib.contextmanager
def preserved(*objects: object) -> Iterator[Snapshot]:
    """Snapshot ``objects`` on entry; restore them on exit, also when the block raises.

    The block's exception propagates unchanged.

    Args:
        *objects: as for :func:`snapshot`.

    Returns:
        A context manager yielding the :class:`Snapshot`.

    Examples:
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
        >>> with preserved(model):
        ...     _ = model.eval()
        ...     model(torch.randn(1, 2)).sum().backward()
        ...     _ = torch.set_grad_enabled(False)
        >>> model.training, torch.is_grad_enabled(), model[0].weight.grad is None
        (True, True, True)
    """
    snap = Snapshot(objects)
    try:
        yield snap
    finally:
        snap.restore()


# doctest skips a class whose __module__ is another module; __test__ keeps its example.
__test__ = {"StateRestoreWarning": StateRestoreWarning}
