"""Full mode: every Jacobian entry by reverse mode against central differences.

The Jacobian is judged in blocks, never refused for its size. Rows come from
batched backward passes (as many as the budget holds at once: all of them for
any Jacobian up to half of ``max_memory``), columns from batched finite
differences, one column block at a time; each block is judged as it comes and
only the counts, the worst entries and a pooled error map stay. Suspect columns
are re-judged at smaller steps (:data:`~.judging.SCALES`). When the whole
Jacobian fits twice over, it is also kept for the hints of :mod:`.diagnose`.
Where fn supports forward mode, one jvp along a random ``v`` is compared with
``J v`` summed from the numeric and the reverse-mode blocks (:mod:`.forward`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..results import Hint
from .diagnose import Block, diagnose
from .fast import probe_vectors
from .forward import forward_ad_hint, jvp_or_note
from .jacobian import Point, central_differences, reverse_rows, vjp_rows
from .judging import SCALES, PairTally, combined_cotangent, judge_scales
from .memory import format_bytes
from .numerics import allowed_error, element_steps, unravel
from .problem import Outcome, Problem
from .tolerances import Tolerances

__all__ = ["run_full"]

_REFINE_MULTIPLIERS = tuple(m for pair in SCALES for m in pair if m != 1.0)


def run_full(problem: Problem) -> Outcome:
    """Judge every entry of the Jacobian; hints from :func:`.diagnose` where some fail."""
    point, tol = problem.point, problem.tol
    linear = _linearity_probe(problem)
    if linear is not None:
        problem.hints.append(linear)
    M, N = point.n_out, point.n_in
    budget = point.budget
    out_shapes = [tuple(o.shape) for o in point.outs]
    starts = [0]
    for shape in out_shapes:
        starts.append(starts[-1] + math.prod(shape))
    # Analytic rows take up to half the budget; the other half is for the batches.
    rows_per_block = max(1, min(M, (budget.available // 2) // max(1, N * 8)))
    keep = rows_per_block == M and budget.available // 2 >= M * N * 17
    tallies = {
        (k, i): PairTally(problem.out_paths[k], point.in_paths[i], out_shapes[k], tuple(x.shape))
        for i, x in enumerate(point.xs)
        for k in range(len(out_shapes))
    }
    forward = _ForwardTally.start(problem, M)
    kept_numeric: list[torch.Tensor] = []
    kept_mismatch: list[torch.Tensor] = []
    analytic: list[torch.Tensor] = []
    nonsmooth = 0
    # kept for the hints: analytic (8 bytes an entry), numeric (8) and the mismatch mask (1)
    with budget.holding(M * N * 17 if keep else 0):
        if keep:
            kept_numeric = [torch.empty(M, int(x.numel()), dtype=torch.float64) for x in point.xs]
            kept_mismatch = [torch.empty(M, int(x.numel()), dtype=torch.bool) for x in point.xs]
        for r0 in range(0, M, rows_per_block):
            r1 = min(M, r0 + rows_per_block)
            rows = None if rows_per_block == M else slice(r0, r1)
            with budget.holding(0 if keep else (r1 - r0) * N * 8):
                analytic = reverse_rows(point, r0, r1)
                for i, x in enumerate(point.xs):
                    steps = element_steps(x, tol.eps, absolute=tol.absolute_steps).to(x.device)
                    n_i = int(x.numel())
                    # per column: its outputs in float64 (quotient, roundoff, the batch's
                    # rows) and the judging temporaries of the kept rows
                    per_column = 4 * M * 8 + 8 * (r1 - r0) * 8
                    width = max(1, min(n_i, (budget.available // 2) // per_column))
                    for c0 in range(0, n_i, width):
                        c1 = min(n_i, c0 + width)
                        coords = torch.arange(c0, c1, device=x.device)
                        numeric, allowed, kinked = _numeric_block(
                            point, tol, i, coords, steps, rows, analytic[i][:, c0:c1]
                        )
                        nonsmooth += kinked
                        if forward is not None:
                            forward.add(i, r0, r1, c0, c1, analytic[i], numeric, allowed)
                        for k in range(len(out_shapes)):
                            a, b = max(r0, starts[k]), min(r1, starts[k + 1])
                            if a >= b:
                                continue
                            mismatch = tallies[k, i].add(
                                a - starts[k],
                                c0,
                                analytic[i][a - r0 : b - r0, c0:c1],
                                numeric[a - r0 : b - r0],
                                allowed[a - r0 : b - r0],
                            )
                            if keep:
                                kept_numeric[i][a:b, c0:c1] = numeric[a - r0 : b - r0]
                                kept_mismatch[i][a:b, c0:c1] = mismatch
        pairs = [
            tallies[k, i].result() for i in range(len(point.xs)) for k in range(len(out_shapes))
        ]
        if not all(p.passed for p in pairs):
            if keep:
                blocks = [
                    Block(
                        output=problem.out_paths[k],
                        input=point.in_paths[i],
                        output_shape=out_shapes[k],
                        input_shape=tuple(x.shape),
                        analytic=analytic[i][starts[k] : starts[k + 1]],
                        numeric=kept_numeric[i][starts[k] : starts[k + 1]],
                        mismatch=kept_mismatch[i][starts[k] : starts[k + 1]],
                        input_values=x.detach().reshape(-1).to(torch.float64).cpu(),
                    )
                    for i, x in enumerate(point.xs)
                    for k in range(len(out_shapes))
                ]
                problem.hints.extend(diagnose(blocks))
            else:
                problem.notes.append(
                    f"the Jacobian ({M:,} x {N:,} entries) is too large to keep for the "
                    f"hints that name a pattern (factor, sign, transposition) within "
                    f"max_memory; the mismatches above are complete"
                )
            if any(t.nan_numeric for t in tallies.values()):
                problem.hints.append(_DOMAIN_HINT)
    if nonsmooth:
        problem.notes.append(
            f"{nonsmooth} Jacobian entries are not smooth within eps of the input (finite "
            f"differences at eps and 2*eps disagree); they were judged with that larger "
            f"error estimate"
        )
    if rows_per_block < M:
        blocks_n = -(-M // rows_per_block)
        problem.notes.append(
            f"the Jacobian ({M:,} x {N:,} entries, {format_bytes(M * N * 8)} in float64) "
            f"does not fit half of max_memory={budget.limit:,}: it was judged in {blocks_n} "
            f"blocks of {rows_per_block:,} output rows, with finite differences evaluated "
            f"once per block"
        )
    forward_ok = forward is None or forward.judge(problem, starts, all(p.passed for p in pairs))
    passed = linear is None and forward_ok and all(p.passed for p in pairs)
    several = len(out_shapes) > 1
    resolution = [
        (f"{t.output} / {t.input}" if several else t.input, t.resolution)
        for t in tallies.values()
        if t.total and t.resolution < float("inf")
    ]
    return Outcome(passed=passed, pairs=pairs, resolution=resolution)


_DOMAIN_HINT = Hint(
    kind="domain",
    text=(
        "finite differences gave NaN: x ± eps leaves the function's domain (log/sqrt near "
        "0, a boundary). Move the inputs away from the boundary or pass a smaller eps."
    ),
)


@dataclass
class _ForwardTally:
    """``J v`` for one random ``v``: by jvp, and summed from the blocks by differences and vjp.

    The numeric and reverse-mode columns full mode judges anyway give ``J v``
    without one more evaluation; only the jvp is taken (about one forward pass).
    """

    v: list[torch.Tensor]
    jvp: torch.Tensor
    numeric: torch.Tensor
    allowed: torch.Tensor
    reverse: torch.Tensor

    @classmethod
    def start(cls, problem: Problem, rows: int) -> _ForwardTally | None:
        """The jvp along a random ``v`` drawn with the check's seed; None where fn has none."""
        xs = problem.point.xs
        v = probe_vectors(xs, torch.Generator().manual_seed(problem.opts.seed + 1))
        jv = jvp_or_note(problem, v)
        if jv is None:
            return None
        flat = [t.detach().reshape(-1).to(torch.float64).cpu() for t in v]
        zeros = [torch.zeros(rows, dtype=torch.float64) for _ in range(3)]
        # full mode judges its blocks on the CPU, where the tally adds them up
        return cls(flat, jv.cpu(), *zeros)

    def add(
        self,
        leaf: int,
        r0: int,
        r1: int,
        c0: int,
        c1: int,
        analytic: torch.Tensor,
        numeric: torch.Tensor,
        allowed: torch.Tensor,
    ) -> None:
        """Columns ``c0:c1`` of input ``leaf`` (rows ``r0:r1``) into the three sums."""
        w = self.v[leaf][c0:c1]
        self.numeric[r0:r1] += numeric @ w
        self.allowed[r0:r1] += allowed @ w.abs()
        self.reverse[r0:r1] += analytic[:, c0:c1] @ w

    def judge(self, problem: Problem, starts: list[int], reverse_passed: bool) -> bool:
        """Whether the jvp agrees with differences or vjp entry by entry; a hint where not."""
        off_numeric = (self.jvp - self.numeric).abs()
        # a jvp that agrees with neither is wrong whatever the backward does
        bad = (off_numeric > self.allowed) & ((self.jvp - self.reverse).abs() > self.allowed)
        if not bool(bad.any()):
            return True
        ratio = torch.where(bad, off_numeric / (self.allowed + 1e-300), -1.0)
        row = int(torch.argmax(ratio))
        k = max(j for j in range(len(starts) - 1) if starts[j] <= row)
        shape = tuple(problem.point.outs[k].shape)
        where = f"{problem.out_paths[k]}{list(unravel(row - starts[k], shape))}"
        figures = (
            f"{int(bad.sum())} of {bad.numel()} output entries along a random v; worst at "
            f"{where}: J v by jvp {float(self.jvp[row]):.6g}, by finite differences "
            f"{float(self.numeric[row]):.6g}, by the vjp rows {float(self.reverse[row]):.6g}"
        )
        if reverse_passed:
            problem.hints.append(forward_ad_hint(figures))
        else:
            text = "forward mode (jvp) disagrees with finite differences too"
            problem.notes.append(f"{text} ({figures})")
        return False


def _linearity_probe(problem: Problem) -> Hint | None:
    """Backward linear in grad_output, by three random grad_outputs g1, g2, g1 - 2 g2.

    Unit cotangents cannot show a backward that ignores grad_output (right for a
    scalar loss, where grad_output is 1, wrong inside a network) or bends it
    (abs, clamp): random ones can.
    """
    seed = problem.opts.seed
    gen = torch.Generator().manual_seed(seed)
    outs = problem.point.outs
    g1 = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
    g2 = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outs]
    cots = [
        torch.stack([a, b, combined_cotangent(a, b)]).to(o.device)
        for a, b, o in zip(g1, g2, outs, strict=True)
    ]
    with torch.enable_grad():
        rows = vjp_rows(problem.point, cots)
    drawn = f"g1, g2: two random grad_outputs drawn with seed={seed}"
    return problem.linearity_probe(rows, cots, 1, 2, drawn).read_hint()


def _numeric_block(
    point: Point,
    tol: Tolerances,
    leaf: int,
    coords: torch.Tensor,
    steps: torch.Tensor,
    rows: slice | None,
    analytic: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Numeric columns ``coords`` of input ``leaf`` and their allowances, suspects re-judged.

    A column whose entries disagree with ``analytic`` at step h is evaluated
    again at 2h and at smaller steps; each entry takes the first scale that
    agrees within its own error estimate.
    """
    fd = central_differences(point, leaf, coords, steps, [1.0], rows)
    numeric = fd.values[1.0].T.cpu()
    err = fd.roundoff[1.0].T.cpu()
    allowed = allowed_error(numeric, err, atol=tol.atol, rtol=tol.rtol, safety=tol.safety)
    suspect = ((analytic - numeric).abs() > allowed) | torch.isnan(numeric) | torch.isnan(analytic)
    cols = suspect.any(dim=0).nonzero().reshape(-1)
    if not cols.numel():
        return numeric, allowed, 0
    more = central_differences(
        point, leaf, coords[cols.to(coords.device)], steps, _REFINE_MULTIPLIERS, rows
    )
    vals = {c: v.T.cpu() for c, v in more.values.items()}
    rounds = {c: r.T.cpu() for c, r in more.roundoff.items()}
    vals[1.0] = numeric[:, cols]
    rounds[1.0] = err[:, cols]
    best_n, best_allowed, kinked = judge_scales(tol, analytic[:, cols], vals, rounds)
    numeric[:, cols] = best_n
    allowed[:, cols] = best_allowed
    return numeric, allowed, kinked
