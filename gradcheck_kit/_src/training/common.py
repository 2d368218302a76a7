"""Argument checks and parameter naming shared by the watcher and the training assertions.

Every check here raises before anything is hooked, run or changed.
"""

from __future__ import annotations

import ctypes
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgument, InvalidArgumentType

_SAMPLE = 64  # elements nonzero() looks at before it scans a whole gradient

__all__ = [
    "as_optimizers",
    "check_model",
    "check_step_fn",
    "ignore_matcher",
    "nonzero",
    "optimizer_labels",
    "select_parameters",
]


def check_model(model: object, name: str = "model") -> nn.Module:
    """Return ``model`` if it is an ``nn.Module`` with at least one parameter."""
    if not isinstance(model, nn.Module):
        raise InvalidArgumentType(
            f"{name}={_short_repr(model)} must be a torch.nn.Module, not {type(model).__name__}."
        )
    if next(iter(model.parameters()), None) is None:
        raise InvalidArgument(
            f"{name}: {type(model).__name__} has no parameters, so there is nothing to train "
            "or check. Pass the module whose parameters the optimizer updates."
        )
    return model


def as_optimizers(optimizer: object, name: str = "optimizer") -> tuple[torch.optim.Optimizer, ...]:
    """One optimizer or a non-empty list/tuple of them, as a tuple without repeats."""
    items = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    if not items:
        raise InvalidArgument(f"{name}=[] must hold at least one torch.optim.Optimizer.")
    out: list[torch.optim.Optimizer] = []
    for index, item in enumerate(items):
        if not isinstance(item, torch.optim.Optimizer):
            where = (
                name
                if len(items) == 1 and not isinstance(optimizer, (list, tuple))
                else (f"{name}[{index}]")
            )
            hint = ""
            if isinstance(item, torch.optim.lr_scheduler.LRScheduler):
                hint = " That is a learning-rate scheduler: pass the optimizer it drives."
            elif isinstance(getattr(item, "optimizer", None), torch.optim.Optimizer):
                hint = f" It wraps one: pass {where}.optimizer."
            raise InvalidArgumentType(
                f"{where}={_short_repr(item)} must be a torch.optim.Optimizer, "
                f"not {type(item).__name__}.{hint}"
            )
        if all(item is not seen for seen in out):
            out.append(item)
    return tuple(out)


def check_step_fn(step_fn: object, name: str = "step_fn") -> Callable[..., Any]:
    """Return ``step_fn`` if it is callable."""
    if not callable(step_fn):
        raise InvalidArgumentType(
            f"{name}={_short_repr(step_fn)} must be a callable that runs one training step, "
            f"not {type(step_fn).__name__}."
        )
    return step_fn


def ignore_matcher(ignore: object, name: str = "ignore") -> Callable[[str], bool]:
    """A predicate for ``ignore``: shell patterns over qualified parameter names."""
    patterns = [ignore] if isinstance(ignore, str) else ignore
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise InvalidArgumentType(
            f"{name}={ignore!r} must be a parameter name pattern or a list of them "
            "(e.g. ['head.*', 'embed.weight'])."
        )
    if not patterns:
        return _nothing
    compiled = tuple(patterns)
    return lambda qualname: any(fnmatch.fnmatchcase(qualname, p) for p in compiled)


def _nothing(qualname: str) -> bool:
    return False


def select_parameters(
    model: nn.Module,
    params: object,
    *,
    default: Callable[[nn.Parameter], bool],
    default_what: str,
    name: str = "params",
) -> list[tuple[str, nn.Parameter]]:
    """The (qualified name, parameter) pairs ``params`` (name patterns) selects, or the default."""
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if default(p)]
        if not chosen:
            raise InvalidArgument(
                f"{type(model).__name__} has no {default_what} parameter; name the ones to "
                f"check with {name}=[...] (qualified names or patterns such as 'fc1.*')."
            )
        return chosen
    patterns = [params] if isinstance(params, str) else params
    if (
        not isinstance(patterns, (list, tuple))
        or not patterns
        or not all(isinstance(p, str) for p in patterns)
    ):
        raise InvalidArgumentType(
            f"{name}={params!r} must be a qualified parameter name or pattern, or a non-empty "
            "list of them (e.g. 'backbone.*')."
        )
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n, _ in named)]
    if unmatched:
        available = ", ".join(repr(n) for n, _ in named[:12])
        more = f" and {len(named) - 12} more" if len(named) > 12 else ""
        raise InvalidArgument(
            f"{name}: {', '.join(repr(p) for p in unmatched)} match no parameter of "
            f"{type(model).__name__}; its parameters are {available}{more}."
        )
    return [(n, p) for n, p in named if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]


def optimizer_labels(optimizers: Sequence[torch.optim.Optimizer]) -> list[str]:
    """``["SGD"]`` for one optimizer, ``["SGD #0", "Adam #1"]`` for several."""
    if len(optimizers) == 1:
        return [type(optimizers[0]).__name__]
    return [f"{type(o).__name__} #{i}" for i, o in enumerate(optimizers)]


# size -> (a ctypes array type of that many bytes, that many zero bytes)
_BYTE_ARRAYS: dict[int, tuple[Any, bytes]] = {}


def _all_zero_bytes(address: int, size: int) -> bool:
    """Whether the ``size`` bytes of memory at ``address`` are all zero.

    A ctypes array laid over the memory, not ``ctypes.string_at``: that is a
    foreign-function call, and called once per optimizer step its code is never
    in the CPU's caches (about twice as slow, measured in a training loop).
    """
    found = _BYTE_ARRAYS.get(size)
    if found is None:
        found = _BYTE_ARRAYS[size] = (ctypes.c_char * size, bytes(size))
    array, zeros = found
    return bool(array.from_address(address).raw == zeros)


def nonzero(grad: torch.Tensor) -> bool:
    """Whether ``grad`` holds any nonzero element (sparse or odd layouts count as nonzero).

    Looks at the first elements first: a gradient that is not zero almost
    always shows it there, and a full scan of a large one costs as much as a
    clipping pass. On the CPU their bytes are read straight from memory (no
    tensor operation, so no dispatcher round trip at every optimizer step). The
    question is "was it zeroed?", and ``zero_()`` writes ``+0.0``, all zero bits:
    a ``-0.0`` among those first elements counts as nonzero.
    """
    try:
        # is_cpu, not device.type: a torch.device is a new object at every call
        if grad.is_cpu and grad.numel() > 0 and grad.is_contiguous():
            size = min(grad.numel(), _SAMPLE) * grad.element_size()
            if not _all_zero_bytes(grad.data_ptr(), size):
                return True
        elif (
            grad.numel() > _SAMPLE and grad.is_contiguous() and bool(grad.view(-1)[:_SAMPLE].any())
        ):
            return True
        return bool(grad.any())
    except (RuntimeError, NotImplementedError, TypeError):
        return True


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
