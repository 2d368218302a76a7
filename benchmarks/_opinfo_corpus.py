"""Gradient-check cases built from PyTorch's own OpInfo database (``op_db``).

Each case is one op variant with the first sample PyTorch generates for it whose
differentiable inputs all hold elements (many ops list an empty edge case first),
wrapped the way ``TestGradients._check_helper`` in
``torch/testing/_internal/common_utils.py`` wraps it for ``test_fn_grad``:
``fn(*diff_tensors)`` takes exactly the tensors that require grad (found in
``sample.input``, ``sample.args`` and ``sample.kwargs``, also inside lists),
puts them back into the call, runs ``op.gradcheck_wrapper(op.get_op(), ...)``
and applies ``sample.output_process_fn_grad``.

Used by ``benchmarks/opinfo_vs_torch.py``; not a test module.
"""

from __future__ import annotations

import fnmatch
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "GRAD_TEST_CLASS",
    "GRAD_TEST_NAME",
    "OpCase",
    "OpEntry",
    "build_case",
    "iter_entries",
    "load_op_db",
    "select_ops",
]

# Where torch's suite runs the gradcheck we imitate; its DecorateInfo skips and
# expected failures for this test explain most ops that torch itself fails.
GRAD_TEST_CLASS = "TestBwdGradients"
GRAD_TEST_NAME = "test_fn_grad"

DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}
# How many samples of an op to scan for one without empty differentiable inputs.
MAX_SAMPLES_SCANNED = 20


@dataclass(frozen=True)
class OpCase:
    """One op variant at one dtype, ready for a gradient checker.

    ``fn(*inputs)`` recomputes the op's (processed) output from the
    differentiable inputs; ``inputs`` are the sample's own tensors, so a
    checker must not modify them in place.
    """

    name: str
    dtype: str
    fn: Callable[..., Any]
    inputs: tuple[torch.Tensor, ...]

    @property
    def shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self.inputs]

    @property
    def numel(self) -> int:
        return sum(t.numel() for t in self.inputs)


@dataclass
class OpEntry:
    """An OpInfo variant with its cases per dtype, or the reason it has none."""

    name: str
    op: Any
    supports_forward_ad: bool
    torch_suite_marks: list[str]
    cases: dict[str, OpCase] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def load_op_db() -> list[Any]:
    """Import torch's OpInfo database (needs the ``expecttest`` package).

    Returns:
        The list of OpInfo objects, in torch's order.

    Raises:
        RuntimeError: when torch's testing internals cannot be imported.
    """
    try:
        from torch.testing._internal.common_methods_invocations import op_db
    except ImportError as exc:  # expecttest missing, or a torch without test internals
        raise RuntimeError(
            f"cannot import torch's op_db ({exc}); install 'expecttest' for this torch"
        ) from exc
    return list(op_db)


def _matches(name: str, filters: Sequence[str]) -> bool:
    for pattern in filters:
        if any(ch in pattern for ch in "*?["):
            if fnmatch.fnmatchcase(name, pattern):
                return True
        elif pattern in name:
            return True
    return False


def select_ops(
    op_db: Sequence[Any], *, filters: Sequence[str] = (), limit: int | None = None
) -> list[Any]:
    """The ops that support reverse-mode autograd, filtered by name.

    Args:
        op_db: torch's OpInfo list.
        filters: substrings (or shell patterns with ``*?[``) of ``op.full_name``;
            an op is kept when any filter matches. Empty keeps every op.
        limit: keep at most this many ops (after filtering).

    Returns:
        The selected OpInfos, in ``op_db`` order.
    """
    chosen = [op for op in op_db if op.supports_autograd]
    if filters:
        chosen = [op for op in chosen if _matches(op.full_name, filters)]
    if limit is not None:
        chosen = chosen[:limit]
    return chosen


def _is_tensor_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value)


def _collect(value: Any, out: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            out.append(value)
    elif _is_tensor_list(value):
        for item in value:
            _collect(item, out)


def _rebuild(value: Any, inputs: Sequence[torch.Tensor], pos: int) -> tuple[Any, int]:
    """``value`` with its grad-requiring tensors replaced by ``inputs[pos:]``, in order."""
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            return inputs[pos], pos + 1
        return value, pos
    if _is_tensor_list(value):
        items = []
        for item in value:
            new, pos = _rebuild(item, inputs, pos)
            items.append(new)
        return (list(items) if isinstance(value, list) else tuple(items)), pos
    return value, pos


def _make_fn(op: Any, sample: Any, n_inputs: int) -> Callable[..., Any]:
    variant = op.get_op()

    def fn(*inputs: torch.Tensor) -> Any:
        if len(inputs) != n_inputs:
            raise TypeError(f"expected {n_inputs} tensors, got {len(inputs)}")
        inp, pos = _rebuild(sample.input, inputs, 0)
        args = []
        for arg in sample.args:
            new, pos = _rebuild(arg, inputs, pos)
            args.append(new)
        kwargs = {}
        for key, val in sample.kwargs.items():
            kwargs[key], pos = _rebuild(val, inputs, pos)
        output = op.gradcheck_wrapper(variant, inp, *args, **kwargs)
        if sample.output_process_fn_grad is not None:
            return sample.output_process_fn_grad(output)
        return output

    fn.__name__ = op.full_name.replace(".", "_")
    return fn


def _seed_for(name: str) -> int:
    # Stable per op, so that --ops and --limit do not change an op's inputs; the
    # same for both dtypes, so that their samples come from the same draws.
    return zlib.crc32(name.encode())


def _differentiable_tensors(sample: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _collect(sample.input, found)
    for arg in sample.args:
        _collect(arg, found)
    for val in sample.kwargs.values():
        _collect(val, found)
    return found


def _first_non_empty_sample(
    op: Any, dtype: torch.dtype, look_at: int = MAX_SAMPLES_SCANNED
) -> tuple[Any, list[torch.Tensor]] | None:
    # Many ops list an empty-tensor edge case first; a check of nothing says nothing,
    # so both checkers get the first sample whose differentiable inputs all hold elements.
    first: tuple[Any, list[torch.Tensor]] | None = None
    for k, sample in enumerate(op.sample_inputs("cpu", dtype, requires_grad=True)):
        found = _differentiable_tensors(sample)
        if first is None:
            first = (sample, found)
        if found and all(t.numel() > 0 for t in found):
            return sample, found
        if k + 1 >= look_at:
            break
    return first


def build_case(op: Any, dtype: str, *, first_sample: bool = False) -> OpCase | str:
    """The first sample of ``op`` at ``dtype`` as a case, or why there is none.

    Args:
        op: an OpInfo.
        dtype: ``"float64"`` or ``"float32"``.
        first_sample: take the very first sample, empty tensors included (the edge
            cases parametrised suites meet), instead of the first non-empty one.

    Returns:
        An :class:`OpCase`, or a string giving the reason to skip.
    """
    torch_dtype = DTYPES[dtype]
    if not op.supports_dtype(torch_dtype, "cpu"):
        return f"{dtype} not in supported_dtypes('cpu')"
    if torch_dtype not in op.supported_backward_dtypes("cpu"):
        return f"{dtype} not in supported_backward_dtypes('cpu')"
    torch.manual_seed(_seed_for(op.full_name))
    try:
        picked = _first_non_empty_sample(
            op, torch_dtype, look_at=1 if first_sample else MAX_SAMPLES_SCANNED
        )
    except Exception as exc:  # any failure of torch's sample code is a skip
        return f"sample_inputs raised {type(exc).__name__}: {_first_line(str(exc))}"
    if picked is None:
        return "no sample"
    sample, found = picked
    if not found:
        return "no input requires grad"
    return OpCase(
        name=op.full_name, dtype=dtype, fn=_make_fn(op, sample, len(found)), inputs=tuple(found)
    )


def _suite_marks(op: Any) -> list[str]:
    """Skips and expected failures that torch's suite puts on this very test (CPU, float64)."""
    from torch.testing._internal.opinfo.core import DecorateInfo

    marks = []
    for info in op.decorators:
        if not isinstance(info, DecorateInfo):
            continue
        targeted = info.test_name == GRAD_TEST_NAME or (
            info.test_name is None and info.cls_name == GRAD_TEST_CLASS
        )
        if not targeted or not info.is_active(
            GRAD_TEST_CLASS, GRAD_TEST_NAME, "cpu", torch.float64, {}
        ):
            continue
        for deco in info.decorators:
            label = str(getattr(deco, "__name__", None) or type(deco).__name__)
            # unittest.skip(reason) returns a closure named "decorator"
            marks.append("skip" if label == "decorator" else label)
    return marks


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def iter_entries(
    ops: Sequence[Any], dtypes: Sequence[str], *, first_sample: bool = False
) -> Iterator[OpEntry]:
    """Build the cases of each op lazily, one op at a time (keeps memory flat).

    Args:
        ops: OpInfos from :func:`select_ops`.
        dtypes: which of ``"float64"``, ``"float32"`` to build.
        first_sample: as for :func:`build_case`.

    Yields:
        One :class:`OpEntry` per op.
    """
    for op in ops:
        entry = OpEntry(
            name=op.full_name,
            op=op,
            supports_forward_ad=bool(op.supports_forward_ad),
            torch_suite_marks=_suite_marks(op),
        )
        for dtype in dtypes:
            case = build_case(op, dtype, first_sample=first_sample)
            if isinstance(case, str):
                entry.skipped[dtype] = case
            else:
                entry.cases[dtype] = case
        yield entry
