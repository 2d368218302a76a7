"""What the device benchmarks and the parity checks share: devices, inputs, copies.

* parsing the ``devices`` argument and :func:`device_skip_reason` (a device not
  present is a skip, with its reason, never a failure);
* :func:`prepare`: one device's copy of the module (``copy.deepcopy`` then
  ``.to(device)``; the caller's module is never moved) and of the inputs;
* the checks of the arguments both take, and the default loss (the outputs' sum).

Both :mod:`.benchmark` and :mod:`.parity` need these; neither imports the other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgument, InvalidArgumentType

__all__ = [
    "Prepared",
    "check_callables",
    "default_loss",
    "device_skip_reason",
    "name_of",
    "named_tensors",
    "parse_device",
    "parse_devices",
    "prepare",
    "synchronize_device",
]


# ------------------------------------------------------------------ devices


def parse_device(device: object, name: str = "devices") -> torch.device:
    """``device`` as a ``torch.device``; ``name`` is the argument the message names."""
    if isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        try:
            parsed = torch.device(device)
        except RuntimeError as exc:
            raise InvalidArgument(
                f"{name} contains {device!r}, which is not a torch device "
                f"(expected 'cpu', 'cuda', 'cuda:1', 'mps', ...): {exc}"
            ) from None
    else:
        raise InvalidArgumentType(
            f"{name} contains {device!r}: a device must be a str or torch.device, "
            f"not {type(device).__name__}."
        )
    if parsed.type == "meta":
        raise InvalidArgument(
            f"{name} contains {device!r}: the meta device holds no data, so it can be "
            "neither timed nor compared."
        )
    return parsed


def parse_devices(devices: object, *, min_count: int = 1) -> tuple[torch.device, ...]:
    """The ``devices`` argument as ``torch.device`` s, at least ``min_count`` of them."""
    if isinstance(devices, (str, torch.device)):
        raise InvalidArgumentType(
            f"devices={devices!r} must be a sequence of devices; "
            f"did you mean devices=({str(devices)!r},)?"
        )
    if not isinstance(devices, Sequence):
        raise InvalidArgumentType(
            f"devices={devices!r} must be a sequence of devices, not {type(devices).__name__}."
        )
    parsed = tuple(parse_device(d) for d in devices)
    if len(parsed) < min_count:
        raise InvalidArgument(f"devices={devices!r} must name at least {min_count} devices.")
    return parsed


def device_skip_reason(device: str | torch.device) -> str | None:
    """Why ``device`` cannot be used in this process, or ``None`` when it can.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device`` ...

    Raises:
        InvalidArgument: ``device`` is not a device string torch understands.

    Examples:
        >>> device_skip_reason("cpu") is None
        True
        >>> reason = device_skip_reason("cuda")
        >>> reason is None or reason.startswith("CUDA device not available")
        True
    """
    dev = parse_device(device, "device")
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = (
                "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            )
            return (
                f"CUDA device not available: torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, {built})"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"CUDA device not available: {str(dev)!r} requested, {count} visible"
        return None
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            return "MPS device not available: torch.backends.mps.is_available() is False"
        return None
    backend = getattr(torch, dev.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and bool(is_available()):
        return None
    return f"{dev.type.upper()} device not available in this torch build"


def synchronize_device(dev: torch.device) -> None:
    """Wait for the work queued on ``dev``: a timer read before that would time the queueing."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


# ------------------------------------------------------------------ inputs and steps


def _to_device(obj: Any, dev: torch.device) -> Any:
    """Copy the tensors nested in ``obj`` to ``dev`` as fresh leaves (requires_grad kept)."""
    if isinstance(obj, torch.Tensor):
        moved = obj.detach().to(dev, copy=True)
        return moved.requires_grad_(obj.requires_grad) if moved.is_floating_point() else moved
    if isinstance(obj, tuple):
        return tuple(_to_device(o, dev) for o in obj)
    if isinstance(obj, list):
        return [_to_device(o, dev) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, dev) for k, v in obj.items()}
    return obj


def _as_args(inputs: Any) -> tuple[Any, ...]:
    return inputs if isinstance(inputs, tuple) else (inputs,)


def named_tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors nested in ``obj`` (tuples, lists, dicts), named from ``prefix``: ``input[0]``."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, (tuple, list)):
        for i, o in enumerate(obj):
            yield from named_tensors(o, f"{prefix}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from named_tensors(v, f"{prefix}[{k!r}]")


def default_loss(output: Any) -> torch.Tensor:
    """The sum of the outputs that require grad: what backward starts from without a ``loss_fn``."""
    # a scalar is its own sum: no extra op in a timed step (a loss already reduced)
    terms = [
        t if t.ndim == 0 else t.sum() for _, t in named_tensors(output, "output") if t.requires_grad
    ]
    if not terms:
        raise InvalidArgument(
            "the output has no tensor that requires grad, so there is nothing to "
            "differentiate; pass backward=False or inputs/parameters that require grad."
        )
    return terms[0] if len(terms) == 1 else torch.stack([t.float() for t in terms]).sum()


def _short(value: object) -> str:
    """A one-line repr: tensors by shape and dtype, long reprs cut."""
    if isinstance(value, torch.Tensor):
        return f"<tensor of shape {tuple(value.shape)}, {value.dtype}>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_callables(fn_or_module: object, make_inputs: object, loss_fn: object) -> None:
    """Raise InvalidArgumentType unless the arguments every device check takes are callable."""
    if not callable(fn_or_module):
        raise InvalidArgumentType(
            f"fn_or_module={_short(fn_or_module)} must be an nn.Module or a callable, "
            f"not {type(fn_or_module).__name__}."
        )
    if not callable(make_inputs):
        raise InvalidArgumentType(
            f"make_inputs={_short(make_inputs)} must be a callable returning the inputs "
            f"(a tensor or a tuple of them), not {type(make_inputs).__name__}; "
            "wrap fixed inputs as make_inputs=lambda: (x,)."
        )
    if loss_fn is not None and not callable(loss_fn):
        raise InvalidArgumentType(f"loss_fn={loss_fn!r} must be callable or None.")


@dataclass
class Prepared:
    """One device's copy of the callable, its inputs and its parameters."""

    device: torch.device
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    params: list[tuple[str, nn.Parameter]]
    optimizer: torch.optim.Optimizer | None
    module: nn.Module | None = None


def prepare(
    fn_or_module: Callable[..., Any],
    inputs: Any,
    dev: torch.device,
    optimizer: Callable[[Any], torch.optim.Optimizer] | None,
) -> Prepared:
    """``dev``'s copy of ``fn_or_module`` (a module deep-copied, never moved) and of ``inputs``."""
    if isinstance(fn_or_module, nn.Module):
        module = copy.deepcopy(fn_or_module).to(dev)
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        fn: Callable[..., Any] = module
    else:
        fn, params = fn_or_module, []
    opt = optimizer([p for _, p in params]) if optimizer is not None and params else None
    module_copy = fn if isinstance(fn, nn.Module) else None
    return Prepared(dev, fn, _as_args(_to_device(inputs, dev)), params, opt, module_copy)


def name_of(fn_or_module: object, name: str | None) -> str:
    """The label of a result: ``name``, else the module's class or the function's name."""
    if name is not None:
        return name
    if isinstance(fn_or_module, nn.Module):
        return type(fn_or_module).__name__
    return str(getattr(fn_or_module, "__qualname__", None) or type(fn_or_module).__name__)
