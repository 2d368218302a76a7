"""Random number generators: capture, restore, seed and replay them.

:func:`capture_rng_state`, :func:`restore_rng_state`, :func:`seed_everything`,
:func:`replaying_rng` and :class:`RngReplayer` make a stochastic function see
the same random stream at every evaluation (``rng="replay"``);
:func:`rng_fingerprint` tells cheaply whether a call drew random numbers.

Only public torch API is used, except the lazy seed trackers of
``torch.cuda``/``torch.xpu``/``torch.mtia``, read in one helper
(``torch.manual_seed`` queues a seed there while the device is not initialised;
leaving ours queued would seed the user's device generators once they start it).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import torch

from ..errors import InvalidArgument
from ..validation import check_int

__all__ = [
    "RngReplayer",
    "RngState",
    "capture_rng_state",
    "replaying_rng",
    "restore_rng_state",
    "rng_fingerprint",
    "seed_everything",
    "seed_torch",
]

# NumPy's legacy global generator only takes seeds in [0, 2**32).
_SEED_LIMIT: Final = 2**32
# Backends whose `manual_seed_all` is queued until the device is initialised.
_LAZY_SEED_BACKENDS: Final = ("cuda", "xpu", "mtia")
_TRACKER_ATTRS: Final = ("manual_seed_all_cb", "manual_seed_cb", "call_order")
# Untyped in torch's annotations; typed here once.
_torch_cuda_is_initialized: Callable[[], bool] = torch.cuda.is_initialized


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
        >>> from gradcheck_kit._src.state.snapshot import preserved
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
            >>> from gradcheck_kit._src.state.snapshot import preserved
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
