"""What every graph assertion shares: naming its tensors, its message, publishing its verdict.

Each assertion takes tensors in the same forms (tensors, modules, dicts, lists),
names them the same way (the caller's variable, a parameter's qualified name, a
dict key), writes its message in the same shape (header, blank line, lines) and
publishes a :class:`GraphCheckResult` whether it passed or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import torch
from torch import nn
from torch.overrides import resolve_name

from .. import recording
from ..errors import GraphCheckError, InvalidArgument, InvalidArgumentType
from ..messages import PREFIX
from ..raising import Msg, apply_msg
from ..results import GraphCheckResult
from ..validation import check_msg
from .sites import local_names

__all__ = [
    "Msg",
    "apply_msg",
    "callable_name",
    "check_msg",
    "compose",
    "conclude",
    "describe",
    "grad_fn_text",
    "iter_tensors",
    "listed",
    "named_tensors",
    "op_name",
    "short_op",
]

_MAX_NAMES_SHOWN: Final = 6


def compose(header: str, check: str, lines: list[str], msg: Msg) -> str:
    r"""A failure message: ``[gradcheck] header (check)``, a blank line, the lines; then ``msg``.

    Examples:
        >>> compose("Tensors share memory!", "assert_no_shared_memory", ["'a': ..."], None)
        "[gradcheck] Tensors share memory! (assert_no_shared_memory)\n\n'a': ..."
    """
    return apply_msg("\n".join([f"{PREFIX} {header} ({check})", "", *lines]), msg)


def listed(names: Sequence[str], *, quoted: bool = False) -> str:
    """The first few names joined, then how many more: a message stays readable for 1,000.

    Examples:
        >>> listed(["w", "b"]), listed(["w", "b"], quoted=True)
        ('w, b', "'w', 'b'")
        >>> listed([f"p{i}" for i in range(8)])
        'p0, p1, p2, p3, p4, p5 and 2 more'
    """
    shown = ", ".join((repr(n) if quoted else n) for n in names[:_MAX_NAMES_SHOWN])
    more = len(names) - _MAX_NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def conclude(
    check: str,
    subject: str,
    tensors: Sequence[str],
    offending: Sequence[str],
    text: str | None,
    started: float,
) -> None:
    """Publish the assertion's :class:`GraphCheckResult`; raise it when ``text`` says it failed.

    Passed assertions are published too: a report counts every check a test made.

    Examples:
        >>> import time
        >>> conclude("assert_detached", "x", ["x"], (), None, time.perf_counter())
    """
    __tracebackhide__ = True
    result = GraphCheckResult(
        name=f"{check}({subject})",
        check=check,
        passed=text is None,
        tensors=tuple(tensors),
        offending=tuple(offending),
        message=text or "",
        duration_s=time.perf_counter() - started,
    )
    recording.publish(result)
    # Read after publishing: a listener then sees that the assertion acted on its verdict.
    if not result.passed:
        raise GraphCheckError(result.message, result)


def named_tensors(items: tuple[Any, ...], what: str) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs from tensors, modules (their parameters), dicts and sequences.

    Raises:
        InvalidArgument: no tensor given, or a module without parameters.
        InvalidArgumentType: something that is none of these.

    Examples:
        >>> import torch
        >>> w = torch.ones(2)
        >>> [name for name, _ in named_tensors((w, {"bias": torch.zeros(1)}), "check")]
        ['w', 'bias']
    """
    local = local_names()
    out: list[tuple[str, torch.Tensor]] = []

    def visit(value: Any, label: str, named: bool = False) -> None:
        if isinstance(value, torch.Tensor):
            # A dict key is the caller's own name for it; otherwise the caller's variable's.
            out.append((label if named else local.get(id(value), label), value))
        elif isinstance(value, nn.Module):
            params = list(value.named_parameters())
            if not params:
                raise InvalidArgument(f"{label}: {type(value).__name__} has no parameters.")
            out.extend(params)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                visit(item, str(key), named=True)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{label}[{index}]")
        else:
            raise InvalidArgumentType(
                f"{label}={value!r} must be a torch.Tensor, an nn.Module, or a dict, list "
                f"or tuple of them, not {type(value).__name__}."
            )

    if not items:
        raise InvalidArgument(f"{what} needs at least one tensor.")
    for index, item in enumerate(items):
        visit(item, f"argument {index}")
    return out


def describe(t: torch.Tensor) -> str:
    """``float32 tensor of shape (4, 1) on cpu``; a Parameter says so.

    Examples:
        >>> import torch
        >>> describe(torch.nn.Parameter(torch.ones(4, 1)))
        'float32 Parameter of shape (4, 1) on cpu'
    """
    kind = "Parameter" if isinstance(t, nn.Parameter) else "tensor"
    dtype = str(t.dtype).removeprefix("torch.")
    return f"{dtype} {kind} of shape {tuple(t.shape)} on {t.device}"


def grad_fn_text(t: torch.Tensor) -> str:
    """The tensor's ``grad_fn`` as ``<MulBackward0>``, or ``None``.

    Examples:
        >>> import torch
        >>> grad_fn_text(torch.ones(1, requires_grad=True) * 2), grad_fn_text(torch.ones(1))
        ('<MulBackward0>', 'None')
    """
    fn = t.grad_fn
    return "None" if fn is None else f"<{type(fn).__name__}>"


def iter_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``value``, through dicts, lists and tuples.

    Examples:
        >>> import torch
        >>> len(list(iter_tensors(({"a": torch.ones(1)}, [torch.ones(2), 3]))))
        2
    """
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from iter_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_tensors(item)


def op_name(func: Callable[..., Any]) -> str:
    """The qualified name of a torch operation (``torch.Tensor.detach``) or any callable.

    Examples:
        >>> import torch
        >>> op_name(torch.Tensor.detach)
        'torch.Tensor.detach'
    """
    name = resolve_name(func)
    if name is None:
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return str(name) if name else repr(func)


def short_op(name: str) -> str:
    """``torch.Tensor.detach`` -> ``detach``; ``torch.Tensor.data.__get__`` -> ``data.__get__``.

    Examples:
        >>> short_op("torch.Tensor.data.__get__"), short_op("torch.nn.functional.relu")
        ('data.__get__', 'relu')
    """
    for prefix in ("torch.Tensor.", "torch.nn.functional.", "torch."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def callable_name(fn: Any) -> str:
    """A short name for a function or module (a module's repr spans lines).

    Examples:
        >>> import torch
        >>> callable_name(torch.nn.Linear(1, 1)), callable_name(torch.sin)
        ('Linear', 'sin')
    """
    return type(fn).__name__ if isinstance(fn, nn.Module) else short_op(op_name(fn))
