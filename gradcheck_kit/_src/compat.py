"""Feature detection for the torch releases the package supports (see README, "Supported torch").

One job: where torch's APIs differ between releases, ask torch whether it has
the feature (``hasattr``, a signature) and fall back when it does not. No code
here compares ``torch.__version__``: backports, nightlies and vendor builds make
version numbers a poor guide to what a build can do.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["default_device", "CONJ_OP", "conj_of_scalar"]


def default_device() -> torch.device:
    """The device torch's factory functions use now (``torch.set_default_device``).

    Examples:
        >>> default_device().type in ("cpu", "cuda", "meta", "mps", "xpu")
        True
    """
    getter = getattr(torch, "get_default_device", None)
    if getter is not None:
        try:
            return torch.device(getter())
        except AttributeError:
            # torch 2.3's getter fails once set_default_device(None) has run
            # (its thread-local context is then None); the factories still answer
            pass
    return torch.empty(0).device


# The op a dispatch mode sees for autograd's ``other.conj()`` in the backward of
# ``mul``/``div`` by a Python complex number.
CONJ_OP: Any = torch.ops.aten._conj.default


def conj_of_scalar(func: Any, args: tuple[Any, ...]) -> torch.Tensor | None:
    """What ``func(*args)`` would return when torch handed a dispatch mode a Python scalar.

    Releases before pytorch/pytorch#131482 unwrap the wrapped-number tensor of
    ``x * (1 + 2j)`` into a Python ``complex`` when the backward's ``conj`` reaches
    a ``__torch_dispatch__`` mode, and ``aten::_conj`` rejects it, so every
    backward through such a product failed under the package's dispatch modes.
    Later releases never pass the scalar; then this returns None and the
    handler runs ``func`` as usual. The result is the wrapped number's own
    tensor: 0-dim, complex128, on the CPU.

    Examples:
        >>> conj_of_scalar(CONJ_OP, (1 + 2j,))
        tensor(1.-2.j, dtype=torch.complex128)
        >>> conj_of_scalar(CONJ_OP, (torch.ones(1),)) is None
        True
    """
    if func is CONJ_OP and args and isinstance(args[0], (int, float, complex)):
        return torch.tensor(complex(args[0]).conjugate(), dtype=torch.complex128, device="cpu")
    return None
