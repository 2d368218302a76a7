"""Fast mode: random projections ``u^T J v`` by reverse mode, forward mode and finite differences.

A probe fails when reverse mode or forward mode (one jvp per probe, where fn
supports it: :mod:`.forward`) disagrees with the finite differences.

Its floor is torch's fast mode: one call with graph, a few perturbed
evaluations, one batched backward. Each probe is judged against the finite
differences' *own* error estimate (roundoff at step h, plus truncation from a
2h step for a probe that does not agree within roundoff), not against a
tolerance summed over all entries, which is what hides a single wrong entry
from ``torch.autograd.gradcheck(fast_mode=True)``. A failing probe is only a
detector: it is bisected down to one Jacobian entry, which is judged with the
same per-entry atol/rtol as full mode.

The projection vectors are random signs times magnitudes drawn from [1, 2):
every entry weighs at least 1 (none hides behind a small Gaussian draw), and
unequal weights keep two wrong entries from cancelling each other, which equal
±1 weights do for one probe in two.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import torch

from ..readback import read_host
from ..results import Hint, PairResult, ProbeResult
from .diagnose import input_leaf_hint, projected_factor_hint, zero_gradient_hint
from .evaluation import VmapCheck, flat_cat
from .forward import forward_ad_hint, jvp_or_note
from .jacobian import (
    central_differences,
    directional_differences,
    vjp_rows,
)
from .judging import SCALES, LinearityProbe, PairTally, combined_cotangent, judge_scales
from .numerics import element_steps, unravel
from .problem import BatchTiming, Outcome, Problem

__all__ = ["run_fast", "probe_vector", "probe_vectors", "DEFAULT_PROBES"]

# One probe by default: with weights drawn from [1, 2) it catches a wrong entry for sure and
# several only fail to show when their errors cancel to within the finite differences'
# noise, which continuous weights make as unlikely as that noise is small.
DEFAULT_PROBES: Final = 1
# Where an evaluation is this cheap, the linearity probe takes a second cotangent of its
# own (additivity as well as homogeneity) for one more row of the backward batch.
_CHEAP_CALL_SECONDS: Final = 1e-3


def probe_vector(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random signs times magnitudes in [1, 2), shaped like ``like``, in its floating dtype.

    Examples:
        >>> v = probe_vector(torch.zeros(1000), torch.Generator().manual_seed(0))
        >>> bool(((v.abs() >= 1) & (v.abs() <= 2)).all()), bool((v > 0).any() and (v < 0).any())
        (True, True)
    """
    return probe_vectors([like], gen)[0]


def probe_vectors(likes: Sequence[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """A :func:`probe_vector` for each of ``likes``, from one draw of ``gen``.

    Drawn in float64 and rounded to each tensor's dtype: the rounded vectors are the
    ones both sides of every comparison use.
    """
    sizes = [int(t.numel()) for t in likes]
    v = torch.rand(sum(sizes), generator=gen, dtype=torch.float64).mul_(2).sub_(1)
    v.add_(v.sign())  # [-1, 1) -> (-2, -1] and [1, 2)
    # one copy per device, not one per tensor: each copy onto a CUDA device makes the
    # host wait for it (on the CPU .to() hands back v itself)
    copies: dict[torch.device, torch.Tensor] = {}
    out = []
    offset = 0
    for t, n in zip(likes, sizes, strict=True):
        if t.device not in copies:
            copies[t.device] = v.to(t.device)
        part = copies[t.device][offset : offset + n].reshape(t.shape)
        if t.is_floating_point() and t.dtype != torch.float64:
            part = part.to(t.dtype)
        out.append(part)
        offset += n
    return out


def run_fast(problem: Problem, probes: int) -> Outcome:
    """Compare ``probes`` random projections three ways; bisect a failing one to its entry."""
    point, tol, seed = problem.point, problem.tol, problem.opts.seed
    xs, outs = point.xs, point.outs
    K = probes
    gen = torch.Generator().manual_seed(seed)
    # Two more rows of the same batched backward test that backward is linear in
    # grad_output: g2 (the second probe, or a draw of its own) and g1 - 2 g2.
    # The linearity probe is one or two more rows of the same backward: g1 - 2 g2 with g2
    # the second probe or, for one probe and a cheap fn, a draw of its own; else -g1 (a
    # backward that ignores grad_output or bends it, abs or clamp, fails either way).
    own_g2 = K == 1 and point.call_seconds <= _CHEAP_CALL_SECONDS
    n_cots = K + 1 if own_g2 else K
    drawn = probe_vectors([*outs * n_cots, *xs * K], gen)
    us = [drawn[j * len(outs) : (j + 1) * len(outs)] for j in range(n_cots)]
    rest = drawn[n_cots * len(outs) :]
    magnitudes = [
        torch.ones_like(x) if tol.absolute_steps else torch.clamp(x.abs(), min=1.0)
        for x in point.detached
    ]
    dirs = [
        [v.mul_(m) for v, m in zip(rest[k * len(xs) : (k + 1) * len(xs)], magnitudes, strict=True)]
        for k in range(K)
    ]
    second = 1 if n_cots > 1 else 0
    cots = [
        torch.stack([*(u[j] for u in us), combined_cotangent(us[0][j], us[second][j])])
        for j in range(len(outs))
    ]
    timing = BatchTiming(backward_rows=n_cots + 1, difference_rows=2 * K + 1)
    clock = time.perf_counter()
    with torch.enable_grad():
        rows = vjp_rows(point, cots, dense=True)
    timing.backward_seconds = time.perf_counter() - clock
    if own_g2:
        drawn_text = "g1, g2: the projection vector and one more random vector"
    elif K > 1:
        drawn_text = "g1, g2: the first two projection vectors"
    else:
        drawn_text = "g1 = g2: the projection vector"
    linearity = problem.linearity_probe(
        rows, cots, second, n_cots, f"{drawn_text}, drawn with seed={seed}"
    )
    del us[K:]
    u_flat = [flat_cat(u) for u in us]
    try:
        # Step h first: a probe that agrees within roundoff passes without the 2h step
        # (truncation error cannot make a right gradient look wrong-but-close). Only the
        # probes that do not agree pay for the 2h evaluations that estimate truncation.
        step_h = _StepH.measure(problem, dirs, rows, u_flat, timing, linearity.tensors())
    except BaseException:
        # the hint belongs to the result whatever stops the check (an output whose shape
        # changes at a perturbed point is reported, with the hints found so far)
        _insert_linearity(problem, linearity, None)
        raise
    linear = _insert_linearity(problem, linearity, step_h.extra)
    stats, per_input, eff = step_h.stats, step_h.shares, step_h.eff
    unsure = [k for k, (a, n1, err) in enumerate(stats) if not abs(a - n1) <= tol.safety * err]
    twice: dict[int, float] = {}
    if unsure:
        more, _, _ = directional_differences(point, [dirs[k] for k in unsure], tol.eps, [2.0])
        sums = [(u_flat[k] * more[2.0][j]).sum() for j, k in enumerate(unsure)]
        for k, value in zip(unsure, read_host(sums), strict=True):
            twice[k] = value[0]
    forward = step_h.forward
    probe_results: list[ProbeResult] = []
    suspects: list[int] = []
    forward_bad: list[int] = []
    for k in range(K):
        a, n1, base_err = stats[k]
        # FD error (h vs 2h, roundoff) plus the roundoff of the analytic dot products
        err = base_err + (abs(n1 - twice[k]) if k in twice else 0.0)
        tight = tol.safety * err + 1e-300
        loose = tol.atol + tol.rtol * abs(n1) + tol.safety * err
        fwd = forward[k]
        reverse_ok = abs(a - n1) <= tight and not (math.isnan(a) or math.isnan(n1))
        # u·(J v) by jvp against u·(J v) by differences and (u J)·v by vjp: a jvp that
        # agrees with neither is wrong whatever the backward does (NaN differences, an
        # input at inf, judge nothing here: the reverse-mode probe's bisection does)
        forward_ok = (
            fwd is None or math.isnan(n1) or abs(fwd - n1) <= loose or abs(fwd - a) <= tight
        )
        if not forward_ok:
            forward_bad.append(k)
        probe_results.append(
            ProbeResult(
                reverse=a,
                forward=fwd,
                numeric=n1,
                error_estimate=err,
                allowed=tight,
                passed=reverse_ok and forward_ok,
            )
        )
        if not reverse_ok:
            suspects.append(k)
    if forward_bad:
        k = forward_bad[0]
        p = probe_results[k]
        if k not in suspects:
            problem.hints.append(
                forward_ad_hint(
                    f"probe {k}: u·(J v) by jvp {p.forward:.6g}, by finite differences "
                    f"{p.numeric:.6g}, (u J)·v by vjp {p.reverse:.6g}"
                )
            )
        else:
            problem.notes.append(
                f"forward mode (jvp) disagrees with finite differences too (probe {k}: "
                f"{p.forward:.6g} against {p.numeric:.6g})"
            )
    pairs: list[PairResult] = []
    if suspects:
        k = max(
            suspects,
            key=lambda j: (
                abs(probe_results[j].reverse - probe_results[j].numeric) / probe_results[j].allowed
            ),
        )
        pair = _localise(problem, us[k], [r[k] for r in rows], k, eff[k])
        pairs.append(pair)
        if not pair.passed:
            problem.hints.extend(_leaf_hints(problem, u_flat[k], [r[k] for r in rows], eff[k]))
            probe = probe_results[k]
            if len(point.xs) == 1 and pair.worst:
                # Only one input: the projection's ratio is that input's (several inputs mix
                # their ratios in one sum).
                entry = pair.worst[0]
                factor = projected_factor_hint(
                    (probe.reverse, probe.numeric),
                    (entry.analytic, entry.numeric),
                    pair.output,
                    pair.input,
                )
                if factor is not None:
                    problem.hints.insert(0, factor)
        if pair.passed:
            problem.notes.append(
                f"{len(suspects)} of {K} projections exceeded the finite differences' "
                f"error estimate, but the entry they narrow down to is within "
                f"atol/rtol (worst |diff| {pair.max_abs_error:.3g})"
            )
    passed = linear is None and not forward_bad and (not suspects or all(p.passed for p in pairs))
    resolution = _resolution(
        point.in_paths, per_input, probe_results, tol.rtol, tol.atol, step_h.peaks
    )
    return Outcome(
        passed=passed, pairs=pairs, probes=probe_results, timing=timing, resolution=resolution
    )


def _insert_linearity(
    problem: Problem, probe: LinearityProbe, values: Sequence[Sequence[float]] | None
) -> Hint | None:
    """The linearity probe's hint, put first among the hints; None when backward is linear.

    ``values`` are those of the probe's tensors, read already; None reads them here
    (where the check stops on an exception, a failed read leaves the hint out).
    """
    try:
        if values is None:
            values = read_host(probe.tensors())
        hint = probe.hint(values)
    except Exception:
        if values is not None:
            raise
        return None  # the exception on its way out tells more
    if hint is not None:
        problem.hints.insert(0, hint)
    return hint


@dataclass
class _StepH:
    """Fast mode's figures at step h, read from the device in one copy.

    Per probe ``(u^T J v by reverse mode, by finite differences, the latter's error)``
    (:func:`_probe_sums`), each input's share of the reverse-mode values, the jvp's
    ``u^T J v`` (None where not taken), each input's largest gradient entry of the
    first probe, and the values of ``extra`` tensors read along.
    """

    stats: list[tuple[float, float, float]]
    shares: list[list[float]]
    forward: list[float | None]
    peaks: list[float]
    eff: list[list[torch.Tensor]]
    extra: list[list[float]]

    @classmethod
    def measure(
        cls,
        problem: Problem,
        dirs: list[list[torch.Tensor]],
        rows: list[torch.Tensor],
        u_flat: list[torch.Tensor],
        timing: BatchTiming,
        extra: Sequence[torch.Tensor],
    ) -> _StepH:
        """Differences along ``dirs``, the jvps and the sums, with one read where vmap agrees.

        A vmapped batch that computed another function than the plain call (checked
        in the same read) is evaluated again one point at a time, as
        :func:`~.evaluation.evaluate_rows` does.
        """
        point, tol = problem.point, problem.tol
        U = torch.stack(u_flat)
        checks: list[VmapCheck] = []
        clock = time.perf_counter()
        values, rounds, eff = directional_differences(point, dirs, tol.eps, [1.0], checks)
        timing.difference_seconds = time.perf_counter() - clock
        table, shares = _probe_sums(eff, rows, U, values[1.0], rounds[1.0], problem.u_in)
        forward = _forward_probes(problem, u_flat, eff)
        taken = [f for f in forward if f is not None]
        # per input the first probe's gradient (vjp rows come detached); numel from the
        # shape, as r[0] would be one more operator call
        peaks = [r[0].abs().max() for r in rows if math.prod(r.shape[1:])]
        flags = [check.equal for check in checks]
        read = read_host([table, shares, *taken, *peaks, *extra, *flags])
        if not all(
            c.confirm(f[0]) for c, f in zip(checks, read[len(read) - len(flags) :], strict=True)
        ):
            clock = time.perf_counter()
            values, rounds, eff = directional_differences(point, dirs, tol.eps, [1.0])
            timing.difference_seconds += time.perf_counter() - clock
            table, shares = _probe_sums(eff, rows, U, values[1.0], rounds[1.0], problem.u_in)
            read[:2] = read_host([table, shares])
        K, L = len(dirs), len(rows)
        flat_table, flat_shares = read[0], read[1]
        stats = [
            (flat_table[3 * k], flat_table[3 * k + 1], flat_table[3 * k + 2]) for k in range(K)
        ]
        by_input = [flat_shares[i * K : (i + 1) * K] for i in range(L)]
        got = iter(read[2 : 2 + len(taken)])
        fwd = [next(got)[0] if f is not None else None for f in forward]
        found = iter(read[2 + len(taken) : 2 + len(taken) + len(peaks)])
        peak = [next(found)[0] if math.prod(r.shape[1:]) else 0.0 for r in rows]
        start = 2 + len(taken) + len(peaks)
        return cls(stats, by_input, fwd, peak, eff, read[start : start + len(extra)])


def _resolution(
    paths: Sequence[str],
    per_input: Sequence[Sequence[float]],
    probes: Sequence[ProbeResult],
    rtol: float,
    atol: float,
    peaks: Sequence[float],
) -> list[tuple[str, float]]:
    """Per input leaf: the smallest uniform relative error of its gradient the probes catch.

    Scaling input ``i``'s gradient by ``1 + d`` moves probe ``k``'s reverse-mode value
    by ``d a_ik`` (``a_ik`` that input's share of it): the probe fails once that
    exceeds its allowance. The entry it narrows down to is then judged with atol and
    rtol: ``rtol + atol / |entry|``, the entry taken as half the largest entry of the
    probe's gradient ``J^T u`` (``|u| < 2``).
    """
    out = []
    for i, path in enumerate(paths):
        best = math.inf
        for k, probe in enumerate(probes):
            share = abs(per_input[i][k])
            if share > 0:
                best = min(best, probe.allowed / share)
        entry = rtol + 2 * atol / peaks[i] if peaks[i] > 0 else math.inf
        if math.isfinite(best) and math.isfinite(entry):
            out.append((path, max(best, entry)))
    return out


def _leaf_hints(
    problem: Problem, u_flat: torch.Tensor, g_rows: list[torch.Tensor], w: list[torch.Tensor]
) -> list[Hint]:
    """Which input leaves a failing probe is wrong on: the probe taken one leaf at a time.

    ``u^T J_i w_i`` by reverse mode (the rows in hand) against finite differences
    of ``w`` restricted to leaf ``i``, each at steps h and 2h: ``4 L`` more
    evaluations in one batch for ``L`` leaves, no more backward passes. A leaf
    whose reverse-mode gradient is exactly zero while its difference is not
    was cut from the graph. With one leaf there is nothing to tell apart but that.
    """
    point, tol = problem.point, problem.tol
    xs = point.xs
    output = problem.out_paths[0] if len(problem.out_paths) == 1 else None
    if len(xs) == 1:  # the probe itself is the leaf's: no evaluation to add
        cut = not bool(g_rows[0].any())
        return [zero_gradient_hint(output or "the output", point.in_paths[0])] if cut else []
    leaves = [
        [e if j == i else torch.zeros_like(e) for j, e in enumerate(w)] for i in range(len(xs))
    ]
    values, rounds, eff = directional_differences(point, leaves, tol.eps, [1.0, 2.0])
    u = u_flat.cpu()
    wrong: list[str] = []
    zero: list[str] = []
    for i, path in enumerate(point.in_paths):
        g = g_rows[i].reshape(-1).to(torch.float64).cpu()
        e = eff[i][i].reshape(-1).to(torch.float64).cpu()
        analytic = float((g * e).sum())
        numeric = float((u * values[1.0][i].cpu()).sum())
        twice = float((u * values[2.0][i].cpu()).sum())
        noise = float((u.abs() * rounds[1.0][i].cpu()).sum()) + abs(numeric - twice)
        noise += 8 * problem.u_in * float((g * e).abs().sum())
        diff = abs(analytic - numeric)
        if diff > tol.safety * noise and diff > tol.atol + tol.rtol * abs(numeric):
            wrong.append(path)
            if not bool(g.any()):
                zero.append(path)
    hints = [zero_gradient_hint(output or "the output", leaf) for leaf in zero]
    by_leaf = input_leaf_hint(point.in_paths, wrong, output)
    if by_leaf is not None:
        hints.append(by_leaf)
    return hints


def _probe_sums(
    eff: list[list[torch.Tensor]],
    rows: list[torch.Tensor],
    U: torch.Tensor,
    values: torch.Tensor,
    rounds: torch.Tensor,
    u_in: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per probe: ``u^T J v`` by reverse mode, by finite differences, and the latter's error.

    A (probes, 3) tensor on the device, and each input's share of the reverse-mode
    values (inputs x probes).

    The error adds the finite differences' roundoff and the roundoff of the reverse-mode
    dot product (8 u times the sum of its terms' magnitudes).
    """
    K = len(eff)
    sums = []  # per input: the reverse-mode sums and the magnitudes of their terms
    for i, g in enumerate(rows):
        v = eff[0][i].reshape(1, -1) if K == 1 else torch.stack([e[i] for e in eff]).reshape(K, -1)
        term = v.mul(g[:K].reshape(K, -1))
        # accumulated in float64: float32 terms of a large model would lose more in
        # their sum than the 8 u the error estimate allows
        both = [term.sum(dim=1, dtype=torch.float64), term.abs_().sum(dim=1, dtype=torch.float64)]
        sums.append(torch.stack(both).to(U.device))
    analytic, scale = sums[0] if len(sums) == 1 else torch.stack(sums).sum(dim=0)
    numeric = (U * values).sum(dim=1)
    error = (U.abs() * rounds).sum(dim=1) + 8 * u_in * scale
    table = torch.stack([analytic, numeric, error]).T
    shares = torch.stack([part[0] for part in sums])
    return table, shares


def _forward_probes(
    problem: Problem, u_flat: Sequence[torch.Tensor], tangents: Sequence[Sequence[torch.Tensor]]
) -> list[torch.Tensor | None]:
    """``u_k^T J w_k`` by one jvp per probe (about a forward pass each); None where not taken.

    Each a 0-dim tensor on the outputs' device, for the caller to read with the rest.
    """
    found: list[torch.Tensor | None] = []
    for u, w in zip(u_flat, tangents, strict=True):
        jv = jvp_or_note(problem, w)
        if jv is None:
            return found + [None] * (len(tangents) - len(found))
        found.append((u * jv).sum())
    return found


def _masked(
    vec: torch.Tensor, lo: int, hi: int, like: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """``vec`` (flat, float64) restricted to ``[lo, hi)``, split and shaped like ``like``."""
    parts = []
    offset = 0
    for t in like:
        n = int(t.numel())
        seg = torch.zeros(n, dtype=torch.float64)
        s, e = max(lo, offset), min(hi, offset + n)
        if s < e:
            seg[s - offset : e - offset] = vec[s:e]
        # in t's dtype: a float64 direction would promote a float32 input to float64
        dtype = t.dtype if t.is_floating_point() else torch.float64
        parts.append(seg.reshape(t.shape).to(device=t.device, dtype=dtype))
        offset += n
    return parts


def _localise(
    problem: Problem,
    u: list[torch.Tensor],
    g_rows: list[torch.Tensor],
    k: int,
    w: list[torch.Tensor],
) -> PairResult:
    """Bisect a failing probe down to one Jacobian entry and judge that entry.

    Inputs first (finite differences of ``u^T J v_S`` on halves ``S``), then
    outputs (``[J^T u_S]_j`` by reverse mode against the numeric column).
    About ``4 log2(n) + 2`` evaluations and ``log2(m)`` backward passes.
    """
    point, tol = problem.point, problem.tol
    xs, outs = point.xs, point.outs
    u_flat = flat_cat(u).cpu()
    g = torch.cat([r.reshape(-1).to(torch.float64).cpu() for r in g_rows])
    w_flat = torch.cat([t.reshape(-1).to(torch.float64).cpu() for t in w])
    sizes = [int(x.numel()) for x in xs]

    lo, hi = 0, int(w_flat.numel())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        halves = [(lo, mid), (mid, hi)]
        dirs = [_masked(w_flat, a, b, xs) for a, b in halves]
        vals, rnds, _ = directional_differences(point, dirs, tol.eps, [1.0])
        scores = []
        for h, (a, b) in enumerate(halves):
            analytic = float((g[a:b] * w_flat[a:b]).sum())
            numeric = float((u_flat * vals[1.0][h].cpu()).sum())
            rnd = float((u_flat.abs() * rnds[1.0][h].cpu()).sum())
            scale = float((g[a:b] * w_flat[a:b]).abs().sum())
            noise = rnd + 8 * problem.u_in * scale + 1e-300
            scores.append(abs(analytic - numeric) / noise)
        lo, hi = halves[0] if scores[0] >= scores[1] else halves[1]
    leaf, local = 0, lo
    while local >= sizes[leaf]:
        local -= sizes[leaf]
        leaf += 1
    x = xs[leaf]
    steps = element_steps(x, tol.eps, absolute=tol.absolute_steps).to(x.device)
    coords = torch.tensor([local], device=x.device)
    multipliers = [m for pair in SCALES for m in pair]
    fd = central_differences(point, leaf, coords, steps, multipliers)
    col_vals = {c: v[0].cpu() for c, v in fd.values.items()}
    col_rounds = {c: r[0].cpu() for c, r in fd.roundoff.items()}
    column = col_vals[1.0]
    col_err = col_rounds[1.0] + (column - col_vals[2.0]).abs()
    col_err = torch.where(torch.isnan(col_err), 0.0, col_err)

    # outputs: bisect with reverse mode on masked cotangents
    lo, hi = 0, int(u_flat.numel())
    with torch.enable_grad():
        while hi - lo > 1:
            mid = (lo + hi) // 2
            halves = [(lo, mid), (mid, hi)]
            split = [_masked(u_flat, a, b, outs) for a, b in halves]
            cots = [torch.stack([c[j] for c in split]).to(outs[j].dtype) for j in range(len(outs))]
            grads = vjp_rows(point, cots)
            scores = []
            for h, (a, b) in enumerate(halves):
                analytic = float(grads[leaf][h].reshape(-1)[local])
                numeric = float((u_flat[a:b] * column[a:b]).sum())
                err = float((u_flat[a:b].abs() * col_err[a:b]).sum()) + 1e-300
                scores.append(abs(analytic - numeric) / err)
            lo, hi = halves[0] if scores[0] >= scores[1] else halves[1]
        out_leaf, out_local = 0, lo
        while out_local >= int(outs[out_leaf].numel()):
            out_local -= int(outs[out_leaf].numel())
            out_leaf += 1
        one_hot = [torch.zeros((1, *o.shape), dtype=o.dtype, device=o.device) for o in outs]
        one_hot[out_leaf].reshape(-1)[out_local] = 1.0
        row = vjp_rows(point, one_hot)
    analytic_entry = torch.tensor([[float(row[leaf][0].reshape(-1)[local])]])
    numeric_entry, allowed, _ = judge_scales(
        tol,
        analytic_entry,
        {c: v[lo : lo + 1].reshape(1, 1) for c, v in col_vals.items()},
        {c: r[lo : lo + 1].reshape(1, 1) for c, r in col_rounds.items()},
    )
    out_path = problem.out_paths[out_leaf]
    tally = PairTally(out_path, point.in_paths[leaf], tuple(outs[out_leaf].shape), tuple(x.shape))
    out_index = unravel(out_local, tuple(outs[out_leaf].shape))
    in_index = unravel(local, tuple(x.shape))
    tally.add(0, 0, analytic_entry, numeric_entry, allowed)
    pair = tally.result()
    worst = tuple(
        dataclasses.replace(e, output_index=out_index, input_index=in_index) for e in pair.worst
    )
    problem.notes.append(
        f"fast mode narrowed probe {k} down by bisection to d {out_path}{list(out_index)} / "
        f"d {point.in_paths[leaf]}{list(in_index)}"
    )
    return dataclasses.replace(pair, worst=worst)
