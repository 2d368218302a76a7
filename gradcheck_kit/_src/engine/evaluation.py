"""``fn`` as a map from the checked tensors to its outputs, evaluated one point or many at once.

Every batched evaluation (``torch.func.vmap`` over perturbed points) has a loop
twin, used automatically when ``fn`` cannot be vmapped (data-dependent control
flow, ``.item()``, in-place ops, custom Functions without a vmap rule). A
batched evaluation also carries the unperturbed point and is compared with the
plain call, so a function that vmaps *differently* falls back too. In the loop
every point is known, so what goes wrong there is reported with its place: an
output whose shape changed (:class:`OutputChanged`) or an exception at a
perturbed input (:class:`~gradcheck_kit.errors.PerturbedEvaluationError`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InvalidArgument, PerturbedEvaluationError
from .trees import InputTree, flatten_outputs

__all__ = [
    "Evaluator",
    "OutputChanged",
    "flat_cat",
    "evaluate_one",
    "evaluate_rows",
    "VmapCheck",
    "first_line",
    "FALLBACK_NOTE_PREFIX",
    "fallback_note",
    "evaluation_notes",
]


class OutputChanged(Exception):
    """Internal: an evaluation returned outputs of another structure or shape than the first call.

    ``where`` says at which point, once the caller knows it.
    """

    def __init__(self, output: str, before: str, after: str) -> None:
        super().__init__(f"{output}: {before} at the point, {after} nearby")
        self.output = output
        self.before = before
        self.after = after
        self.where: str | None = None


class _VectorizationFailed(Exception):
    """Internal: the batched path cannot be used for this function."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:limit]}" if text else type(exc).__name__


def _plain(t: torch.Tensor) -> torch.Tensor:
    # detach() is an operator call of its own: skip it where there is no history to drop
    return t.detach() if t.requires_grad or t.grad_fn is not None else t


def flat_cat(tensors: Sequence[torch.Tensor], batch: int | None = None) -> torch.Tensor:
    """Concatenate tensors flattened to float64 (keeping a leading batch dim when given)."""
    if batch is None:
        if len(tensors) == 1:
            return _plain(tensors[0]).reshape(-1).to(torch.float64)
        parts = [_plain(t).reshape(-1).to(torch.float64) for t in tensors]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    parts = [_plain(t).reshape(batch, -1).to(torch.float64) for t in tensors]
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts, dim=1) if parts else torch.zeros(batch, 0, dtype=torch.float64)


@dataclass
class Evaluator:
    """``fn`` seen as a map from the checked tensors to its compared output tensors.

    ``all_paths``/``all_shapes`` describe every floating output of the first
    call; ``keep`` picks the compared ones (None: all). Each evaluation is
    checked against them.
    """

    fn: Callable[..., Any]
    tree: InputTree
    base: list[Any]
    prepare: Callable[[], None]
    all_paths: list[str] = field(default_factory=list)
    all_shapes: list[tuple[int, ...]] = field(default_factory=list)
    keep: list[int] | None = None
    calls: int = 0
    vectorized: bool = True
    fallback_reason: str | None = None
    inner_autograd: bool = False

    @property
    def single(self) -> bool:
        """Whether ``fn`` returned one real tensor at the first call (and it is compared)."""
        return self.all_paths == ["output"] and self.keep is None

    @property
    def out_paths(self) -> list[str]:
        """Paths of the compared outputs."""
        return self.all_paths if self.keep is None else [self.all_paths[k] for k in self.keep]

    @property
    def out_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the compared outputs."""
        return self.all_shapes if self.keep is None else [self.all_shapes[k] for k in self.keep]

    def raw(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Evaluate without touching the RNG (for use inside vmap).

        Evaluations run without grad (no graph to keep), except for a ``fn`` that
        uses autograd itself (``torch.autograd.grad`` or ``backward()`` inside: a
        gradient penalty, an inner optimisation step): the first evaluation that
        fails for want of grad switches every later one to grad mode, on leaf
        copies of the points that require grad, as ``fn`` saw them at the first call.
        """
        if self.inner_autograd:
            out = self._call_with_grad(xs)
        else:
            try:
                out = self.tree.call(self.fn, self.base, xs)
            except RuntimeError as exc:
                if torch.is_grad_enabled() or not _wants_autograd(exc):
                    raise
                self.inner_autograd = True
                out = self._call_with_grad(xs)
        if (
            self.single
            and isinstance(out, torch.Tensor)
            and out.shape == self.all_shapes[0]
            and out.is_floating_point()
        ):
            return [out]  # the common case: one real tensor, as at the first call
        leaves, _ = flatten_outputs(out)
        if self.all_paths:
            if len(leaves) != len(self.all_paths) or any(
                leaf.path != path for leaf, path in zip(leaves, self.all_paths, strict=False)
            ):
                raise OutputChanged(
                    "the outputs",
                    f"{self.all_paths}",
                    f"{[leaf.path for leaf in leaves]}",
                )
            for leaf, shape in zip(leaves, self.all_shapes, strict=True):
                if tuple(leaf.tensor.shape) != shape:
                    raise OutputChanged(
                        leaf.path, f"shape {shape}", f"shape {tuple(leaf.tensor.shape)}"
                    )
        tensors = [leaf.tensor for leaf in leaves]
        return tensors if self.keep is None else [tensors[k] for k in self.keep]

    def _call_with_grad(self, xs: Sequence[torch.Tensor]) -> Any:
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(x.is_floating_point()) for x in xs]
            return self.tree.call(self.fn, self.base, leaves)

    def __call__(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.prepare()
        self.calls += 1
        return self.raw(xs)

    def disable_vectorization(self, exc: BaseException | str) -> None:
        """Use the loop from now on, remembering why (for the result's notes)."""
        if self.vectorized:
            self.vectorized = False
            text = first_line(exc) if isinstance(exc, BaseException) else exc
            self.fallback_reason = text.split(". ")[0]


# What torch says when autograd is asked for a gradient of a result built without grad.
_NEEDS_GRAD_MESSAGES: tuple[str, ...] = (
    "does not require grad and does not have a grad_fn",
    "One of the differentiated Tensors does not require grad",
)


def _wants_autograd(exc: RuntimeError) -> bool:
    """Whether ``fn`` failed because it ran autograd on a point evaluated without grad."""
    return any(text in str(exc) for text in _NEEDS_GRAD_MESSAGES)


# How every vmap fallback note begins, so that a composite check can recognise and reword it.
FALLBACK_NOTE_PREFIX = "vmap "


def fallback_note(reason: str) -> str:
    """The result's note when evaluations ran one by one: information, not an error.

    A custom ``autograd.Function`` without ``setup_context`` cannot run under
    vmap; that is common and harmless (only slower), so the note says so
    without repeating functorch's ``RuntimeError`` text.

    Examples:
        >>> fallback_note("RuntimeError: ... it must override the setup_context staticmethod")
        'vmap is not supported by this Function (it has no setup_context); batched checks ran one by one instead'
    """  # noqa: E501 - a doctest's expected output is one line
    if "setup_context" in reason:
        return (
            "vmap is not supported by this Function (it has no setup_context); "
            "batched checks ran one by one instead"
        )
    # functorch's messages start with the exception's class name: not an error here
    head, _, rest = reason.partition(": ")
    text = (
        rest if rest and head.isidentifier() and head.endswith(("Error", "Exception")) else reason
    )
    return f"vmap could not batch the evaluations, so they ran one by one instead ({text})"


def evaluation_notes(ev: Evaluator) -> list[str]:
    """What the result should say about how ``fn`` was evaluated (vmap fallback, grad mode)."""
    notes = [fallback_note(ev.fallback_reason)] if ev.fallback_reason else []
    if ev.inner_autograd:
        notes.append(
            "fn uses autograd inside (torch.autograd.grad or backward()), so every evaluation "
            "ran with grad enabled on inputs that require grad"
        )
    return notes


def _same_output(a: torch.Tensor, b: torch.Tensor, unit_roundoff: float) -> bool:
    """Whether vmap computed the same function as the plain call, at the same point.

    Batched kernels sum in another order (a matrix product for a matrix-vector
    one), so an entry that cancels can differ far beyond its own roundoff; that
    is harmless, as every finite difference of a batch comes from the batch.
    What must not differ is the function: sqrt(u) of the entry, or of the
    outputs' scale, is far above reordered sums and far below another branch.
    """
    if torch.equal(a, b):
        return True
    root_u = unit_roundoff**0.5
    both_nan = torch.isnan(a) & torch.isnan(b)
    larger = torch.maximum(a.abs(), b.abs())
    # the scale stays a tensor: one read of the verdict instead of two
    scale = torch.nan_to_num(larger, posinf=0.0).max()
    ok = (a - b).abs() <= root_u * (larger + 1e-3 * scale) + 1e-300
    return bool((ok | both_nan).all())


# The reason a batch is not trusted when it computed another function than the plain call.
_VMAP_DIFFERS = "vmapped evaluation differs from the plain call at the same point"


@dataclass
class VmapCheck:
    """A batch's row at the unperturbed point against the plain call, judged later.

    ``equal`` (a device bool: bit for bit the same) is read with a check's other
    figures instead of on its own; :meth:`confirm` then decides whether the batch
    can be used, which costs a read of its own only where the two differ in bits.
    """

    ev: Evaluator
    row: torch.Tensor
    reference: torch.Tensor
    unit_roundoff: float
    equal: torch.Tensor

    def confirm(self, equal: float) -> bool:
        """Whether the batch computed ``fn``; where not, evaluations run one by one from now on.

        ``equal`` is the value of :attr:`equal` read to the host.
        """
        if equal or _same_output(self.row, self.reference, self.unit_roundoff):
            return True
        self.ev.disable_vectorization(_VectorizationFailed(_VMAP_DIFFERS))
        return False


def _eval_vmap(
    ev: Evaluator,
    xs: Sequence[torch.Tensor],
    batched: dict[int, torch.Tensor],
    rows: int,
) -> torch.Tensor:
    in_dims = tuple(0 if i in batched else None for i in range(len(xs)))
    args = [batched.get(i, x) for i, x in enumerate(xs)]

    def g(*vals: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(ev.raw(vals))

    ev.prepare()
    ev.calls += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = torch.func.vmap(g, in_dims=in_dims, randomness="same")(*args)
    return flat_cat(outs, batch=rows)


def evaluate_one(
    ev: Evaluator, point: Sequence[torch.Tensor], where: Callable[[], str]
) -> torch.Tensor:
    """``fn`` at one perturbed point (flat float64), with the place in any error it raises."""
    try:
        return flat_cat(ev(point))
    except OutputChanged as exc:
        exc.where = where()
        raise
    except InvalidArgument:
        raise
    except Exception as exc:
        raise PerturbedEvaluationError(
            f"fn raised {first_line(exc, 300)} when evaluated at {where()}: a point the "
            f"finite differences need, next to the one being checked. The step probably left "
            f"fn's domain (a matrix that stops being positive definite, a log or sqrt of a "
            f"value that crosses 0, an index that moves). Pass a smaller eps, or check at a "
            f"point further from the edge of fn's domain."
        ) from exc


def evaluate_rows(
    ev: Evaluator,
    xs: Sequence[torch.Tensor],
    batched: dict[int, torch.Tensor],
    rows: int,
    reference: torch.Tensor,
    unit_roundoff: float,
    where: Callable[[int], str],
    checks: list[VmapCheck] | None = None,
) -> torch.Tensor:
    """Evaluate ``fn`` at ``rows`` points (flattened float64 outputs, shape (rows, M)).

    ``batched[i]`` holds ``rows + 1`` rows of input ``i``, the last being the
    unperturbed point; other inputs are fixed. Tries vmap first, checking its
    last row against ``reference`` = f(xs), then falls back to a loop.
    ``where(r)`` describes point ``r`` for error messages. With ``checks``, a
    batch's check is appended there instead of made (:class:`VmapCheck`): the
    caller confirms it, and evaluates again where it fails.
    """
    with torch.no_grad():
        if ev.vectorized:
            try:
                out = _eval_vmap(ev, xs, batched, rows + 1)
                if checks is not None:
                    equal = (out[-1] == reference).all()
                    checks.append(VmapCheck(ev, out[-1], reference, unit_roundoff, equal))
                elif not _same_output(out[-1], reference, unit_roundoff):
                    raise _VectorizationFailed(_VMAP_DIFFERS)
                return out[:-1]
            except InvalidArgument:
                raise
            except Exception as exc:  # any failure of the batched path: use the loop
                ev.disable_vectorization(exc)
        out = torch.empty(
            rows, int(reference.numel()), dtype=torch.float64, device=reference.device
        )
        for r in range(rows):
            # a fresh contiguous tensor per row: a view into the batch buffer has a storage
            # offset that as_strided-style ops would read through
            vals = [batched[i][r].clone() if i in batched else x for i, x in enumerate(xs)]
            out[r] = evaluate_one(ev, vals, functools.partial(where, r))
        return out
