"""Jacobians and projections of ``fn`` at a point, by autograd and by finite differences.

Produces numbers, never verdicts. Every batch is sized by the check's
:class:`~.memory.MemoryBudget` from the measured footprint of one evaluation,
so a CNN whose activations are a thousand times its input stays within the
budget: its batches simply get shorter. Where even a batch of two does not fit,
or ``fn`` cannot be vmapped, points are evaluated one at a time without
stacked copies.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.autograd import forward_ad

from ..errors import InvalidArgument
from ..undo import watching_user_code
from .evaluation import (
    Evaluator,
    OutputChanged,
    VmapCheck,
    evaluate_one,
    evaluate_rows,
    first_line,
)
from .memory import AllocationCounter, Footprint, MemoryBudget
from .numerics import unravel

__all__ = [
    "Point",
    "FDColumns",
    "central_differences",
    "directional_differences",
    "vjp_rows",
    "reverse_rows",
    "forward_directional",
    "ForwardModeUnsupported",
]


# What a vmapped evaluation costs beyond a plain call, and what the loop adds per row
# (building the point, flattening the outputs), on a 2-core x86 machine.
_VMAP_OVERHEAD = 2e-4
_ROW_OVERHEAD = 5e-6
# Up to this many rows, plain backward passes in a loop beat one batched over them.
_LOOP_ROWS = 4
# Inputs with more elements than this are perturbed and evaluated one row at a time:
# each operation is big already, so vmap gains nothing, and stacked copies cost memory.
_LAZY_ROW_ELEMENTS = 1 << 16


@dataclass
class Point:
    """``fn`` at the point being checked: what every Jacobian computation needs.

    ``xs`` are the checked inputs (working copies that require grad), ``outs``
    the compared outputs of the first call (with their graph), ``reference``
    those outputs flattened to float64; ``call_seconds`` is what one evaluation
    without graph took (the repeat call).
    """

    ev: Evaluator
    xs: list[torch.Tensor]
    outs: list[torch.Tensor]
    in_paths: list[str]
    reference: torch.Tensor
    u_out: float
    budget: MemoryBudget
    footprint: Footprint
    call_seconds: float

    @functools.cached_property
    def n_out(self) -> int:
        """Entries of the compared outputs."""
        return int(self.reference.numel())

    @functools.cached_property
    def detached(self) -> list[torch.Tensor]:
        """The checked inputs without their autograd history (detached once per check)."""
        return [x.detach() for x in self.xs]

    @functools.cached_property
    def n_in(self) -> int:
        """Entries of the checked inputs."""
        return sum(int(x.numel()) for x in self.xs)

    @functools.cached_property
    def in_bytes(self) -> int:
        """Bytes of the checked inputs."""
        return sum(int(x.numel()) * x.element_size() for x in self.xs)

    @functools.cached_property
    def out_bytes(self) -> int:
        """Bytes of the compared outputs."""
        return sum(int(o.numel()) * o.element_size() for o in self.outs)

    def count_forward(self) -> None:
        """One evaluation without graph under the allocation counter (for CUDA)."""
        with torch.no_grad(), AllocationCounter() as counter:
            self.ev(self.detached)
        self.footprint.forward_counted = counter.peak

    # What one row of each kind of batch holds besides fn's own allocations.
    def difference_row_bytes(self, leaf: int, kept: int) -> int:
        """A row of central differences.

        The perturbed input (three copies on the way to the stack), its outputs in
        float64, and the quotient and roundoff of ``kept`` output rows.
        """
        x = self.xs[leaf]
        return 3 * int(x.numel()) * x.element_size() + 2 * self.n_out * 8 + 2 * kept * 8

    def direction_row_bytes(self) -> int:
        """A row of directional differences: every input perturbed, its outputs in float64."""
        return 3 * self.in_bytes + 2 * self.n_out * 8

    def backward_row_bytes(self) -> int:
        """A row of a batched backward: the cotangent and the gradients."""
        return self.in_bytes + self.out_bytes

    def reverse_row_bytes(self) -> int:
        """A row of the reverse-mode Jacobian: a one-hot cotangent and a float64 row."""
        return self.n_out * 8 + self.out_bytes + self.in_bytes + self.n_in * 8

    def minimum_bytes(self, full: bool) -> int:
        """The budget below which not even one evaluation of a mode's batches fits."""
        if not full:
            return max(self.direction_row_bytes() + self.in_bytes, self.backward_row_bytes())
        differences = max(
            self.difference_row_bytes(i, 1) + int(x.numel()) * x.element_size()
            for i, x in enumerate(self.xs)
        )
        # full mode holds one analytic row and judges a column with float64 temporaries
        held = self.n_in * 8 + 4 * self.n_out * 8
        return held + max(differences, self.reverse_row_bytes(), self.backward_row_bytes())

    def batch_pays(self, rows: int) -> bool:
        """Whether one vmapped call beats ``rows`` plain calls.

        A vmapped call costs a plain call and a fixed overhead more, and saves
        little per row beyond the interpreter's overhead: a loop is the better deal
        for a few rows of a cheap function (and it holds one perturbed point at a
        time). Fast mode's two rows of an MLP called through ``functional_call``
        (80 us a call, 320 us vmapped over three rows) take the loop.
        """
        call = self.call_seconds
        return self.ev.vectorized and rows * (call + _ROW_OVERHEAD) > call + _VMAP_OVERHEAD

    def forward_peak(self, rows: int) -> int:
        """Bytes one evaluation may allocate, counted first where ``rows`` of them need it."""
        footprint = self.footprint
        if footprint.forward_counted is None and footprint.needs_forward_count(rows, self.budget):
            self.count_forward()
        return footprint.forward_peak()


@dataclass
class FDColumns:
    """Central differences for a set of coordinates of one input (float64).

    ``values[c]`` has shape (len(coords), rows): row ``k`` is the difference
    quotient for coordinate ``coords[k]`` at step multiplier ``c``, over the
    outputs (or the slice of them that was asked for).
    """

    coords: torch.Tensor
    values: dict[float, torch.Tensor]
    roundoff: dict[float, torch.Tensor]


def _one_at_a_time(
    point: Point,
    rows: int,
    make: Callable[[int], list[torch.Tensor]],
    where: Callable[[int], str],
) -> torch.Tensor:
    """``fn`` at ``rows`` points built one at a time by ``make(r)`` (no stacked copies)."""
    out = torch.empty(rows, point.n_out, dtype=torch.float64, device=point.reference.device)
    with torch.no_grad():
        for r in range(rows):
            out[r] = evaluate_one(point.ev, make(r), functools.partial(where, r))
    return out


@dataclass
class _CoordinateRows:
    """The perturbed points of one chunk of central differences, row by row.

    Row ``r`` moves coordinate ``idx[r % b]`` by ``+h`` (even ``r // b``) or ``-h``
    (odd) at multiplier ``multipliers[r // (2 b)]``.
    """

    point: Point
    leaf: int
    idx: torch.Tensor
    nominal: dict[float, torch.Tensor]
    multipliers: Sequence[float]

    def _row(self, r: int) -> tuple[int, torch.Tensor]:
        k, j = divmod(r, int(self.idx.numel()))
        h = self.nominal[self.multipliers[k // 2]][j]
        return int(self.idx[j]), h if k % 2 == 0 else -h

    def make(self, r: int) -> list[torch.Tensor]:
        index, h = self._row(r)
        x = self.point.xs[self.leaf].detach()
        moved = x.reshape(-1).clone()
        moved[index] += h
        return _replace(self.point.xs, self.leaf, moved.reshape(x.shape))

    def where(self, r: int) -> str:
        index, h = self._row(r)
        x = self.point.xs[self.leaf]
        value = float(x.detach().reshape(-1)[index])
        return (
            f"{self.point.in_paths[self.leaf]} at index {unravel(index, tuple(x.shape))} moved "
            f"by {float(h):+.3g} (from {value:.6g} to {value + float(h):.6g})"
        )


def central_differences(
    point: Point,
    leaf: int,
    coords: torch.Tensor,
    base_steps: torch.Tensor,
    multipliers: Sequence[float],
    rows: slice | None = None,
) -> FDColumns:
    """Columns ``coords`` of the Jacobian w.r.t. input ``leaf`` by central differences.

    For each multiplier ``c`` the step is ``c * base_steps[j]``; the quotient
    divides by the step actually taken in the input's dtype. With ``rows``,
    only those output entries are kept (the rest is dropped right after each
    batch, so a block of a Jacobian too large to hold costs a block's memory).
    """
    x = point.xs[leaf].detach()
    flat = x.reshape(-1)
    shape, path = tuple(x.shape), point.in_paths[leaf]
    n, M = int(x.numel()), point.n_out
    kept = M if rows is None else len(range(*rows.indices(M)))
    per_coord = 2 * len(multipliers)
    n_coords = int(coords.numel())
    fit = point.budget.rows(
        per_row=point.difference_row_bytes(leaf, kept),
        own_peak=point.forward_peak(per_coord * n_coords),
        extra=n * x.element_size(),
        wanted=per_coord * n_coords,
        what=f"finite differences for {path}",
    )
    # one point at a time where vmap cannot run or does not pay, or where even one
    # coordinate's rows do not fit
    lazy = not point.batch_pays(per_coord * n_coords) or fit < per_coord
    chunk = 1 if lazy else max(1, fit // per_coord)
    values: dict[float, list[torch.Tensor]] = {c: [] for c in multipliers}
    rounds: dict[float, list[torch.Tensor]] = {c: [] for c in multipliers}
    for start in range(0, n_coords, chunk):
        idx = coords[start : start + chunk]
        b = int(idx.numel())
        ar = torch.arange(b, device=x.device)
        nominal = {c: (c * base_steps[idx]).to(x.dtype) for c in multipliers}

        chunk_rows = _CoordinateRows(point, leaf, idx, nominal, multipliers)
        taken: dict[float, torch.Tensor] = {}
        for c in multipliers:
            h = nominal[c]
            at = flat[idx]
            step = (at + h).to(torch.float64) - (at - h).to(torch.float64)
            # an infinite input has no representable step: divide by the nominal one
            taken[c] = torch.where(torch.isfinite(step) & (step != 0), step, 2 * h.double())
        if lazy:
            out = _one_at_a_time(point, per_coord * b, chunk_rows.make, chunk_rows.where)
        else:
            blocks = []
            for c in multipliers:
                for sign in (1.0, -1.0):
                    moved = flat.unsqueeze(0).repeat(b, 1)
                    moved[ar, idx] += sign * nominal[c]
                    blocks.append(moved)
            stacked = torch.cat([*blocks, flat.unsqueeze(0)]).reshape(-1, *shape)
            del blocks
            out = evaluate_rows(
                point.ev,
                point.xs,
                {leaf: stacked},
                per_coord * b,
                point.reference,
                point.u_out,
                chunk_rows.where,
            )
            del stacked
        if rows is not None:
            out = out[:, rows]
        for k, c in enumerate(multipliers):
            f_plus = out[(2 * k) * b : (2 * k + 1) * b]
            f_minus = out[(2 * k + 1) * b : (2 * k + 2) * b]
            step = taken[c].unsqueeze(1).to(out.device)
            values[c].append((f_plus - f_minus) / step)
            rounds[c].append(point.u_out * (f_plus.abs() + f_minus.abs()) / step.abs())
        del out
    return FDColumns(
        coords=coords,
        values={c: torch.cat(v) for c, v in values.items()},
        roundoff={c: torch.cat(v) for c, v in rounds.items()},
    )


def _replace(xs: Sequence[torch.Tensor], i: int, value: torch.Tensor) -> list[torch.Tensor]:
    return [value if k == i else x.detach() for k, x in enumerate(xs)]


def directional_differences(
    point: Point,
    directions: Sequence[Sequence[torch.Tensor]],
    eps: float,
    multipliers: Sequence[float],
    checks: list[VmapCheck] | None = None,
) -> tuple[dict[float, torch.Tensor], dict[float, torch.Tensor], list[list[torch.Tensor]]]:
    """``(f(x + c eps w) - f(x - c eps w)) / (2 c eps)`` for each direction ``w`` (float64).

    Returns per multiplier a (K, M) float64 tensor of quotients and of roundoff
    estimates, plus the directions actually taken (rounded steps / 2 c eps),
    per probe and input, in the input's dtype. With ``checks``, a vmapped batch
    is checked by the caller (:func:`~.evaluation.evaluate_rows`).
    """
    K = len(directions)
    detached = point.detached
    order = [(m, k) for m in range(len(multipliers)) for k in range(K)]
    n_rows = 2 * len(order)
    fit = point.budget.rows(
        per_row=point.direction_row_bytes(),
        own_peak=point.forward_peak(n_rows),
        extra=point.in_bytes,
        wanted=n_rows,
        what="the finite differences of fast mode",
    )
    lazy = not point.batch_pays(n_rows) or point.n_in > _LAZY_ROW_ELEMENTS or fit < n_rows

    def where(r: int) -> str:
        m, k = order[r // 2]
        step = (1.0 if r % 2 == 0 else -1.0) * multipliers[m] * eps
        return (
            f"every checked input moved by {step:+.3g} times a random direction "
            f"(probe {k}; entries scaled by max(1, |x|))"
        )

    effective: list[list[torch.Tensor]] = [[] for _ in range(K)]
    rows: list[torch.Tensor] = []
    columns: list[list[torch.Tensor]] = [[] for _ in detached]
    for j, (m, k) in enumerate(order):
        step = multipliers[m] * eps
        plus = [torch.add(x, directions[k][i], alpha=step) for i, x in enumerate(detached)]
        minus = [torch.sub(x, directions[k][i], alpha=step) for i, x in enumerate(detached)]
        if lazy:
            # one point at a time: a model's perturbed copies are not all held at once
            with torch.no_grad():
                rows.append(evaluate_one(point.ev, plus, functools.partial(where, 2 * j)))
                rows.append(evaluate_one(point.ev, minus, functools.partial(where, 2 * j + 1)))
        else:
            for i in range(len(detached)):
                columns[i] += [plus[i], minus[i]]
        if m == 0:
            for i in range(len(detached)):
                # in the input's dtype: rounding here is relative u per entry, which the
                # probes' error estimate (8 u sum|g w|) already allows for, and on a large
                # model every float64 temporary costs a parameter-sized allocation
                eff = torch.sub(plus[i], minus[i]).div_(2 * step)
                # An infinite (or NaN) entry cannot move: it contributes nothing to the
                # projection. Its step is inf - inf = NaN, which a finite entry's never is,
                # so zeroing NaN needs no look at x (a read from the device per input).
                eff.nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
                effective[k].append(eff)
        del plus, minus
    if lazy:
        out = torch.stack(rows)
    else:
        stacked = {i: torch.stack([*col, detached[i]]) for i, col in enumerate(columns)}
        del columns
        out = evaluate_rows(
            point.ev, point.xs, stacked, n_rows, point.reference, point.u_out, where, checks
        )
    values: dict[float, torch.Tensor] = {}
    rounds: dict[float, torch.Tensor] = {}
    for m, c in enumerate(multipliers):
        block = out[m * 2 * K : (m + 1) * 2 * K]
        f_plus, f_minus = block[0::2], block[1::2]
        values[c] = (f_plus - f_minus) / (2 * c * eps)
        rounds[c] = point.u_out * (f_plus.abs() + f_minus.abs()) / (2 * c * eps)
    return values, rounds, effective


def vjp_rows(
    point: Point, cotangents: Sequence[torch.Tensor], *, dense: bool = False
) -> list[torch.Tensor]:
    """Batched vector-Jacobian products ``J^T u`` for a batch of cotangents.

    ``cotangents[k]`` has shape (B, *outs[k].shape); returns per input a
    (B, *x.shape) tensor. Outputs that do not require grad contribute zero.
    ``dense`` promises that no row of any cotangent is all zeros (random probes),
    which saves looking for rows to skip.
    """
    B = int(cotangents[0].shape[0]) if cotangents else 0
    if B == 0:
        return [torch.zeros(0, *x.shape, dtype=x.dtype, device=x.device) for x in point.xs]
    footprint = point.footprint
    parts: list[list[torch.Tensor]] = []
    start = 0
    if footprint.needs_backward_measure(B, point.budget):
        # the first row alone, timed (and counted on CUDA), sizes the batches of the rest
        clock = time.perf_counter()
        with AllocationCounter() if footprint.on_cuda else contextlib.nullcontext() as counter:
            parts.append(_rows(point, cotangents, 0, 1, dense))
        footprint.backward_seconds = time.perf_counter() - clock
        if isinstance(counter, AllocationCounter):
            footprint.backward_counted = counter.peak
        start = 1
    if start < B:
        chunk = point.budget.rows(
            per_row=point.backward_row_bytes(),
            own_peak=footprint.backward_peak(),
            extra=0,
            wanted=B - start,
            what="the batched backward",
        )
        for lo in range(start, B, chunk):
            parts.append(_rows(point, cotangents, lo, min(B, lo + chunk), dense))
    if len(parts) == 1:
        return parts[0]
    return [torch.cat([part[i] for part in parts]) for i in range(len(point.xs))]


def _rows(
    point: Point, cotangents: Sequence[torch.Tensor], lo: int, hi: int, dense: bool
) -> list[torch.Tensor]:
    """``J^T u`` for rows ``lo:hi`` of the cotangents, per input."""
    xs = point.xs
    total: list[torch.Tensor] | None = None
    # One output at a time, as a user's loss usually reaches a backward formula through
    # one output only: some formulas are right only when every output's gradient is
    # defined (native_group_norm ignores a lone gradient of its mean).
    for out, cot in zip(point.outs, cotangents, strict=True):
        if not out.requires_grad:
            continue
        block = cot[lo:hi]
        if dense:
            live = list(range(hi - lo))
        else:
            live = block.reshape(hi - lo, -1).ne(0).any(dim=1).nonzero().flatten().tolist()
            if not live:
                continue
        a, b = live[0], live[-1] + 1
        if b - a == hi - lo:
            part = _vjp_one_output(point, out, block.to(out.dtype))
        else:
            # live rows are a contiguous run for one-hot cotangents: slices, not
            # index_add_, which stalls on a loaded machine's OpenMP pool
            part = [torch.zeros(hi - lo, *x.shape, dtype=x.dtype, device=x.device) for x in xs]
            runs = [(a, b)] if b - a == len(live) else [(r, r + 1) for r in live]
            for r0, r1 in runs:
                grads = _vjp_one_output(point, out, block[r0:r1].to(out.dtype))
                for p, g in zip(part, grads, strict=True):
                    p[r0:r1] += g.to(p.dtype)
        part = [g if g.dtype == x.dtype else g.to(x.dtype) for g, x in zip(part, xs, strict=True)]
        total = part if total is None else [t + p for t, p in zip(total, part, strict=True)]
    if total is None:
        return [torch.zeros(hi - lo, *x.shape, dtype=x.dtype, device=x.device) for x in xs]
    return total


def _grad(
    out: torch.Tensor, xs: Sequence[torch.Tensor], rows: torch.Tensor, batched: bool
) -> tuple[torch.Tensor, ...]:
    """``J^T u`` by one backward: for each row of ``rows`` when ``batched``, else for ``rows``."""
    with watching_user_code(rows):  # fn's backward formulas and hooks run here
        return torch.autograd.grad(
            out,
            list(xs),
            grad_outputs=rows,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
            is_grads_batched=batched,
        )


def _vjp_one_output(point: Point, out: torch.Tensor, rows: torch.Tensor) -> list[torch.Tensor]:
    xs, ev = point.xs, point.ev
    n = int(rows.shape[0])
    if n > _LOOP_ROWS and ev.vectorized:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                grads = _grad(out, xs, rows, batched=True)
            # materialize_grads gives an unused input an unbatched zero tensor
            return [
                g.detach()
                if g.shape[:1] == (n,) and g.dim() == x.dim() + 1
                else torch.zeros(n, *x.shape, dtype=x.dtype, device=x.device)
                for g, x in zip(grads, xs, strict=True)
            ]
        except Exception as exc:  # batching rule missing: loop over rows
            ev.disable_vectorization(exc)
    per_input: list[list[torch.Tensor]] = [[] for _ in xs]
    for row in rows:
        for i, g in enumerate(_grad(out, xs, row, batched=False)):
            # without create_graph the gradients carry no history (a backward hook's
            # result might): detach() only where there is one, as it is an operator call
            per_input[i].append(g.detach() if g.requires_grad else g)
    return [torch.stack(r) for r in per_input]


def reverse_rows(point: Point, lo: int, hi: int) -> list[torch.Tensor]:
    """Rows ``lo:hi`` of the Jacobian by reverse mode: per input a (hi - lo, n_i) float64 tensor."""
    M = point.n_out
    blocks: list[list[torch.Tensor]] = [[] for _ in point.xs]
    chunk = point.budget.rows(
        per_row=point.reverse_row_bytes(),
        own_peak=point.footprint.backward_peak(),
        extra=0,
        wanted=hi - lo,
        what="the reverse-mode Jacobian",
    )
    for start in range(lo, hi, chunk):
        stop = min(hi, start + chunk)
        B = stop - start
        eye = torch.zeros(B, M, dtype=torch.float64)
        eye[torch.arange(B), torch.arange(start, stop)] = 1.0
        cots = []
        offset = 0
        for o in point.outs:
            m = int(o.numel())
            cots.append(eye[:, offset : offset + m].reshape(B, *o.shape).to(o.device))
            offset += m
        del eye
        with torch.enable_grad():
            grads = vjp_rows(point, cots)
        del cots
        for i, g in enumerate(grads):
            blocks[i].append(g.reshape(B, -1).to(torch.float64).cpu())
    return [torch.cat(b) for b in blocks]


class ForwardModeUnsupported(Exception):
    """fn cannot be differentiated in forward mode at the point; the message says why."""


def forward_directional(point: Point, tangents: Sequence[torch.Tensor]) -> torch.Tensor:
    """``J w`` by forward-mode AD (flattened float64, on the outputs' device).

    Raises:
        ForwardModeUnsupported: forward AD does not run through fn (an op or a custom
            Function without a forward-mode formula), with the reason.
    """
    try:
        with forward_ad.dual_level(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            duals = [
                forward_ad.make_dual(x, t.to(x.dtype))
                for x, t in zip(point.detached, tangents, strict=True)
            ]
            outs = point.ev(duals)
            parts = []
            for o in outs:
                tangent = forward_ad.unpack_dual(o).tangent
                if tangent is None:
                    # no tangent at all: forward AD did not run through fn (an op or a
                    # custom Function without forward-mode support that did not raise)
                    raise ForwardModeUnsupported("an output came back without a tangent")
                parts.append(tangent.detach().reshape(-1).to(torch.float64))
            return torch.cat(parts)
    except (InvalidArgument, ForwardModeUnsupported, OutputChanged):
        raise
    except Exception as exc:
        # NotImplementedError (a Function without jvp), RuntimeError (an op without a
        # forward-mode formula, vmap inside fn): fn is not differentiable forward
        raise ForwardModeUnsupported(first_line(exc)) from exc
