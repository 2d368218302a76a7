"""TF32 on CUDA: read, switch off for the span of a check, and put back exactly.

On Ampere and later GPUs, cuBLAS matmuls (when the user enables it) and cuDNN
convolutions and RNNs (torch's default) may run float32 work in TF32, a
10-bit-mantissa format with unit roundoff 2**-11 ~ 4.9e-4 instead of float32's
1.2e-7. Finite differences in float32 rely on float32's roundoff: under TF32
the forward pass is ~4000x noisier and a correct gradient fails, while the
derivative formulas being checked do not depend on TF32 at all. So a check runs
its float32 CUDA work in full IEEE float32 and says so in its notes.

torch >= 2.9 has two APIs for the same switches: the legacy flags
(``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``,
``torch.set_float32_matmul_precision``) and per-backend ``fp32_precision``
strings. Reading a legacy flag raises once the two were mixed, and a legacy
write rewrites the strings, so a save/restore through the legacy API does not
round-trip. Writing only the strings does: saving the three strings and writing
them back leaves every reading, legacy ones included, as it was. Older torch
has only the legacy flags, which round-trip by themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch

__all__ = ["Tf32Settings", "full_float32_precision", "tf32_note"]

# (label, path from torch.backends) of the switches a float32 CUDA kernel consults.
_NODES: Final = (
    ("cuBLAS matmuls", ("cuda", "matmul")),
    ("cuDNN convolutions", ("cudnn", "conv")),
    ("cuDNN RNNs", ("cudnn", "rnn")),
)
# Where a node says "none" it inherits from its parent, up to torch.backends.
_PARENTS: Final[dict[tuple[str, ...], tuple[str, ...]]] = {
    ("cuda", "matmul"): ("cuda",),
    ("cudnn", "conv"): ("cudnn",),
    ("cudnn", "rnn"): ("cudnn",),
}
_TF32_DTYPES: Final = (torch.float32, torch.complex64)


def _node(path: Sequence[str]) -> Any:
    obj: Any = torch.backends
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _has_strings() -> bool:
    matmul = _node(("cuda", "matmul"))
    try:
        return isinstance(getattr(matmul, "fp32_precision", None), str)
    except RuntimeError:
        return False


def _string(path: Sequence[str]) -> str:
    node = _node(path)
    value = getattr(node, "fp32_precision", "none") if node is not None else "none"
    return str(value)


def _effective(path: tuple[str, ...]) -> str:
    """The precision a node resolves to, following "none" up to torch.backends."""
    chain: list[tuple[str, ...]] = [path]
    parent = _PARENTS.get(path)
    if parent is not None:
        chain.append(parent)
    chain.append(())
    for p in chain:
        value = _string(p) if p else str(getattr(torch.backends, "fp32_precision", "none"))
        if value != "none":
            return value
    return "ieee"


@dataclass(frozen=True)
class Tf32Settings:
    """The TF32 switches as found: ``fp32_precision`` strings, or legacy flags on old torch.

    Examples:
        >>> Tf32Settings.capture() == Tf32Settings.capture()
        True
    """

    strings: tuple[str, ...] | None
    legacy: tuple[str, bool] | None

    @classmethod
    def capture(cls) -> Tf32Settings:
        """Read the switches without writing any.

        Examples:
            >>> Tf32Settings.capture().enabled() in ([], ["cuDNN convolutions", "cuDNN RNNs"])
            True
        """
        if _has_strings():
            return cls(strings=tuple(_string(path) for _, path in _NODES), legacy=None)
        return cls(
            strings=None,
            legacy=(torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32)),
        )

    def enabled(self) -> list[str]:
        """The backends that may run float32 work in TF32 under these settings.

        Examples:
            >>> isinstance(Tf32Settings.capture().enabled(), list)
            True
        """
        if self.strings is not None:
            return [label for label, path in _NODES if _effective(path) == "tf32"]
        assert self.legacy is not None
        precision, cudnn = self.legacy
        out = ["cuBLAS matmuls"] if precision != "highest" else []
        return out + (["cuDNN convolutions", "cuDNN RNNs"] if cudnn else [])

    def restore(self) -> None:
        """Write back every switch that differs from this capture.

        Examples:
            >>> settings = Tf32Settings.capture()
            >>> settings.restore()
            >>> Tf32Settings.capture() == settings
            True
        """
        if self.strings is not None:
            for (_, path), value in zip(_NODES, self.strings, strict=True):
                node = _node(path)
                if node is not None and _string(path) != value:
                    node.fp32_precision = value
            return
        assert self.legacy is not None
        precision, cudnn = self.legacy
        if torch.get_float32_matmul_precision() != precision:
            torch.set_float32_matmul_precision(precision)
        if bool(torch.backends.cudnn.allow_tf32) != cudnn:
            torch.backends.cudnn.allow_tf32 = cudnn


def _switch_off() -> None:
    if _has_strings():
        for _, path in _NODES:
            node = _node(path)
            if node is not None:
                node.fp32_precision = "ieee"
    else:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False


def _cuda_present() -> bool:
    # TF32 only changes CUDA kernels; a CPU-only process never needs the switch.
    return bool(torch.cuda.is_available())


@contextlib.contextmanager
def full_float32_precision() -> Iterator[list[str]]:
    """Run the block with TF32 off on CUDA; yield the backends that had it on.

    Restores the switches on exit, also when the block raises. Does nothing
    (and yields ``[]``) in a process without CUDA.

    Examples:
        >>> with full_float32_precision() as switched_off:
        ...     pass
        >>> isinstance(switched_off, list)
        True
    """
    if not _cuda_present():
        yield []
        return
    saved = Tf32Settings.capture()
    switched = saved.enabled()
    if not switched:
        yield []
        return
    _switch_off()
    try:
        yield switched
    finally:
        saved.restore()


def tf32_note(switched: Sequence[str], tensors: Sequence[torch.Tensor]) -> str | None:
    """The note a result carries when TF32 was switched off for CUDA float32 tensors.

    Examples:
        >>> tf32_note([], [torch.zeros(1)]) is None
        True
    """
    if not switched or not any(
        t.is_cuda and t.dtype in _TF32_DTYPES for t in tensors if isinstance(t, torch.Tensor)
    ):
        return None
    return (
        f"TF32 was on for {', '.join(switched)}; the check ran them in full float32 and put "
        f"the setting back (TF32's unit roundoff 4.9e-4 would drown float32 finite "
        f"differences, and the derivative being checked does not depend on it). Compare "
        f"TF32 against float32 results with assert_device_parity."
    )
