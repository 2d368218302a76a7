"""Feature detection for the torch releases the package supports (see README, "Supported torch").

One job: where torch's APIs differ between releases, ask torch whether it has
the feature (``hasattr``, a signature) and fall back when it does not. No code
here compares ``torch.__version__``: backports, nightlies and vendor builds make
version numbers a poor guide to what a build can do.
"""

from __future__ import annotations

import collections
import inspect
from typing import Any

import torch
from torch.utils import _pytree as pytree

__all__ = [
    "HAS_TREE_PATHS",
    "default_device",
    "flatten_with_paths",
    "flatten_keeping_none",
    "CONJ_OP",
    "conj_of_scalar",
]

# torch.utils._pytree grew key paths (tree_flatten_with_path, keystr) after 2.2.
HAS_TREE_PATHS: bool = hasattr(pytree, "tree_flatten_with_path") and hasattr(pytree, "keystr")
_FLATTEN_HAS_IS_LEAF: bool = "is_leaf" in inspect.signature(pytree.tree_flatten).parameters


def flatten_with_paths(tree: Any) -> tuple[list[tuple[str, Any]], pytree.TreeSpec]:
    """``tree``'s leaves, each with its path as ``keystr`` writes it (``[0]['a'].x``), and spec.

    Without torch's key paths, the paths are read off the ``TreeSpec`` of a
    plain flatten, spelled the way ``keystr`` spells them, so messages and
    report paths do not depend on the torch release.

    Examples:
        >>> flatten_with_paths(({"a": 1}, [2]))[0]
        [("[0]['a']", 1), ('[1][0]', 2)]
    """
    if HAS_TREE_PATHS:
        pairs, spec = pytree.tree_flatten_with_path(tree)
        return [(pytree.keystr(path), leaf) for path, leaf in pairs], spec
    leaves, spec = pytree.tree_flatten(tree)
    paths: list[str] = []
    _spec_paths(spec, "", paths)
    return list(zip(paths, leaves, strict=True)), spec


def _children(spec: Any) -> list[Any]:
    # newer TreeSpecs deprecate the children_specs attribute for a method
    children = spec.children() if hasattr(spec, "children") else spec.children_specs
    return list(children)


def _child_keys(spec: Any, n: int) -> list[str]:
    """How ``keystr`` names each of the ``n`` children of one node of a ``TreeSpec``."""
    context = spec.context
    fields = getattr(context, "_fields", None)
    if isinstance(context, type) and isinstance(fields, tuple) and len(fields) == n:
        return [f".{name}" for name in fields]  # a namedtuple: its context is its class
    if isinstance(spec.type, type) and issubclass(spec.type, dict):
        # dict and OrderedDict keep the keys as the context; defaultdict keeps
        # (default_factory, keys)
        keys = context[1] if issubclass(spec.type, collections.defaultdict) else context
        if isinstance(keys, list) and len(keys) == n:
            return [f"[{key!r}]" for key in keys]
    # tuple, list, deque, torch.return_types and other sequences
    return [f"[{i}]" for i in range(n)]


def _spec_paths(spec: Any, prefix: str, out: list[str]) -> None:
    if spec.is_leaf():
        out.append(prefix)
        return
    children = _children(spec)
    for key, child in zip(_child_keys(spec, len(children)), children, strict=True):
        _spec_paths(child, prefix + key, out)


def flatten_keeping_none(tree: Any) -> list[Any]:
    """``tree``'s leaves with each ``None`` kept as a leaf (a gradient that is not there).

    Releases whose ``tree_flatten`` takes no ``is_leaf`` treat ``None`` as a
    leaf already, so the plain flatten gives the same list there.
    """
    if _FLATTEN_HAS_IS_LEAF:
        return list(pytree.tree_flatten(tree, is_leaf=lambda v: v is None)[0])
    return list(pytree.tree_flatten(tree)[0])


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
