"""Jacobians and projections of a function, by autograd and by finite differences.

Produces numbers, never verdicts. Every batched path (``torch.func.vmap`` over
perturbations, ``is_grads_batched`` over cotangents) has a loop twin that is
used automatically when the function cannot be vmapped (data-dependent
control flow, ``.item()``, in-place ops, custom Functions without a vmap rule).
A batched evaluation also carries the unperturbed point and is compared with
the plain call, so a function that vmaps *differently* falls back too.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.autograd import forward_ad

from ..errors import InvalidArgument
from .trees import InputTree, flatten_outputs

__all__ = [
    "Evaluator",
    "FDColumns",
    "reverse_jacobian",
    "vjp_rows",
    "central_differences",
    "directional_differences",
    "forward_directional",
    "flat_cat",
]

# Rows per batched call and elements per batch: bounds the memory of one vmapped evaluation.
_MAX_BATCH_ROWS = 1024
_MAX_BATCH_ELEMENTS = 1 << 24
# Inputs with more elements than this are perturbed and evaluated one row at a time.
_LAZY_ROW_ELEMENTS = 1 << 16


class VectorizationFailed(Exception):
    """Internal: the batched path cannot be used for this function."""


def flat_cat(tensors: Sequence[torch.Tensor], batch: int | None = None) -> torch.Tensor:
    """Concatenate tensors flattened to float64 (keeping a leading batch dim when given)."""
    if batch is None:
        parts = [t.detach().reshape(-1).to(torch.float64) for t in tensors]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    parts = [t.detach().reshape(batch, -1).to(torch.float64) for t in tensors]
    return torch.cat(parts, dim=1) if parts else torch.zeros(batch, 0, dtype=torch.float64)


@dataclass
class Evaluator:
    """``fn`` seen as a map from the checked tensors to its floating output tensors."""

    fn: Callable[..., Any]
    tree: InputTree
    base: list[Any]
    prepare: Callable[[], None]
    out_paths: list[str] = field(default_factory=list)
    out_shapes: list[tuple[int, ...]] = field(default_factory=list)
    all_paths: list[str] = field(default_factory=list)
    calls: int = 0
    vectorized: bool = True
    fallback_reason: str | None = None
    keep: list[int] | None = None

    def raw(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Evaluate without touching the RNG (for use inside vmap)."""
        out = self.tree.call(self.fn, self.base, xs)
        leaves, _ = flatten_outputs(out)
        paths = [leaf.path for leaf in leaves]
        if self.all_paths and paths != self.all_paths:
            raise InvalidArgument(
                f"fn's outputs changed between evaluations: first {self.all_paths}, then {paths}. "
                f"The checker needs the same output structure at nearby inputs."
            )
        tensors = [leaf.tensor for leaf in leaves]
        return tensors if self.keep is None else [tensors[k] for k in self.keep]

    def __call__(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        self.prepare()
        self.calls += 1
        return self.raw(xs)

    @property
    def total_out(self) -> int:
        n = 0
        for shape in self.out_shapes:
            m = 1
            for s in shape:
                m *= s
            n += m
        return n

    def disable_vectorization(self, exc: BaseException | str) -> None:
        if self.vectorized:
            self.vectorized = False
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            text = text.split(". ")[0]
            self.fallback_reason = f"{type(exc).__name__}: {text[:160]}"


def _batch_rows(n_in: int, n_out: int, wanted: int) -> int:
    per_row = max(1, n_in + n_out)
    return max(1, min(wanted, _MAX_BATCH_ROWS, _MAX_BATCH_ELEMENTS // per_row))


def _same_output(a: torch.Tensor, b: torch.Tensor, unit_roundoff: float) -> bool:
    scale = torch.maximum(a.abs(), b.abs())
    ok = (a - b).abs() <= 64 * unit_roundoff * scale + 1e-300
    both_nan = torch.isnan(a) & torch.isnan(b)
    return bool((ok | both_nan).all())


def _eval_batch_vmap(
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


def _eval_batch_loop(
    ev: Evaluator,
    xs: Sequence[torch.Tensor],
    batched: dict[int, torch.Tensor],
    rows: int,
) -> torch.Tensor:
    out = []
    for r in range(rows):
        # a fresh contiguous tensor per row: a view into the batch buffer has a storage
        # offset that as_strided-style ops would read through
        vals = [batched[i][r].clone() if i in batched else x for i, x in enumerate(xs)]
        out.append(flat_cat(ev(vals)))
    return torch.stack(out) if out else torch.zeros(0, ev.total_out, dtype=torch.float64)


def evaluate_batch(
    ev: Evaluator,
    xs: Sequence[torch.Tensor],
    batched: dict[int, torch.Tensor],
    rows: int,
    reference: torch.Tensor,
    unit_roundoff: float,
) -> torch.Tensor:
    """Evaluate ``fn`` at ``rows`` points (flattened float64 outputs, shape (rows, M)).

    ``batched[i]`` holds ``rows + 1`` rows of input ``i``, the last being the
    unperturbed point; other inputs are fixed. Tries vmap first, checking its
    last row against ``reference`` = f(xs), then falls back to a loop.
    """
    with torch.no_grad():
        if ev.vectorized:
            try:
                out = _eval_batch_vmap(ev, xs, batched, rows + 1)
                if not _same_output(out[-1], reference, unit_roundoff):
                    raise VectorizationFailed(
                        "vmapped evaluation differs from the plain call at the same point"
                    )
                return out[:-1]
            except InvalidArgument:
                raise
            except Exception as exc:  # any failure of the batched path: use the loop
                ev.disable_vectorization(exc)
        return _eval_batch_loop(ev, xs, batched, rows)


@dataclass
class FDColumns:
    """Central differences for a set of coordinates of one input (float64).

    ``values[c]`` has shape (len(coords), M): row ``k`` is the difference
    quotient for coordinate ``coords[k]`` at step multiplier ``c``.
    """

    coords: torch.Tensor
    values: dict[float, torch.Tensor]
    roundoff: dict[float, torch.Tensor]
    steps: dict[float, torch.Tensor]


def central_differences(
    ev: Evaluator,
    xs: Sequence[torch.Tensor],
    leaf: int,
    coords: torch.Tensor,
    base_steps: torch.Tensor,
    multipliers: Sequence[float],
    reference: torch.Tensor,
    unit_roundoff: float,
) -> FDColumns:
    """Columns ``coords`` of the Jacobian w.r.t. input ``leaf`` by central differences.

    For each multiplier ``c`` the step is ``c * base_steps[j]``; the quotient
    divides by the step actually taken in the input's dtype.
    """
    x = xs[leaf].detach()
    flat = x.reshape(-1)
    n_coords = int(coords.numel())
    M = int(reference.numel())
    values: dict[float, list[torch.Tensor]] = {c: [] for c in multipliers}
    rounds: dict[float, list[torch.Tensor]] = {c: [] for c in multipliers}
    steps_out: dict[float, list[torch.Tensor]] = {c: [] for c in multipliers}
    per_coord = 2 * len(multipliers)
    chunk = max(1, _batch_rows(x.numel() * per_coord, M * per_coord, n_coords))
    for start in range(0, n_coords, chunk):
        idx = coords[start : start + chunk]
        b = int(idx.numel())
        rows = []
        taken: dict[float, torch.Tensor] = {}
        for c in multipliers:
            h = (c * base_steps[idx]).to(x.dtype)
            plus = flat.unsqueeze(0).repeat(b, 1)
            minus = plus.clone()
            ar = torch.arange(b, device=x.device)
            plus[ar, idx] = plus[ar, idx] + h
            minus[ar, idx] = minus[ar, idx] - h
            taken[c] = plus[ar, idx].to(torch.float64) - minus[ar, idx].to(torch.float64)
            # an infinite input has no representable step: divide by the nominal one
            nominal = 2 * (c * base_steps[idx]).to(torch.float64)
            taken[c] = torch.where(torch.isfinite(taken[c]) & (taken[c] != 0), taken[c], nominal)
            rows += [plus, minus]
        stacked = torch.cat([*rows, flat.unsqueeze(0)]).reshape(-1, *x.shape)
        n_rows = int(stacked.shape[0]) - 1
        out = evaluate_batch(ev, xs, {leaf: stacked}, n_rows, reference, unit_roundoff)
        for k, c in enumerate(multipliers):
            f_plus = out[(2 * k) * b : (2 * k + 1) * b]
            f_minus = out[(2 * k + 1) * b : (2 * k + 2) * b]
            step = taken[c].unsqueeze(1)
            values[c].append((f_plus - f_minus) / step)
            rounds[c].append(unit_roundoff * (f_plus.abs() + f_minus.abs()) / step.abs())
            steps_out[c].append(taken[c])
    return FDColumns(
        coords=coords,
        values={c: torch.cat(v) for c, v in values.items()},
        roundoff={c: torch.cat(v) for c, v in rounds.items()},
        steps={c: torch.cat(v) for c, v in steps_out.items()},
    )


def _all_finite(x: torch.Tensor) -> bool:
    # one reduction instead of a boolean tensor the size of x; a sum that overflows
    # although every entry is finite is rare and merely takes the exact test
    if not x.is_floating_point() or bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def directional_differences(
    ev: Evaluator,
    xs: Sequence[torch.Tensor],
    directions: Sequence[Sequence[torch.Tensor]],
    eps: float,
    multipliers: Sequence[float],
    reference: torch.Tensor,
    unit_roundoff: float,
) -> tuple[dict[float, torch.Tensor], dict[float, torch.Tensor], list[list[torch.Tensor]]]:
    """``(f(x + c eps w) - f(x - c eps w)) / (2 c eps)`` for each direction ``w`` (float64).

    Returns per multiplier a (K, M) float64 tensor of quotients and of roundoff
    estimates, plus the directions actually taken (rounded steps / 2 c eps),
    per probe and input, in the input's dtype.
    """
    K = len(directions)
    detached = [x.detach() for x in xs]
    # checked once per input rather than once per probe: these tensors can be whole models
    finite = [_all_finite(x) for x in detached]
    effective: list[list[torch.Tensor]] = [[] for _ in range(K)]

    def points(m: int, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        c = multipliers[m]
        plus, minus = [], []
        for i, x in enumerate(detached):
            w = directions[k][i].to(x.dtype)
            plus.append(torch.add(x, w, alpha=c * eps))
            minus.append(torch.sub(x, w, alpha=c * eps))
        if m == 0:
            for i in range(len(detached)):
                # in the input's dtype: rounding here is relative u per entry, which the
                # probes' error estimate (8 u sum|g w|) already allows for, and on a large
                # model every float64 temporary costs a parameter-sized allocation
                eff = (plus[i] - minus[i]).div_(2 * c * eps)
                if not finite[i]:
                    # an infinite entry cannot move: it contributes nothing to the projection
                    eff = torch.where(torch.isfinite(eff), eff, 0.0)
                effective[k].append(eff)
        return plus, minus

    order = [(m, k) for m in range(len(multipliers)) for k in range(K)]
    rows = 2 * len(order)
    row_elements = sum(int(x.numel()) for x in detached)
    if ev.vectorized and row_elements <= _LAZY_ROW_ELEMENTS:
        columns: list[list[torch.Tensor]] = [[] for _ in detached]
        for m, k in order:
            plus, minus = points(m, k)
            for i in range(len(detached)):
                columns[i] += [plus[i], minus[i]]
        stacked = {i: torch.stack([*col, detached[i]]) for i, col in enumerate(columns)}
        out = evaluate_batch(ev, xs, stacked, rows, reference, unit_roundoff)
    else:
        # A large input gains nothing from vmap (each op is big already) and its stacked
        # copies would cost memory: evaluate one perturbed point at a time.
        evaluated = []
        with torch.no_grad():
            for m, k in order:
                plus, minus = points(m, k)
                evaluated += [flat_cat(ev(plus)), flat_cat(ev(minus))]
        out = torch.stack(evaluated)
    values: dict[float, torch.Tensor] = {}
    rounds: dict[float, torch.Tensor] = {}
    for m, c in enumerate(multipliers):
        block = out[m * 2 * K : (m + 1) * 2 * K]
        f_plus, f_minus = block[0::2], block[1::2]
        values[c] = (f_plus - f_minus) / (2 * c * eps)
        rounds[c] = unit_roundoff * (f_plus.abs() + f_minus.abs()) / (2 * c * eps)
    return values, rounds, effective


def vjp_rows(
    outs: Sequence[torch.Tensor],
    xs: Sequence[torch.Tensor],
    cotangents: Sequence[torch.Tensor],
    ev: Evaluator | None = None,
) -> list[torch.Tensor]:
    """Batched vector-Jacobian products ``J^T u`` for a batch of cotangents.

    ``cotangents[k]`` has shape (B, *outs[k].shape); returns per input a
    (B, *x.shape) tensor. Outputs that do not require grad contribute zero.
    """
    B = int(cotangents[0].shape[0]) if cotangents else 0
    totals = [torch.zeros(B, *x.shape, dtype=x.dtype, device=x.device) for x in xs]
    if B == 0:
        return totals
    # One output at a time, as a user's loss usually reaches a backward formula
    # through one output only: some formulas are right only when every output's
    # gradient is defined (native_group_norm ignores a lone gradient of its mean).
    for out, cot in zip(outs, cotangents, strict=True):
        if not out.requires_grad:
            continue
        live = cot.reshape(B, -1).ne(0).any(dim=1).nonzero().flatten()
        if live.numel() == 0:
            continue
        rows = cot[live].to(out.dtype)
        grads = _vjp_one_output(out, xs, rows, ev)
        for total, g in zip(totals, grads, strict=True):
            total.index_add_(0, live.to(total.device), g.to(total.dtype))
    return totals


def _vjp_one_output(
    out: torch.Tensor, xs: Sequence[torch.Tensor], rows: torch.Tensor, ev: Evaluator | None
) -> list[torch.Tensor]:
    if ev is None or ev.vectorized:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                grads = torch.autograd.grad(
                    out,
                    list(xs),
                    grad_outputs=rows,
                    retain_graph=True,
                    allow_unused=True,
                    materialize_grads=True,
                    is_grads_batched=True,
                )
            n = int(rows.shape[0])
            # materialize_grads gives an unused input an unbatched zero tensor
            return [
                g.detach()
                if g.shape[:1] == (n,) and g.dim() == x.dim() + 1
                else torch.zeros(n, *x.shape, dtype=x.dtype, device=x.device)
                for g, x in zip(grads, xs, strict=True)
            ]
        except Exception as exc:  # batching rule missing: loop over rows
            if ev is not None:
                ev.disable_vectorization(exc)
    per_input: list[list[torch.Tensor]] = [[] for _ in xs]
    for row in rows:
        grads = torch.autograd.grad(
            out,
            list(xs),
            grad_outputs=row,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        for i, g in enumerate(grads):
            per_input[i].append(g.detach())
    return [torch.stack(r) for r in per_input]


def reverse_jacobian(
    outs: Sequence[torch.Tensor], xs: Sequence[torch.Tensor], ev: Evaluator
) -> list[torch.Tensor]:
    """The full Jacobian by reverse mode: per input a (M, n_i) float64 tensor."""
    M = sum(int(o.numel()) for o in outs)
    n_total = sum(int(x.numel()) for x in xs)
    chunk = _batch_rows(n_total, M, M)
    blocks: list[list[torch.Tensor]] = [[] for _ in xs]
    for start in range(0, M, chunk):
        stop = min(M, start + chunk)
        B = stop - start
        eye = torch.zeros(B, M, dtype=torch.float64)
        eye[torch.arange(B), torch.arange(start, stop)] = 1.0
        cots = []
        offset = 0
        for o in outs:
            m = int(o.numel())
            cots.append(eye[:, offset : offset + m].reshape(B, *o.shape).to(o.device))
            offset += m
        grads = vjp_rows(outs, xs, cots, ev)
        for i, g in enumerate(grads):
            blocks[i].append(g.reshape(B, -1).to(torch.float64).cpu())
    return [torch.cat(b) for b in blocks]


def forward_directional(
    ev: Evaluator, xs: Sequence[torch.Tensor], tangents: Sequence[torch.Tensor]
) -> torch.Tensor | None:
    """``J w`` by forward-mode AD (flattened float64), or None where unsupported."""
    try:
        with forward_ad.dual_level(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            duals = [
                forward_ad.make_dual(x.detach(), t.to(x.dtype))
                for x, t in zip(xs, tangents, strict=True)
            ]
            outs = ev(duals)
            parts = []
            for o in outs:
                tangent = forward_ad.unpack_dual(o).tangent
                if tangent is None:
                    # no tangent at all: forward AD did not run through fn (an op or a
                    # custom Function without forward-mode support that did not raise)
                    return None
                parts.append(tangent.detach().reshape(-1).to(torch.float64))
            return torch.cat(parts).cpu()
    except InvalidArgument:
        raise
    except Exception:
        return None
