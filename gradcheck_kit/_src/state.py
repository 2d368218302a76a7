"""Leave no trace: snapshot and restore everything a check could disturb; replay randomness.

A check promises to leave every tensor, parameter, buffer, ``.grad``,
``requires_grad`` flag, module training mode, optimizer state, global autograd
mode, TF32 switch and random number generator exactly as it found them, whether it passes,
fails, or the user's function raises. This module is the one mechanism for that:

* :func:`snapshot` / :func:`preserved` record the state reachable from some
  objects (tensors, modules, optimizers, nested in tuples, lists and dicts)
  plus the global modes and RNG states, and write it back.
* :func:`fingerprint` turns the same state into a hashable value, so tests can
  say ``assert fingerprint(model, x) == before``; :meth:`Fingerprint.diff`
  names what changed.
* :func:`capture_rng_state`, :func:`restore_rng_state`, :func:`seed_everything`,
  :func:`replaying_rng` and :class:`RngReplayer` make a stochastic function see
  the same random stream at every evaluation (``rng="replay"``).

Only public torch API is used, with two exceptions kept in one helper each:
``nn.Module``'s ``_parameters``/``_buffers``/``_modules``/hook dicts (there is
no public way to put back the very objects a check replaced) and the lazy seed
trackers of ``torch.cuda``/``torch.xpu``/``torch.mtia`` (``torch.manual_seed``
queues a seed there while the device is not initialised; leaving ours queued
would seed the user's device generators once they start it).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from .compat import default_device
from .engine.precision import Tf32Settings
from .errors import InvalidArgument
from .readback import read_host
from .validation import check_int

__all__ = [
    "DataFingerprint",
    "Fingerprint",
    "GlobalModes",
    "ModuleFingerprint",
    "OptimizerFingerprint",
    "RngReplayer",
    "RngState",
    "Snapshot",
    "StateRestoreWarning",
    "bits_equal",
    "TensorFingerprint",
    "capture_rng_state",
    "fingerprint",
    "preserved",
    "replaying_rng",
    "restore_rng_state",
    "rng_fingerprint",
    "seed_everything",
    "seed_torch",
    "snapshot",
]

# NumPy's legacy global generator only takes seeds in [0, 2**32).
_SEED_LIMIT: Final = 2**32
# Backends whose `manual_seed_all` is queued until the device is initialised.
_LAZY_SEED_BACKENDS: Final = ("cuda", "xpu", "mtia")
# An integer dtype per element size: equal integer views mean equal bits
# (NaN payloads and -0.0 included, which value comparison would miss).
_INT_BY_ITEMSIZE: Final = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_TRACKER_ATTRS: Final = ("manual_seed_all_cb", "manual_seed_cb", "call_order")
_RESTORE_ERRORS: Final = (RuntimeError, TypeError, ValueError, NotImplementedError)
# Untyped in torch's annotations; typed here once.
_torch_cuda_is_initialized: Callable[[], bool] = torch.cuda.is_initialized


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


# --------------------------------------------------------------------------- RNG


@dataclass(frozen=True, repr=False)
class RngState:
    """The state of every random number generator a user function is likely to draw from.

    Hashable and comparable: two captures are equal when every generator would
    produce the same stream.

    Attributes:
        torch_cpu: bytes of ``torch.get_rng_state()``.
        cuda: bytes of each CUDA device's generator state, or ``None`` when CUDA
            was not initialised at capture (it is never initialised just to read it).
        python: ``random.getstate()``.
        numpy: NumPy's legacy global state, as a hashable tuple.
        lazy_seeds: which seeds ``torch.manual_seed`` has queued for devices that
            are not initialised yet, by identity of the queued callbacks.

    Examples:
        >>> capture_rng_state() == capture_rng_state()
        True
    """

    torch_cpu: bytes
    cuda: tuple[bytes, ...] | None
    python: tuple[Any, ...]
    numpy: tuple[Any, ...]
    lazy_seeds: tuple[tuple[str, tuple[int, ...]], ...]
    _numpy_raw: Any = field(compare=False)
    _lazy_raw: tuple[tuple[str, Any, Any, list[Any]], ...] = field(compare=False)
    # where NumPy's stream stood, read cheaply: restoring is skipped when it has not moved
    _numpy_at: Any = field(compare=False, default=None)

    def __repr__(self) -> str:
        cuda = "not initialised" if self.cuda is None else f"{len(self.cuda)} device(s)"
        digest = hashlib.sha256(self.torch_cpu).hexdigest()[:12]
        return f"RngState(torch_cpu=sha256:{digest}…, cuda={cuda})"


def _cuda_initialized() -> bool:
    # is_initialized() first: it never starts CUDA, and is False on CPU-only builds.
    return _torch_cuda_is_initialized() and torch.cuda.is_available()


def _lazy_seed_trackers() -> Iterator[tuple[str, Any]]:
    """(backend name, tracker) for each backend whose generators are not initialised yet."""
    for name in _LAZY_SEED_BACKENDS:
        backend = getattr(torch, name, None)
        tracker = getattr(backend, "_lazy_seed_tracker", None)
        is_initialized = getattr(backend, "is_initialized", None)
        if tracker is None or is_initialized is None or is_initialized():
            continue
        if not all(hasattr(tracker, a) for a in _TRACKER_ATTRS):
            continue
        yield name, tracker


def _uint8_bytes(t: torch.Tensor) -> bytes:
    if t.dtype == torch.uint8 and t.device.type == "cpu" and t.is_contiguous():
        return t.numpy().tobytes()  # a generator state as torch hands it out
    flat = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return bytes(flat.numpy().tobytes())


def _uint8_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def capture_rng_state() -> RngState:
    """Read the torch (CPU and initialised CUDA), Python ``random`` and NumPy generator states.

    Returns:
        An :class:`RngState` that :func:`restore_rng_state` puts back.

    Examples:
        >>> import random
        >>> state = capture_rng_state()
        >>> first = (torch.rand(2), random.random())
        >>> restore_rng_state(state)
        >>> second = (torch.rand(2), random.random())
        >>> torch.equal(first[0], second[0]) and first[1] == second[1]
        True
    """
    cuda: tuple[bytes, ...] | None = None
    if _cuda_initialized():
        cuda = tuple(_uint8_bytes(s) for s in torch.cuda.get_rng_state_all())
    # Any: the stubs promise a tuple, but a swapped global bit generator gives a dict.
    np_raw: Any = np.random.get_state()
    if isinstance(np_raw, tuple):
        name, keys, pos, has_gauss, cached = np_raw  # get_state hands out a fresh key array
        np_key: tuple[Any, ...] = (
            str(name),
            np.asarray(keys).tobytes(),
            int(pos),
            int(has_gauss),
            float(cached),
        )
    else:  # Only when someone swapped the global bit generator; such states are small.
        np_key = ("dict", repr(np_raw))
    lazy_raw: list[tuple[str, Any, Any, list[Any]]] = []
    lazy_key: list[tuple[str, tuple[int, ...]]] = []
    for name, tracker in _lazy_seed_trackers():
        order = list(tracker.call_order)
        lazy_raw.append((name, tracker.manual_seed_all_cb, tracker.manual_seed_cb, order))
        ids = (id(tracker.manual_seed_all_cb), id(tracker.manual_seed_cb), *map(id, order))
        lazy_key.append((name, ids))
    return RngState(
        torch_cpu=_uint8_bytes(torch.get_rng_state()),
        cuda=cuda,
        python=random.getstate(),
        numpy=np_key,
        lazy_seeds=tuple(lazy_key),
        _numpy_raw=np_raw,
        _lazy_raw=tuple(lazy_raw),
        _numpy_at=_numpy_position(),
    )


def _numpy_position() -> Any:
    """Where NumPy's global generator is in its stream, read without copying its state.

    For the default MT19937 bit generator: its position and first key word, read
    through its documented ``ctypes.state_address`` (the state struct starts with
    the 624-word key, then the position), verified against ``.state`` the first
    time. Any other generator, or a layout that does not verify: the full state.
    """
    bit_generator = np.random.mtrand._rand._bit_generator
    address = _NUMPY_ADDRESSES.get(id(bit_generator))
    if address is None:
        address = _verified_address(bit_generator)
        _NUMPY_ADDRESSES[id(bit_generator)] = address
    if address:
        return (
            ctypes.c_int.from_address(address + _MT_KEY_BYTES).value,
            ctypes.c_uint32.from_address(address).value,
        )
    return repr(np.random.get_state())


_MT_KEY_BYTES: Final = 624 * 4
# id(bit generator) -> address of its MT19937 state, or 0 where reading it does not verify
_NUMPY_ADDRESSES: dict[int, int] = {}


def _verified_address(bit_generator: Any) -> int:
    try:
        if type(bit_generator).__name__ != "MT19937":
            return 0
        state = bit_generator.state["state"]
        address = int(bit_generator.ctypes.state_address)
        pos = ctypes.c_int.from_address(address + _MT_KEY_BYTES).value
        key0 = ctypes.c_uint32.from_address(address).value
        return address if (pos, key0) == (int(state["pos"]), int(state["key"][0])) else 0
    except Exception:  # any surprise: use the slow, exact reading
        return 0


def rng_fingerprint() -> tuple[Any, ...]:
    """A cheap value that changes when a function draws from torch, ``random`` or NumPy.

    For telling whether a call drew random numbers (not for restoring them:
    :func:`capture_rng_state` does that). About 10 us, where a capture takes 45.

    Examples:
        >>> before = rng_fingerprint()
        >>> _ = torch.rand(1)
        >>> rng_fingerprint() != before
        True
    """
    cuda: Any = None
    if _cuda_initialized():
        cuda = tuple(_uint8_bytes(s) for s in torch.cuda.get_rng_state_all())
    return (
        torch.default_generator.get_state().numpy().tobytes(),
        cuda,
        random.getstate(),
        _numpy_position(),
    )


def restore_rng_state(state: RngState) -> None:
    """Put back generator states read by :func:`capture_rng_state`.

    CUDA generators are restored only when CUDA is initialised now and was at
    capture; CUDA cannot be un-initialised, so a function that started CUDA
    leaves it started.

    Args:
        state: what :func:`capture_rng_state` returned.

    Raises:
        TypeError: ``state`` is not an :class:`RngState`.

    Examples:
        >>> state = capture_rng_state()
        >>> a = torch.randn(3)
        >>> restore_rng_state(state)
        >>> torch.equal(a, torch.randn(3))
        True
    """
    if not isinstance(state, RngState):
        raise TypeError(f"state={state!r} must be an RngState, not {type(state).__name__}.")
    torch.set_rng_state(_uint8_tensor(state.torch_cpu))
    cuda = state.cuda
    if cuda is not None and _cuda_initialized() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_uint8_tensor(s) for s in cuda])
    random.setstate(state.python)
    # Unmoved, NumPy's stream needs no writing back (31 us) -- unless a cached Gaussian
    # was pending, which a draw can consume without moving the stream.
    pending_gaussian = len(state.numpy) != 5 or state.numpy[3] != 0
    if pending_gaussian or state._numpy_at is None or _numpy_position() != state._numpy_at:
        np.random.set_state(state._numpy_raw)
    trackers = dict(_lazy_seed_trackers())
    for name, seed_all_cb, seed_cb, order in state._lazy_raw:
        tracker = trackers.get(name)
        if tracker is not None:
            tracker.manual_seed_all_cb = seed_all_cb
            tracker.manual_seed_cb = seed_cb
            tracker.call_order = list(order)


def _check_seed(seed: object) -> None:
    check_int(seed, "seed", min_value=0)
    if isinstance(seed, int) and seed >= _SEED_LIMIT:
        raise InvalidArgument(f"seed={seed!r} must be < 2**32 (NumPy's legacy seeding limit).")


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), Python ``random`` and NumPy's global generator.

    Changes global state on purpose; wrap it in :func:`replaying_rng` or
    :func:`preserved` to have the previous state put back.

    Args:
        seed: an int in ``[0, 2**32)``.

    Raises:
        InvalidArgument: ``seed`` is not an int in that range (checked before seeding anything).

    Examples:
        >>> seed_everything(0); a = torch.rand(2)
        >>> seed_everything(0); b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    _check_seed(seed)
    seed_torch(seed)
    random.seed(seed)
    np.random.seed(seed)


def seed_torch(seed: int) -> None:
    """Seed torch's generators: the CPU one, and every device's where a backend is present.

    Examples:
        >>> seed_torch(3); a = torch.rand(2)
        >>> seed_torch(3); torch.equal(a, torch.rand(2))
        True
    """
    if _accelerators_present():
        # seeds every device generator, lazily where a backend is not initialised yet
        torch.manual_seed(seed)
    else:
        # the CPU generator is all there is; torch.manual_seed would also queue lazy
        # seeds for absent backends, recording a stack trace each (~80 us a call)
        torch.default_generator.manual_seed(seed)


def _accelerators_present() -> bool:
    """Whether a backend besides the CPU could hold a generator torch.manual_seed seeds."""
    if torch.cuda.is_available():
        return True
    for name in ("xpu", "mtia"):
        backend = getattr(torch, name, None)
        available = getattr(backend, "is_available", None)
        if available is not None and available():
            return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


@contextlib.contextmanager
def replaying_rng(seed: int) -> Iterator[None]:
    """Seed every generator with ``seed`` inside the block; put the previous states back after.

    Args:
        seed: an int in ``[0, 2**32)``.

    Raises:
        InvalidArgument: bad ``seed``, raised before anything changes.

    Examples:
        >>> before = capture_rng_state()
        >>> with replaying_rng(7):
        ...     a = torch.rand(2)
        >>> with replaying_rng(7):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b), capture_rng_state() == before
        (True, True)
    """
    _check_seed(seed)
    saved = capture_rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        restore_rng_state(saved)


class RngReplayer:
    """Give every evaluation of a stochastic function the same random streams.

    ``with replayer.fresh(): f(x)`` seeds torch, ``random`` and NumPy with the
    same seed at each entry, so N evaluations draw identical numbers. It restores
    nothing itself: run the whole check inside :func:`preserved`.

    Args:
        seed: an int in ``[0, 2**32)``.

    Raises:
        InvalidArgument: bad ``seed``.

    Examples:
        >>> replayer = RngReplayer(3)
        >>> with preserved():
        ...     with replayer.fresh():
        ...         a = torch.rand(2)
        ...     with replayer.fresh():
        ...         b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """

    __slots__ = ("_seed",)

    def __init__(self, seed: int) -> None:
        _check_seed(seed)
        self._seed = seed

    @property
    def seed(self) -> int:
        """The seed every :meth:`fresh` block starts from.

        Examples:
            >>> RngReplayer(5).seed
            5
        """
        return self._seed

    @contextlib.contextmanager
    def fresh(self) -> Iterator[None]:
        """Seed every generator with :attr:`seed`, then run the block.

        Examples:
            >>> import random
            >>> r = RngReplayer(1)
            >>> with preserved():
            ...     with r.fresh():
            ...         a = random.random()
            ...     with r.fresh():
            ...         b = random.random()
            >>> a == b
            True
        """
        seed_everything(self._seed)
        yield

    def __repr__(self) -> str:
        return f"RngReplayer(seed={self._seed!r})"


# ------------------------------------------------------------------ global modes


@dataclass(frozen=True)
class GlobalModes:
    """Process-wide torch settings a check might flip.

    Examples:
        >>> GlobalModes.capture().grad_enabled == torch.is_grad_enabled()
        True
    """

    grad_enabled: bool
    anomaly_enabled: bool
    anomaly_check_nan: bool
    default_dtype: torch.dtype
    default_device: torch.device
    deterministic: bool
    deterministic_warn_only: bool
    tf32: Tf32Settings

    @classmethod
    def capture(cls) -> GlobalModes:
        """Read the current modes.

        Examples:
            >>> GlobalModes.capture() == GlobalModes.capture()
            True
        """
        return cls(
            grad_enabled=torch.is_grad_enabled(),
            anomaly_enabled=torch.is_anomaly_enabled(),
            anomaly_check_nan=torch.is_anomaly_check_nan_enabled(),
            default_dtype=torch.get_default_dtype(),
            default_device=default_device(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            tf32=Tf32Settings.capture(),
        )

    def restore(self) -> None:
        """Set every mode that differs from this capture back to it.

        Examples:
            >>> modes = GlobalModes.capture()
            >>> torch.set_default_dtype(torch.float64)
            >>> modes.restore()
            >>> torch.get_default_dtype()
            torch.float32
        """
        now = GlobalModes.capture()
        if now.grad_enabled != self.grad_enabled:
            torch.set_grad_enabled(self.grad_enabled)
        if (now.anomaly_enabled, now.anomaly_check_nan) != (
            self.anomaly_enabled,
            self.anomaly_check_nan,
        ):
            torch.set_anomaly_enabled(self.anomaly_enabled, self.anomaly_check_nan)
        if now.default_dtype != self.default_dtype:
            torch.set_default_dtype(self.default_dtype)
        if now.default_device != self.default_device:
            # None drops the global device context instead of pushing a "cpu" one,
            # which would slow every factory call down.
            target = None if self.default_device.type == "cpu" else self.default_device
            torch.set_default_device(target)
        if (now.deterministic, now.deterministic_warn_only) != (
            self.deterministic,
            self.deterministic_warn_only,
        ):
            torch.use_deterministic_algorithms(
                self.deterministic, warn_only=self.deterministic_warn_only
            )
        if now.tf32 != self.tf32:
            self.tf32.restore()

    def diff(self, other: GlobalModes) -> list[str]:
        """Name each mode that differs, from this capture to ``other``.

        Examples:
            >>> a = GlobalModes.capture()
            >>> with torch.no_grad():
            ...     b = GlobalModes.capture()
            >>> a.diff(b)
            ['grad mode changed from True to False']
        """
        names = (
            ("grad_enabled", "grad mode"),
            ("anomaly_enabled", "anomaly detection"),
            ("anomaly_check_nan", "anomaly detection's NaN check"),
            ("default_dtype", "default dtype"),
            ("default_device", "default device"),
            ("deterministic", "deterministic algorithms"),
            ("deterministic_warn_only", "deterministic algorithms' warn_only"),
            ("tf32", "TF32 settings"),
        )
        out = []
        for attr, what in names:
            old, new = getattr(self, attr), getattr(other, attr)
            if old != new:
                out.append(f"{what} changed from {old} to {new}")
        return out


# ------------------------------------------------------------------ walking inputs


def _is_dense(t: torch.Tensor) -> bool:
    """Whether `t`'s elements live in ordinary memory we can copy and write back."""
    return (
        t.layout == torch.strided
        and not t.is_meta
        and not t.is_quantized
        and not t.is_nested
        and not nn.parameter.is_lazy(t)
    )


class _Collector:
    """Find every tensor, module and optimizer reachable from some objects, once each, with a label.

    Labels are paths from the argument list: ``tensor #1[0]['w']``,
    ``module #0.fc1.weight``, ``optimizer #2.state[module #0.fc1.weight]['exp_avg']``.
    """

    def __init__(self, objects: tuple[object, ...]) -> None:
        self.tensors: dict[int, tuple[str, torch.Tensor]] = {}
        self.modules: dict[int, tuple[str, nn.Module]] = {}
        self.optimizers: dict[int, tuple[str, torch.optim.Optimizer]] = {}
        self._containers: set[int] = set()
        for index, obj in enumerate(objects):
            self._visit(obj, f"#{index}")

    def label_of(self, t: torch.Tensor) -> str:
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


def _int_view(t: torch.Tensor) -> torch.Tensor:
    """An integer view of `t`'s logical elements, one int per real scalar."""
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
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_int_view(a), _int_view(b))


def _digest(t: torch.Tensor) -> str:
    flat = _int_view(t.detach()).contiguous().reshape(-1).view(torch.uint8).cpu()
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


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


def _hook_dicts(module: nn.Module) -> list[tuple[str, dict[Any, Any]]]:
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
    if _is_dense(t):
        try:
            with torch.no_grad():
                data = t.data
                bits = data.clone()
            bits_int = _int_view(bits)  # fails early for dtypes without an integer twin
        except (*_RESTORE_ERRORS, KeyError):
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
        hooks=[(d, list(d.items())) for _, d in _hook_dicts(module)],
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
        collector = _Collector(objects)
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
        except _RESTORE_ERRORS as exc:
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
                    pending.append((id(record), _int_view(now).ne(record.bits_int).any()))
            except _RESTORE_ERRORS as exc:
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
        >>> before = fingerprint(model)
        >>> with preserved(model):
        ...     _ = model.eval()
        ...     model(torch.randn(1, 2)).sum().backward()
        ...     _ = torch.set_grad_enabled(False)
        >>> fingerprint(model) == before, model[0].weight.grad is None
        (True, True)
    """
    snap = Snapshot(objects)
    try:
        yield snap
    finally:
        snap.restore()


# ------------------------------------------------------------------ fingerprint


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


def _data_fingerprint(t: torch.Tensor) -> DataFingerprint:
    storage: tuple[int, tuple[int, ...], int] | None = None
    digest: str | None = None
    if _is_dense(t):
        try:
            storage = (t.untyped_storage().data_ptr(), tuple(t.stride()), int(t.storage_offset()))
            digest = _digest(t)
        except (*_RESTORE_ERRORS, KeyError):
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
        hooks=tuple((name, tuple(map(repr, d))) for name, d in _hook_dicts(module) if d),
    )


def _canonical(value: object, collector: _Collector) -> Any:
    """A hashable stand-in for an optimizer value that changes exactly when the value does."""
    if isinstance(value, torch.Tensor):
        return ("tensor", collector.label_of(value), id(value))
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v, collector) for v in value)
    if isinstance(value, Mapping):
        return tuple((repr(k), _canonical(v, collector)) for k, v in value.items())
    return repr(value)


def _optimizer_fingerprint(
    label: str, opt: torch.optim.Optimizer, collector: _Collector
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
    old, new = _by_label(before), _by_label(after)
    out = [f"{label} is no longer reachable" for label in old if label not in new]
    out += [f"{label} is newly reachable" for label in new if label not in old]
    for label in (lb for lb in old if lb in new):
        a, b = old[label], new[label]
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
    old, new = _by_label(before), _by_label(after)
    out = [f"{label} is no longer reachable" for label in old if label not in new]
    out += [f"{label} is newly reachable" for label in new if label not in old]
    for label in (lb for lb in old if lb in new):
        a, b = old[label], new[label]
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
        >>> m = torch.nn.Linear(2, 1)
        >>> before = fingerprint(m)
        >>> with preserved(m):
        ...     _ = m.eval()
        >>> fingerprint(m) == before
        True
    """
    collector = _Collector(objects)
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


# doctest skips a class whose __module__ is another module; __test__ keeps its example.
__test__ = {"StateRestoreWarning": StateRestoreWarning}
