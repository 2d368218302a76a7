"""Verdicts on Jacobian entries: allowances, step scales, the linearity probe, pair results.

Shared by full mode (block by block), fast mode (the entry a probe narrows
down to) and :mod:`~gradcheck_kit._src.manual`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import torch

from ..readback import read_host
from ..results import ErrorMap, Hint, PairResult, WorstElement
from .numerics import allowed_error, relative_error, unravel
from .tolerances import Tolerances

__all__ = [
    "SCALES",
    "WORST_KEPT",
    "judge_scales",
    "PairTally",
    "COMBINATION",
    "combined_cotangent",
    "LinearityProbe",
    "linearity_hint",
]

WORST_KEPT: Final = 5

# Steps (h, 2h) at three scales: 1, 1/8 and 1/64 of the base step. The difference
# between a step and its double is an empirical error estimate (curvature, a kink in
# between, roundoff); a smaller scale sees past a kink or a domain boundary that the
# base step crossed. An entry is judged at the first scale where it agrees within
# that scale's own estimate, so a wrong gradient has to be wrong at every scale.
SCALES: Final = ((1.0, 2.0), (0.125, 0.25), (1.0 / 64, 1.0 / 32))


def judge_scales(
    tol: Tolerances,
    analytic: torch.Tensor,
    vals: dict[float, torch.Tensor],
    rounds: dict[float, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Numeric value and allowance per entry: the first scale that agrees, else scale 1.

    ``vals[c]``/``rounds[c]`` are the difference quotients and their roundoff at
    step multiplier ``c`` for every multiplier in :data:`SCALES`. Returns the
    numeric values, the allowances and how many entries look kinked (steps h
    and 2h disagree by more than 10 %).

    A smaller scale may only decide an entry whose quotient there differs from
    the base step's by more than both their roundoff and the base step's
    truncation error: the function is not smooth within the base step (a kink,
    a jump, a domain boundary). For a smooth function the smaller steps only
    add roundoff (64 times more at 1/64), and judging at them would let a
    backward off by a uniform 1 % pass in float32. An entry shown not smooth
    that no scale decides is allowed the spread of its quotients over all
    steps: jumps closer together than the smallest step (a staircase such as
    ``round``) leave finite differences no better answer.
    """
    d1 = vals[1.0]
    base_trunc = (d1 - vals[2.0]).abs()
    base_trunc = torch.where(torch.isnan(base_trunc), 0.0, base_trunc)
    best_n = d1.clone()
    best_allowed = torch.full_like(best_n, -1.0)
    decided = torch.zeros_like(best_n, dtype=torch.bool)
    rough = torch.zeros_like(best_n, dtype=torch.bool)
    kinked = 0
    for small, large in SCALES:
        d_small, d_large = vals[small], vals[large]
        trunc = (d_small - d_large).abs()
        trunc = torch.where(torch.isnan(trunc), 0.0, trunc)
        scale_err = rounds[small] + rounds[large] + trunc
        scale_allowed = allowed_error(
            d_small, scale_err, atol=tol.atol, rtol=tol.rtol, safety=tol.safety
        )
        agrees = ((analytic - d_small).abs() <= scale_allowed) & ~decided
        if small == 1.0:
            kinked = int((trunc > 0.1 * d_small.abs() + tol.atol).sum())
            best_allowed = scale_allowed
        else:
            # NaN at the base step (a domain boundary) leaves the smaller scales free
            smooth_gap = tol.safety * (rounds[small] + rounds[1.0] + base_trunc)
            apart = ~((d_small - d1).abs() <= smooth_gap)
            agrees &= apart
            rough |= apart
        best_n = torch.where(agrees, d_small, best_n)
        best_allowed = torch.where(agrees, scale_allowed, best_allowed)
        decided |= agrees
    # Not smooth within the step, and no scale agrees: a staircase (round) or jumps
    # closer together than the smallest step. Finite differences resolve such an entry
    # no better than their spread over the steps, which becomes its error estimate.
    stacked = torch.stack([vals[c] for pair in SCALES for c in pair])
    spread = stacked.nan_to_num(nan=-math.inf).amax(0) - stacked.nan_to_num(nan=math.inf).amin(0)
    spread = torch.where(torch.isfinite(spread), spread, 0.0)
    rough_allowed = allowed_error(
        d1, spread + rounds[1.0], atol=tol.atol, rtol=tol.rtol, safety=tol.safety
    )
    use = rough & ~decided & (rough_allowed > best_allowed)
    best_allowed = torch.where(use, rough_allowed, best_allowed)
    return best_n, best_allowed, kinked


class PairTally:
    """One (output leaf, input leaf) block of the Jacobian, judged a piece at a time.

    :meth:`add` takes a sub-block (rows and columns of the pair's matrix) with
    its analytic values, numeric values and allowances; the tally keeps the
    counts, the largest errors, the worst entries and a max-pooled error map,
    so the block itself never needs to be held whole.

    Examples:
        >>> tally = PairTally("output", "input", (2,), (2,))
        >>> a = torch.eye(2, dtype=torch.float64)
        >>> _ = tally.add(0, 0, a, 2 * a, torch.full((2, 2), 1e-3, dtype=torch.float64))
        >>> pair = tally.result()
        >>> pair.passed, pair.mismatched, pair.worst[0].numeric
        (False, 2, 2.0)
    """

    def __init__(
        self,
        output: str,
        input: str,
        output_shape: tuple[int, ...],
        input_shape: tuple[int, ...],
    ) -> None:
        self.output, self.input = output, input
        self.output_shape, self.input_shape = output_shape, input_shape
        self.rows, self.cols = math.prod(output_shape), math.prod(input_shape)
        self.row_step, self.col_step = ErrorMap.steps(self.rows, self.cols)
        self.grid_cols = -(-self.cols // self.col_step)
        cells = -(-self.rows // self.row_step) * self.grid_cols
        self.grid = torch.zeros(cells, dtype=torch.float64)
        self.counts = torch.zeros(cells, dtype=torch.int64)
        self.total = 0
        self.mismatched = 0
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.nan_numeric = False
        self.resolution = math.inf
        self._worst: list[tuple[float, WorstElement]] = []

    def add(
        self,
        row0: int,
        col0: int,
        analytic: torch.Tensor,
        numeric: torch.Tensor,
        allowed: torch.Tensor,
    ) -> torch.Tensor:
        """Judge the sub-block at ``(row0, col0)``; returns its mismatch mask."""
        diff = (analytic - numeric).abs()
        nan_a, nan_n = torch.isnan(analytic), torch.isnan(numeric)
        one_nan = nan_a != nan_n
        diff = torch.where(nan_a & nan_n, 0.0, diff)
        diff = torch.where(one_nan, math.inf, diff)
        mismatch = (diff > allowed) | one_nan
        count = int(diff.numel())
        if count == 0:
            return mismatch
        rel = relative_error(diff, numeric)
        # a backward scaled by (1 + d) moves each entry by d |numeric|: it fails where
        # that exceeds the allowance, so the smallest allowance/|numeric| is the block's
        # resolution for a uniform relative error
        ratio = allowed / numeric.abs()
        ratio = torch.where(torch.isfinite(ratio) & (numeric != 0), ratio, math.inf)
        self.resolution = min(self.resolution, float(ratio.min()))
        n_bad = int(mismatch.sum())
        self.total += count
        self.mismatched += n_bad
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.max_rel = max(self.max_rel, float(rel.max()))
        if n_bad:
            self.nan_numeric = self.nan_numeric or bool(nan_n[mismatch].any())
            excess = torch.where(mismatch, diff - allowed, -math.inf).reshape(-1)
            top = torch.topk(excess, min(WORST_KEPT, n_bad)).indices.tolist()
            if self._worst and math.isinf(self._worst[0][0]) and self._worst[0][0] < 0:
                self._worst = []  # a passing entry kept while none mismatched
            for flat in top:
                self._keep(
                    float(excess[flat]), flat, row0, col0, analytic, numeric, diff, rel, allowed
                )
        elif not self.mismatched:
            flat = int(torch.argmax(diff.reshape(-1)))
            r, c = divmod(flat, int(analytic.shape[1]))
            if not self._worst or float(diff[r, c]) > self._worst[0][1].abs_error:
                self._worst = []
                self._keep(-math.inf, flat, row0, col0, analytic, numeric, diff, rel, allowed)
        self._pool(row0, col0, diff, mismatch)
        return mismatch

    def _keep(
        self,
        score: float,
        flat: int,
        row0: int,
        col0: int,
        analytic: torch.Tensor,
        numeric: torch.Tensor,
        diff: torch.Tensor,
        rel: torch.Tensor,
        allowed: torch.Tensor,
    ) -> None:
        r, c = divmod(flat, int(analytic.shape[1]))
        element = WorstElement(
            output_index=unravel(row0 + r, self.output_shape),
            input_index=unravel(col0 + c, self.input_shape),
            analytic=float(analytic[r, c]),
            numeric=float(numeric[r, c]),
            abs_error=float(diff[r, c]),
            rel_error=float(rel[r, c]),
            allowed=float(allowed[r, c]),
        )
        self._worst.append((score, element))
        self._worst.sort(key=lambda pair: pair[0], reverse=True)
        del self._worst[WORST_KEPT:]

    def _pool(self, row0: int, col0: int, diff: torch.Tensor, mismatch: torch.Tensor) -> None:
        rows, cols = diff.shape
        cell_r = (torch.arange(row0, row0 + rows) // self.row_step) * self.grid_cols
        cell_c = torch.arange(col0, col0 + cols) // self.col_step
        cells = (cell_r[:, None] + cell_c[None, :]).reshape(-1)
        self.grid.scatter_reduce_(0, cells, diff.reshape(-1).to(torch.float64).cpu(), reduce="amax")
        self.counts.scatter_add_(0, cells, mismatch.reshape(-1).to(torch.int64).cpu())

    def error_map(self) -> ErrorMap | None:
        """The pooled picture of the whole block (None unless every entry was judged)."""
        if self.total != self.rows * self.cols or self.total == 0:
            return None
        grid = self.grid.reshape(-1, self.grid_cols)
        counts = self.counts.reshape(-1, self.grid_cols)
        return ErrorMap(
            rows=self.rows,
            cols=self.cols,
            row_step=self.row_step,
            col_step=self.col_step,
            # 4 digits draw the same picture and keep a failing run's JSON a third the size
            abs_error=tuple(tuple(float(f"{v:.4g}") for v in row) for row in grid.tolist()),
            mismatched=tuple(tuple(int(v) for v in row) for row in counts.tolist()),
        )

    def result(self) -> PairResult:
        """The block's :class:`PairResult`; an error map only when something mismatched."""
        return PairResult(
            output=self.output,
            input=self.input,
            output_shape=self.output_shape,
            input_shape=self.input_shape,
            passed=self.mismatched == 0,
            max_abs_error=self.max_abs,
            max_rel_error=self.max_rel,
            mismatched=self.mismatched,
            total=self.total,
            worst=tuple(element for _, element in self._worst),
            # a passing block draws nothing in the report, and a map is ~20 kB of JSON
            error_map=self.error_map() if self.mismatched else None,
        )


# The linearity probe: vjp(g1 - 2 g2) must equal vjp(g1) - 2 vjp(g2). A negative,
# non-unit coefficient catches a backward that ignores grad_output (c != c - 2c) and one
# that bends it (|g1 - 2 g2| != |g1| - 2|g2|).
COMBINATION: Final = -2.0


def combined_cotangent(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """``g1 - 2 g2``: the cotangent whose vjp a linear backward gets from the other two."""
    return g1 + COMBINATION * g2


class LinearityProbe:
    """The linearity probe over batched vjps, computed on the device and read with other figures.

    ``rows[i]`` stacks the vjps for input ``i``: row 0 of ``g1``, row ``second`` of
    ``g2`` and row ``combined`` of ``g1 - 2 g2``; ``cots`` holds the cotangents,
    stacked the same way. The same backward computes all three rows, so a linear
    one agrees up to the roundoff of its sums; the allowance, sqrt(u) times the
    largest magnitudes of the three, is far above that and far below what a
    nonlinear backward gives. Its absolute part, the floor, is what atol allows
    each Jacobian entry, summed over the cotangents' entries (an entry whose
    gradient is zero by cancellation carries roundoff of the terms that cancelled).

    :meth:`tensors` are what the host needs (per output the cotangents' absolute
    sums, per input the largest disagreement and where); :meth:`hint` takes their
    values, read together with a check's other figures (:func:`~..readback.read_host`),
    and only where a disagreement exceeds the floor reads the magnitudes it needs.

    Args:
        rows: per input, the stacked vjps.
        cots: per output, the stacked cotangents.
        second: row of g2.
        combined: row of g1 - 2 g2.
        in_paths: the inputs' paths, for the hint.
        unit_roundoff: the larger of the inputs' and outputs' unit roundoff.
        atol: the check's atol.
        drawn: how g1 and g2 were drawn, for the hint.
    """

    def __init__(
        self,
        rows: Sequence[torch.Tensor],
        cots: Sequence[torch.Tensor],
        second: int,
        combined: int,
        *,
        in_paths: Sequence[str],
        unit_roundoff: float,
        atol: float,
        drawn: str,
    ) -> None:
        self.second, self.combined = second, combined
        self.in_paths, self.unit_roundoff, self.atol, self.drawn = (
            in_paths,
            unit_roundoff,
            atol,
            drawn,
        )
        self.shapes = [tuple(r.shape[1:]) for r in rows]
        self.rows2d: list[torch.Tensor | None] = []
        self._largest: list[torch.Tensor] = []
        for stacked in rows:
            if math.prod(stacked.shape[1:]) == 0:
                self.rows2d.append(None)
                continue
            # In the gradients' own dtype, with per-tensor magnitudes: on a model with
            # millions of parameters this costs a few passes over the gradients.
            plain = stacked.detach() if stacked.requires_grad else stacked
            rows2d = plain.reshape(int(stacked.shape[0]), -1)
            diff = torch.add(rows2d[0], rows2d[second], alpha=COMBINATION).sub_(rows2d[combined])
            largest, at = diff.abs_().nan_to_num_(nan=0.0).max(dim=0)
            self.rows2d.append(rows2d)
            self._largest += [largest, at]
        self._weights = [c.reshape(int(c.shape[0]), -1).abs().sum(dim=1) for c in cots]

    def tensors(self) -> list[torch.Tensor]:
        """What :meth:`hint` needs from the device, in its order."""
        return [*self._weights, *self._largest]

    def read_hint(self) -> Hint | None:
        """:meth:`hint` on the figures of :meth:`tensors`, read to the host on their own.

        For a check with no other figures to read in the same transfer (full mode).
        """
        return self.hint(read_host(self.tensors()))

    def hint(self, values: Sequence[Sequence[float]]) -> Hint | None:
        """A hint when backward is not linear in grad_output, else None.

        ``values`` are those of :meth:`tensors`, read to the host.
        """
        n_out = len(self._weights)
        weights = [
            float(w[0] + abs(COMBINATION) * w[self.second] + w[self.combined])
            for w in values[:n_out]
        ]
        floor = self.atol * sum(weights)
        found = iter(values[n_out:])
        over_floor: list[tuple[int, float, int]] = []
        for i, rows2d in enumerate(self.rows2d):
            if rows2d is None:
                continue
            largest, at = next(found)[0], int(next(found)[0])
            if largest > floor:
                over_floor.append((i, largest, at))
        if not over_floor:
            return None  # within what atol allows: no need for the magnitudes
        trios = []
        for i, _, at in over_floor:
            rows2d = self.rows2d[i]
            assert rows2d is not None
            trio = torch.stack([rows2d[0], rows2d[self.second], rows2d[self.combined]])
            trios += [trio.abs().amax(dim=1), trio[:, at]]
        figures = iter(read_host(trios))
        worst: tuple[float, int, int, float, float] | None = None
        root_u = math.sqrt(self.unit_roundoff)
        for i, largest, k in over_floor:
            peak_a, peak_b, peak_c = next(figures)
            a, b, c = next(figures)
            over = largest - (root_u * (peak_a + abs(COMBINATION) * peak_b + peak_c) + floor)
            if over > 0 and math.isfinite(over) and (worst is None or over > worst[0]):
                worst = (over, i, k, c, a + COMBINATION * b)
        if worst is None:
            return None
        _, i, j, got, want = worst
        return linearity_hint(self.in_paths[i], unravel(j, self.shapes[i]), got, want, self.drawn)


def linearity_hint(path: str, index: tuple[int, ...], got: float, want: float, drawn: str) -> Hint:
    """The hint of a backward not linear in grad_output, at entry ``index`` of input ``path``.

    ``got`` is the gradient there for grad_output g1 - 2 g2, ``want`` g1's minus
    twice g2's; ``drawn`` says how g1 and g2 were drawn.

    Examples:
        >>> linearity_hint("x", (0,), 1.0, 3.0, "g1, g2: random").kind
        'grad_output'
    """
    return Hint(
        kind="grad_output",
        input=path,
        text=(
            f"backward is not linear in grad_output: the gradient of {path} at index "
            f"{index} is {got:.6g} for grad_output g1 - 2·g2, but g1's "
            f"minus twice g2's is {want:.6g} ({drawn}). A backward must return "
            f"J^T · grad_output: it ignores grad_output (the gradient as if grad_output were "
            f"all ones, right for a scalar loss and wrong inside a network) or transforms it "
            f"(abs, clamp, a norm). Multiply by grad_output in the backward."
        ),
    )
