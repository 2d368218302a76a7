"""Tensors ``fn`` captured in a lower precision than the check's, cast for a second try.

Under ``dtype="float64"`` a check evaluates float64 copies of the inputs, but a
target or a constant that ``fn`` (or a ``loss_fn`` it calls) closes over stays
float32. Most ops promote; some backward formulas do not (``huber_loss`` on torch
2.13, ``mse_loss`` on older releases: "Found dtype Float but expected Double").
Where a check fails that way, it runs again with the closure cells and globals
that hold such tensors pointed at float64 copies, pointed back afterwards: the
user's tensors are never touched, and a float32 value is exact in float64, so
the function computes what it did. A tensor reached another way (an attribute,
a container) cannot be swapped; the dtype error then becomes an
:class:`~..errors.InvalidArgument` that says where to look and what to do.
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import torch

from ..errors import GradcheckKitError, InvalidArgument

__all__ = [
    "CapturedTensor",
    "captured_tensors",
    "captures_to_cast",
    "cast_to_float64",
    "raising_named_dtype_errors",
    "explain_dtype_error",
]

R = TypeVar("R")

# How deep the walk goes through functions held in closure cells: fn -> the library's
# module call -> loss_fn -> its helpers.
_MAX_DEPTH: Final = 4
_LOWER: Final = (torch.float32, torch.float16, torch.bfloat16)
# A dtype error, in torch's words, that names a double and a lower-precision float.
_DTYPE_ERROR = re.compile(
    r"Found dtype \w+ but expected \w+|expected scalar type \w+ but found \w+|"
    r"the same dtype|expected dtype \w+ for .* but got dtype \w+|"
    r"type \(\w+\) and \w+ type \(\w+\) should be the same|Expected object of scalar type"
)
_DOUBLE = re.compile(r"\b(double|float64)\b", re.IGNORECASE)
_SINGLE = re.compile(r"\b(float|float32|half|float16|bfloat16)\b", re.IGNORECASE)


@dataclass(frozen=True)
class CapturedTensor:
    """A floating tensor a function reaches by name: a closure cell or a global.

    It lives in ``cell``, or for a global in ``namespace`` (the function's globals).

    Examples:
        >>> def make(y): return lambda p: p - y
        >>> [c.describe() for c in captured_tensors([make(torch.zeros(2))], "fn")]
        ["float32 tensor 'y' (shape (2,), captured by fn)"]
    """

    name: str
    owner: str
    tensor: torch.Tensor
    cell: types.CellType | None = None
    namespace: dict[str, Any] | None = None

    def describe(self) -> str:
        """``float32 tensor 'y' (shape (5, 3), captured by loss_fn)``."""
        kind = "captured by" if self.cell is not None else "a global read by"
        dtype = str(self.tensor.dtype).removeprefix("torch.")
        shape = tuple(self.tensor.shape)
        return f"{dtype} tensor {self.name!r} (shape {shape}, {kind} {self.owner})"

    def point_at(self, value: torch.Tensor) -> None:
        """Make the name refer to ``value`` (the cell's contents or the global)."""
        if self.cell is not None:
            self.cell.cell_contents = value
        elif self.namespace is not None:
            self.namespace[self.name] = value


def captured_tensors(fns: list[Any], owner: str) -> list[CapturedTensor]:
    """Floating tensors in lower precision than float64 that ``fns`` reach by name.

    Walks closure cells (into functions held there, up to a few levels, naming
    each by the variable that holds it), the function of a ``functools.partial``
    and of a bound method, and the globals a function's code reads.
    """
    found: list[CapturedTensor] = []
    seen: set[int] = set()
    for fn in fns:
        _walk(fn, owner, 0, found, seen)
    return found


def _walk(fn: Any, owner: str, depth: int, found: list[CapturedTensor], seen: set[int]) -> None:
    if depth > _MAX_DEPTH or id(fn) in seen:
        return
    seen.add(id(fn))
    if isinstance(fn, functools.partial):
        _walk(fn.func, owner, depth + 1, found, seen)
        return
    fn = getattr(fn, "__func__", fn)  # a bound method's function
    code = getattr(fn, "__code__", None)
    if not isinstance(fn, types.FunctionType) or code is None:
        return
    if str(getattr(fn, "__module__", "") or "").startswith("torch"):
        return
    for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell (a name bound later)
            continue
        if isinstance(value, torch.Tensor) and value.dtype in _LOWER:
            found.append(CapturedTensor(name, owner, value, cell=cell))
        elif callable(value):
            _walk(value, name, depth + 1, found, seen)
    for name in code.co_names:
        value = fn.__globals__.get(name)
        if isinstance(value, torch.Tensor) and value.dtype in _LOWER:
            found.append(CapturedTensor(name, owner, value, namespace=fn.__globals__))


def captures_to_cast(
    exc: RuntimeError, dtype: str, fns: list[Any], owner: str
) -> list[CapturedTensor]:
    """After ``exc`` from a check: the tensors to cast for a second try.

    A check runs ``fn`` as it is first: a function that mixes dtypes on purpose
    (``x.float() @ w``) keeps working. Only a float64-vs-float32 error under
    ``dtype="float64"`` with lower-precision tensors to cast gets the second try.

    Raises:
        RuntimeError: ``exc`` itself, where it is not such an error.
        InvalidArgument: such an error, but fn reads no such tensor by name.
    """
    error = explain_dtype_error(exc, dtype)
    if error is None:
        raise exc
    found = captured_tensors(fns, owner)
    if not found:
        raise error from exc
    return found


@contextmanager
def cast_to_float64(found: list[CapturedTensor], notes: list[str]) -> Iterator[None]:
    """The names of ``found`` point at float64 copies meanwhile, with a note each.

    Every name is pointed back on exit, also when the block raises; the user's
    tensors themselves are not touched.
    """
    swapped: list[CapturedTensor] = []
    try:
        for c in found:
            t = c.tensor
            c.point_at(t.detach().to(torch.float64).requires_grad_(t.requires_grad))
            swapped.append(c)
            notes.append(f"captured {c.describe()} was used as float64 during the check")
        yield
    finally:
        for c in reversed(swapped):
            c.point_at(c.tensor)


def raising_named_dtype_errors(call: Callable[[], R], dtype: str) -> R:
    """``call()``, its dtype error under ``dtype="float64"`` re-raised as InvalidArgument.

    Raises:
        InvalidArgument: fn mixed float64 with a lower precision it reached another
            way than by name; the message says how to find it and the two fixes.
    """
    try:
        return call()
    except RuntimeError as exc:
        error = explain_dtype_error(exc, dtype)
        if error is None:
            raise
        raise error from exc


def explain_dtype_error(exc: BaseException, dtype: str) -> InvalidArgument | None:
    """An InvalidArgument for a float64-vs-float32 error under ``dtype="float64"``, else None.

    Examples:
        >>> err = explain_dtype_error(RuntimeError("Found dtype Float but expected Double"),
        ...                           "float64")
        >>> "dtype='native'" in str(err)
        True
    """
    text = str(exc)
    mixed = _DTYPE_ERROR.search(text) and _DOUBLE.search(text) and _SINGLE.search(text)
    if dtype != "float64" or isinstance(exc, GradcheckKitError) or not mixed:
        return None
    first = text.strip().splitlines()[0]
    return InvalidArgument(
        f"{type(exc).__name__}: {first} (raised while checking with dtype='float64'). The "
        f"check evaluates float64 copies of the inputs (and in check_module_gradients of the "
        f"module's parameters and buffers), and casts the float32 tensors fn or loss_fn reads "
        f"by name (closure variables, globals); fn still mixes float64 with a lower precision "
        f"it reaches another way: a module it calls that is not the checked one (check that "
        f"module with check_module_gradients), a tensor attribute that is not a parameter or "
        f"buffer, a container, a default argument. Pass dtype='native' to check in the "
        f"tensors' own dtype, or create that tensor in the inputs' dtype."
    )
