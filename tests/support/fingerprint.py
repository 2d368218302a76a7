"""Fingerprints: a hashable picture of the state a check promises to leave alone.

Test-only code: it lives under ``tests/`` and nothing in the package imports it.

:func:`fingerprint` turns the state that
:func:`gradcheck_kit._src.state.snapshot.snapshot` records into a hashable value, so
tests can say ``assert fingerprint(model, x) == before``; :meth:`Fingerprint.diff`
names what changed. It walks the objects with the package's own
:class:`~gradcheck_kit._src.state.snapshot.Collector`, so both see the same tensors
under the same labels.

Examples:
    >>> x = torch.zeros(2, requires_grad=True)
    >>> before = fingerprint(x)
    >>> x.grad = torch.ones(2)
    >>> before.diff(fingerprint(x))
    ['tensor #0 .grad changed from None to tensor']
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradcheck_kit._src.state.modes import GlobalModes
from gradcheck_kit._src.state.rng import RngState, capture_rng_state
from gradcheck_kit._src.state.snapshot import (
    RESTORE_ERRORS,
    Collector,
    hook_dicts,
    int_view,
    is_dense,
)

__all__ = [
    "DataFingerprint",
    "Fingerprint",
    "ModuleFingerprint",
    "OptimizerFingerprint",
    "TensorFingerprint",
    "fingerprint",
]


@dataclass(frozen=True)
class DataFingerprint:
    """A tensor's identity, metadata and a sha256 of its bits (``None`` when not dense).

    Examples:
        >>> fingerprint(torch.zeros(2)).tensors[0].data.shape
        (2,)
    """

    identity: int
    shape: tuple[int, ...]
    dtype: str
    device: str
    layout: str
    storage: tuple[int, tuple[int, ...], int] | None
    digest: str | None


@dataclass(frozen=True)
class TensorFingerprint:
    """One tensor: its data, autograd flags and ``.grad``.

    Examples:
        >>> fingerprint(torch.zeros(2, requires_grad=True)).tensors[0].requires_grad
        True
    """

    label: str
    data: DataFingerprint
    requires_grad: bool
    is_leaf: bool
    grad: DataFingerprint | None


@dataclass(frozen=True)
class ModuleFingerprint:
    """One module (each submodule gets its own): training flag and which objects sit where.

    Examples:
        >>> fingerprint(torch.nn.Linear(1, 1)).modules[0].parameters[0][0]
        'weight'
    """

    label: str
    identity: int
    training: bool
    parameters: tuple[tuple[str, int | None], ...]
    buffers: tuple[tuple[str, int | None], ...]
    children: tuple[tuple[str, int | None], ...]
    hooks: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class OptimizerFingerprint:
    """One optimizer: state entries, hyper-parameters and parameter lists, as comparable reprs.

    Tensors inside appear as ``("tensor", label, id)``; their bits are in
    :attr:`Fingerprint.tensors`.

    Examples:
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> fp = fingerprint(torch.optim.SGD([p], lr=0.5)).optimizers[0]
        >>> dict(fp.param_groups[0])["'lr'"]
        '0.5'
    """

    label: str
    state: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    param_groups: tuple[tuple[tuple[str, Any], ...], ...]
    defaults: tuple[tuple[str, Any], ...]


def _digest(t: torch.Tensor) -> str:
    flat = int_view(t.detach()).contiguous().reshape(-1).view(torch.uint8).cpu()
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


def _data_fingerprint(t: torch.Tensor) -> DataFingerprint:
    storage: tuple[int, tuple[int, ...], int] | None = None
    digest: str | None = None
    if is_dense(t):
        try:
            storage = (t.untyped_storage().data_ptr(), tuple(t.stride()), int(t.storage_offset()))
            digest = _digest(t)
        except (*RESTORE_ERRORS, KeyError):
            storage, digest = None, None
    return DataFingerprint(
        identity=id(t),
        shape=tuple(t.shape),
        dtype=str(t.dtype),
        device=str(t.device),
        layout=str(t.layout),
        storage=storage,
        digest=digest,
    )


def _tensor_fingerprint(label: str, t: torch.Tensor) -> TensorFingerprint:
    grad = t.grad if (t.is_leaf or t.retains_grad) else None
    return TensorFingerprint(
        label=label,
        data=_data_fingerprint(t),
        requires_grad=t.requires_grad,
        is_leaf=t.is_leaf,
        grad=None if grad is None else _data_fingerprint(grad),
    )


def _module_fingerprint(label: str, module: nn.Module) -> ModuleFingerprint:
    def ids(table: Mapping[str, object | None]) -> tuple[tuple[str, int | None], ...]:
        return tuple((name, None if v is None else id(v)) for name, v in table.items())

    return ModuleFingerprint(
        label=label,
        identity=id(module),
        training=module.training,
        parameters=ids(module._parameters),
        buffers=ids(module._buffers),
        children=ids(module._modules),
        hooks=tuple((name, tuple(map(repr, d))) for name, d in hook_dicts(module) if d),
    )


def _canonical(value: object, collector: Collector) -> Any:
    """A hashable stand-in for an optimizer value that changes exactly when the value does."""
    if isinstance(value, torch.Tensor):
        return ("tensor", collector.label_of(value), id(value))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v, collector) for v in value)
    if isinstance(value, Mapping):
        return tuple((repr(k), _canonical(v, collector)) for k, v in value.items())
    return repr(value)


def _optimizer_fingerprint(
    label: str, opt: torch.optim.Optimizer, collector: Collector
) -> OptimizerFingerprint:
    state = []
    for param, entry in opt.state.items():
        key = collector.label_of(param) if isinstance(param, torch.Tensor) else repr(param)
        items = entry.items() if isinstance(entry, Mapping) else [("<value>", entry)]
        state.append((key, tuple((repr(k), _canonical(v, collector)) for k, v in items)))
    groups = tuple(
        tuple((repr(k), _canonical(v, collector)) for k, v in group.items())
        for group in opt.param_groups
    )
    defaults = tuple((repr(k), _canonical(v, collector)) for k, v in opt.defaults.items())
    return OptimizerFingerprint(label, tuple(state), groups, defaults)


@dataclass(frozen=True)
class Fingerprint:
    """A hashable picture of the state reachable from some objects, plus global modes and RNGs.

    Equal fingerprints mean nothing a check promises to preserve has changed
    (``_version`` counters excepted). Build one with :func:`fingerprint`.

    Examples:
        >>> x = torch.zeros(3)
        >>> before = fingerprint(x)
        >>> x[0] = 1.0
        >>> before == fingerprint(x), before.diff(fingerprint(x))
        (False, ['tensor #0 (shape (3,)) bits changed'])
    """

    tensors: tuple[TensorFingerprint, ...]
    modules: tuple[ModuleFingerprint, ...]
    optimizers: tuple[OptimizerFingerprint, ...]
    modes: GlobalModes
    rng: RngState

    def diff(self, other: Fingerprint) -> list[str]:
        """Name every difference, reading this fingerprint as *before* and ``other`` as *after*.

        Args:
            other: a later :func:`fingerprint` of the same objects.

        Returns:
            One line per change, e.g. ``"module #0.fc1.weight .grad changed from
            None to tensor"``; empty when the fingerprints are equal.

        Raises:
            TypeError: ``other`` is not a :class:`Fingerprint`.

        Examples:
            >>> m = torch.nn.Linear(1, 1)
            >>> before = fingerprint(m)
            >>> m.weight.grad = torch.zeros(1, 1)
            >>> before.diff(fingerprint(m))
            ['module #0.weight .grad changed from None to tensor']
        """
        if not isinstance(other, Fingerprint):
            raise TypeError(f"other={other!r} must be a Fingerprint, not {type(other).__name__}.")
        out: list[str] = []
        replaced: set[str] = set()
        out += _diff_modules(self.modules, other.modules, replaced)
        out += _diff_tensors(self.tensors, other.tensors, replaced)
        out += _diff_optimizers(self.optimizers, other.optimizers)
        out += self.modes.diff(other.modes)
        out += _diff_rng(self.rng, other.rng)
        return out


def _by_label(items: Iterable[Any]) -> dict[str, Any]:
    return {item.label: item for item in items}


def _paired(
    before: Iterable[Any], after: Iterable[Any]
) -> tuple[list[str], list[tuple[str, Any, Any]]]:
    """Lines for the labels only one side has, and (label, before, after) for the rest."""
    old, new = _by_label(before), _by_label(after)
    out = [f"{label} is no longer reachable" for label in old if label not in new]
    out += [f"{label} is newly reachable" for label in new if label not in old]
    return out, [(label, old[label], new[label]) for label in old if label in new]


def _diff_data(before: DataFingerprint, after: DataFingerprint, what: str) -> list[str]:
    meta = ("shape", "dtype", "device", "layout")
    old = tuple(getattr(before, m) for m in meta)
    new = tuple(getattr(after, m) for m in meta)
    if old != new:
        changes = ", ".join(
            f"{m} {_fmt(a)} -> {_fmt(b)}" for m, a, b in zip(meta, old, new, strict=True) if a != b
        )
        return [f"{what} changed {changes}"]
    out = []
    if before.storage != after.storage:
        out.append(f"{what} (shape {_fmt(before.shape)}) storage or strides changed")
    if before.digest != after.digest:
        out.append(f"{what} (shape {_fmt(before.shape)}) bits changed")
    return out


def _fmt(value: object) -> str:
    return str(value)


def _diff_tensors(
    before: tuple[TensorFingerprint, ...],
    after: tuple[TensorFingerprint, ...],
    replaced: set[str],
) -> list[str]:
    out, both = _paired(before, after)
    for label, a, b in both:
        if a.data.identity != b.data.identity and label not in replaced:
            out.append(f"{label} is now a different tensor object")
        out += _diff_data(a.data, b.data, label)
        if a.requires_grad != b.requires_grad:
            out.append(f"{label} requires_grad changed from {a.requires_grad} to {b.requires_grad}")
        if a.is_leaf != b.is_leaf:
            out.append(f"{label} is_leaf changed from {a.is_leaf} to {b.is_leaf}")
        if (a.grad is None) != (b.grad is None):
            was, now = ("None", "tensor") if a.grad is None else ("tensor", "None")
            out.append(f"{label} .grad changed from {was} to {now}")
        elif a.grad is not None and b.grad is not None:
            if a.grad.identity != b.grad.identity:
                out.append(f"{label} .grad is now a different tensor object")
            out += _diff_data(a.grad, b.grad, f"{label} .grad")
    return out


def _diff_modules(
    before: tuple[ModuleFingerprint, ...],
    after: tuple[ModuleFingerprint, ...],
    replaced: set[str],
) -> list[str]:
    out, both = _paired(before, after)
    for label, a, b in both:
        if a.training != b.training:
            out.append(f"{label} training changed from {a.training} to {b.training}")
        for kind, x, y in (
            ("parameter", a.parameters, b.parameters),
            ("buffer", a.buffers, b.buffers),
            ("submodule", a.children, b.children),
        ):
            xs, ys = dict(x), dict(y)
            for name in xs.keys() - ys.keys():
                out.append(f"{label} {kind} {name!r} was removed")
            for name in ys.keys() - xs.keys():
                out.append(f"{label} {kind} {name!r} was added")
            for name in (n for n in xs if n in ys and xs[n] != ys[n]):
                out.append(f"{label} {kind} {name!r} was replaced by another object")
                replaced.add(f"{label}.{name}")
        if a.hooks != b.hooks:
            out.append(f"{label} hooks changed")
    return out


def _diff_optimizers(
    before: tuple[OptimizerFingerprint, ...], after: tuple[OptimizerFingerprint, ...]
) -> list[str]:
    old, new = _by_label(before), _by_label(after)
    out = [f"{label} is no longer reachable" for label in old if label not in new]
    for label in (lb for lb in old if lb in new):
        a, b = old[label], new[label]
        sa, sb = dict(a.state), dict(b.state)
        out += [f"{label}.state[{k}] was removed" for k in sa if k not in sb]
        out += [f"{label}.state[{k}] was added" for k in sb if k not in sa]
        for key in (k for k in sa if k in sb):
            out += _diff_pairs(sa[key], sb[key], f"{label}.state[{key}]")
        if len(a.param_groups) != len(b.param_groups):
            out.append(
                f"{label} number of param_groups changed from "
                f"{len(a.param_groups)} to {len(b.param_groups)}"
            )
        for index, (ga, gb) in enumerate(zip(a.param_groups, b.param_groups, strict=False)):
            out += _diff_pairs(ga, gb, f"{label}.param_groups[{index}]")
        out += _diff_pairs(a.defaults, b.defaults, f"{label}.defaults")
    return out


def _diff_pairs(
    before: tuple[tuple[str, Any], ...], after: tuple[tuple[str, Any], ...], where: str
) -> list[str]:
    old, new = dict(before), dict(after)
    out = [f"{where}[{k}] was removed" for k in old if k not in new]
    out += [f"{where}[{k}] was added" for k in new if k not in old]
    for key in (k for k in old if k in new and old[k] != new[k]):
        out.append(f"{where}[{key}] changed from {_short(old[key])} to {_short(new[key])}")
    return out


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _diff_rng(before: RngState, after: RngState) -> list[str]:
    out = []
    if before.torch_cpu != after.torch_cpu:
        out.append("torch RNG state changed")
    if before.cuda != after.cuda:
        out.append("CUDA RNG state changed")
    if before.python != after.python:
        out.append("Python random state changed")
    if before.numpy != after.numpy:
        out.append("NumPy RNG state changed")
    if before.lazy_seeds != after.lazy_seeds:
        out.append("seeds queued for uninitialised devices changed")
    return out


def fingerprint(*objects: object) -> Fingerprint:
    """A hashable, comparable picture of the state that :func:`snapshot` would record.

    Holds sha256 digests of bits (of ``.grad`` too), identities (``id``),
    ``requires_grad``/``is_leaf``, module training flags and parameter
    identities, optimizer state and hyper-parameters, global modes and RNG
    states. Compare two with ``==``; :meth:`Fingerprint.diff` names what changed.

    Args:
        *objects: as for :func:`snapshot`.

    Returns:
        A :class:`Fingerprint`.

    Examples:
        >>> from gradcheck_kit._src.state.snapshot import preserved
        >>> m = torch.nn.Linear(2, 1)
        >>> before = fingerprint(m)
        >>> with preserved(m):
        ...     _ = m.eval()
        >>> fingerprint(m) == before
        True
    """
    collector = Collector(objects)
    return Fingerprint(
        tensors=tuple(_tensor_fingerprint(label, t) for label, t in collector.tensors.values()),
        modules=tuple(_module_fingerprint(label, m) for label, m in collector.modules.values()),
        optimizers=tuple(
            _optimizer_fingerprint(label, o, collector)
            for label, o in collector.optimizers.values()
        ),
        modes=GlobalModes.capture(),
        rng=capture_rng_state(),
    )
