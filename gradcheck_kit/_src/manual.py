"""check_matches_manual / assert_matches_manual: a hand-written derivative, three ways.

A user's own derivative — ``manual_grad(*inputs)`` for a scalar ``fn``, or
``manual_vjp(grad_output, *inputs)`` for any ``fn`` — is compared entry by entry
with ``fn``'s autograd gradient and with finite differences of ``fn``. When the
three disagree, the one that disagrees with the other two is named: that is
where the bug is. Above a few thousand input entries (or in ``mode="fast"``) the
finite differences are taken along a few random directions instead of per entry,
so that a model's hand-written gradient costs a constant number of evaluations.
Finite differences (with their error estimates and the core's multi-scale
re-judging of suspect entries), reverse-mode rows, tolerances, leave-no-trace
and hints all come from the core checker.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .engine.diagnose import Block, diagnose
from .engine.evaluation import evaluation_notes
from .engine.fast import probe_vector
from .engine.jacobian import (
    Point,
    central_differences,
    directional_differences,
    vjp_rows,
)
from .engine.judging import SCALES, judge_scales
from .engine.numerics import allowed_error, element_steps, unravel
from .engine.options import CheckOptions, ManualOptions
from .engine.precision import tf32_note
from .engine.run import (
    CheckRun,
    captured_objects,
    close_repeat,
    first_call,
    fn_name,
    repeat_at_point,
)
from .engine.tolerances import machine_eps, resolve_tolerances
from .engine.trees import InputTree, describe_tensor
from .errors import InvalidArgument, UnsupportedInputError
from .manual_calls import ManualDerivative
from .manual_judging import (
    SUBJECT,
    WORST_KEPT,
    ThreeWay,
    agreement,
    block_pair,
    classify,
    close,
    dot,
    entry_excess,
    odd_one_out_hint,
    ratio_hint,
    reword,
    squared_norm,
    weighted,
)
from .raising import Msg, fail_unless_passed, gradient_error
from .results import Hint, ManualCheckResult, ManualPairResult, ThreeWayElement
from .serial import one_at_a_time
from .validation import check_callable, check_keywords

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["check_matches_manual", "assert_matches_manual"]

# "auto" calls manual_vjp once per output entry (the whole Jacobian) up to this many
# outputs; beyond, it compares n_probes random projections of the gradient instead.
_AUTO_FULL_MAX_OUTPUTS = 64
# "auto" projects the inputs too above this many input entries: the full row of finite
# differences (2 n evaluations) is what makes a model's hand-written gradient uncheckable.
_AUTO_FULL_MAX_INPUTS = 4096
_DEFAULT_PROBES = 4


class _ManualCheck(CheckRun[ManualCheckResult]):
    """One three-way comparison over prepared inputs."""

    def __init__(
        self,
        fn: Callable[..., Any],
        manual: Callable[..., Any],
        interface: str,
        tree: InputTree,
        opts: CheckOptions,
        *,
        name: str,
        preserve: Sequence[Any],
    ) -> None:
        super().__init__(fn, tree, opts, name=name, check="check_matches_manual", preserve=preserve)
        self.manual = manual
        self.interface = interface
        self.what = "manual_grad" if interface == "grad" else "manual_vjp"

    # -- set-up ---------------------------------------------------------------------------
    def _run(self, tf32_switched: list[str]) -> ManualCheckResult:
        call = first_call(self.fn, self.tree, self.opts, self.prepare_rng, self.notes)
        ev, xs, leaves, outs = call.ev, call.xs, call.leaves, call.outs
        note = tf32_note(tf32_switched, xs)
        if note:
            self.notes.append(note)
        self.checked, self.base = call.checked, call.base
        if any(leaf.path.endswith((".real", ".imag")) for leaf in call.all_leaves):
            raise UnsupportedInputError(
                "fn returns a complex tensor; hand-written derivatives of complex outputs are "
                "not supported yet. Return the real and imaginary parts as two real outputs."
            )
        self.derivative = ManualDerivative(
            self.manual, self.interface, self.tree, call, self.prepare_rng, self.notes
        )
        self.out_paths = ev.out_paths
        n_out = sum(int(o.numel()) for o in outs)
        if self.interface == "grad" and (len(outs) != 1 or n_out != 1):
            shapes = ", ".join(f"{leaf.path}: {describe_tensor(leaf.tensor)}" for leaf in leaves)
            raise InvalidArgument(
                f"manual_grad(*inputs) gives the gradient of a scalar, but fn returns {shapes}. "
                f"For a vector-valued fn pass manual_vjp=lambda grad_output, *inputs: ... "
                f"(the vector-Jacobian product J^T grad_output) instead of manual_grad."
            )
        dtypes = [x.dtype for x in xs] + [o.dtype for o in outs]
        worst_dtype = max(dtypes, key=machine_eps)
        self.tol = resolve_tolerances(
            worst_dtype, eps=self.opts.eps, atol=self.opts.atol, rtol=self.opts.rtol
        )
        if call.nothing_to_check is not None:
            # no entry to compare, as torch.autograd.gradcheck says of empty Jacobians
            self.notes.insert(0, f"nothing to check: {call.nothing_to_check}")
            return self._result(passed=True, status="empty", odd_one_out=None, evaluations=ev.calls)
        self.u_out = max(machine_eps(o.dtype) for o in outs)
        self.dtype_name = str(worst_dtype).removeprefix("torch.")
        repeat, point = repeat_at_point(
            call, self.opts, self.prepare_rng, self.notes, 2 * (self.opts.n_probes or 4)
        )
        if not close_repeat(point.reference, repeat.values, self.u_out):
            return self._nondeterministic(point.reference, repeat.values)

        n_in = sum(int(x.numel()) for x in xs)
        requested = self.opts.mode
        # Above the threshold the full row of finite differences (2 n evaluations) is what
        # makes a model's hand-written gradient uncheckable: project the inputs too.
        self.projected = requested == "fast" or (
            requested == "auto" and n_in > _AUTO_FULL_MAX_INPUTS
        )
        if self.projected:
            self.mode = "fast"
        elif self.interface == "grad" or requested == "full":
            self.mode = "full"
        else:
            self.mode = "full" if n_out <= _AUTO_FULL_MAX_OUTPUTS else "fast"
        gen = torch.Generator().manual_seed(self.opts.seed)
        k = self.opts.n_probes or _DEFAULT_PROBES
        if self.mode == "full":
            U = torch.eye(n_out, dtype=torch.float64)
        elif self.interface == "grad":
            # a scalar output: the only cotangent is 1, the same for every probe
            U = torch.ones(k, 1, dtype=torch.float64)
        else:
            signs = torch.randint(0, 2, (k, n_out), generator=gen)
            U = signs.to(torch.float64) * 2 - 1
        pairs = self._project(point, U, gen) if self.projected else self._compare(point, U)
        self.notes.extend(evaluation_notes(ev))
        passed = all(p.passed for p in pairs)
        totals = {k: sum(p.counts[k] for p in pairs) for k in ("manual", "autograd", "numeric")}
        totals["none"] = sum(p.all_differ for p in pairs)
        odd = None if passed else max(totals, key=lambda k: totals[k])
        if odd is not None:
            self.hints.insert(0, odd_one_out_hint(pairs, odd))
        return self._result(
            passed=passed,
            status="passed" if passed else "mismatch",
            odd_one_out=odd,
            pairs=tuple(pairs),
            evaluations=ev.calls + self.derivative.calls,
        )

    def _result(self, **kw: Any) -> ManualCheckResult:
        return ManualCheckResult(**self.settings(), interface=self.interface, **kw)

    def _nondeterministic(self, ref: torch.Tensor, again: torch.Tensor) -> ManualCheckResult:
        diff = (ref - again).abs()
        diff = torch.where(torch.isnan(diff), math.inf, diff)
        text = (
            f"fn returned different outputs for the same inputs (largest difference "
            f"{float(diff.max()):.3g}): it draws random numbers or keeps state between calls, "
            f"so finite differences cannot be compared with it. "
        )
        if self.opts.rng == "replay":
            text += "Even with the RNG state replayed: it depends on something besides its inputs."
        else:
            text += "Pass rng='replay' to give every evaluation the same RNG state."
        self.hints.insert(0, Hint(kind="nondeterministic", text=text))
        return self._result(passed=False, status="nondeterministic", odd_one_out=None)

    # -- the three gradients --------------------------------------------------------------
    def _compare(self, point: Point, U: torch.Tensor) -> list[ManualPairResult]:
        tol = self.tol
        xs, outs = point.xs, point.outs
        manual = self.derivative.rows(outs, U)
        cots = []
        offset = 0
        for o in outs:
            m = int(o.numel())
            block = U[:, offset : offset + m].reshape(-1, *o.shape)
            cots.append(block.to(dtype=o.dtype, device=o.device))
            offset += m
        with torch.enable_grad():
            rows = vjp_rows(point, cots)
        pairs: list[ManualPairResult] = []
        absU = U.abs()
        for i, x in enumerate(xs):
            n_i = int(x.numel())
            A = rows[i].reshape(-1, n_i).to(torch.float64).cpu()
            Mn = manual[i]
            steps = element_steps(x, tol.eps).to(x.device)
            coords = torch.arange(n_i, device=x.device)
            fd = central_differences(point, i, coords, steps, [1.0])
            N = weighted(U, fd.values[1.0].T.cpu())
            err = weighted(absU, fd.roundoff[1.0].T.cpu())
            allowed = allowed_error(N, err, atol=tol.atol, rtol=tol.rtol, safety=tol.safety)
            num_m, num_a = N.clone(), N.clone()
            al_m, al_a = allowed.clone(), allowed.clone()
            suspect = ~(close(Mn, N, allowed) & close(A, N, allowed))
            cols = suspect.any(dim=0).nonzero().reshape(-1)
            if cols.numel():
                # re-judge suspect columns at smaller steps, as the core does, once for each
                # of the two derivatives: each is right if it agrees at some scale
                multipliers = [m for pair in SCALES for m in pair if m != 1.0]
                fd2 = central_differences(point, i, cols.to(x.device), steps, multipliers)
                vals = {c: weighted(U, v.T.cpu()) for c, v in fd2.values.items()}
                rounds = {c: weighted(absU, r.T.cpu()) for c, r in fd2.roundoff.items()}
                vals[1.0], rounds[1.0] = N[:, cols], err[:, cols]
                n_m, a_m, _ = judge_scales(tol, Mn[:, cols], vals, rounds)
                n_a, a_a, _ = judge_scales(tol, A[:, cols], vals, rounds)
                num_m[:, cols], al_m[:, cols] = n_m, a_m
                num_a[:, cols], al_a[:, cols] = n_a, a_a
            judged = (num_m, al_m), (num_a, al_a)
            three = agreement(Mn, A, N, judged, close(Mn, num_m, al_m), close(A, num_a, al_a))
            pairs += self._pairs(i, x, outs, three)
        return pairs

    # -- fast mode over the inputs --------------------------------------------------------
    # Probe k compares one number three ways: u_k^T J v_k by the user's derivative (dotted
    # with v_k), by autograd and by a directional finite difference. Rademacher directions
    # weigh every input entry, so one wrong entry moves every probe, and the cost is 2 K
    # evaluations of fn (2 more per probe the first step leaves unsure), whatever n is.
    # Your derivative and autograd are whole vectors, though: they are also compared entry
    # by entry with full mode's atol/rtol, and the entries where they differ most are
    # judged by their own finite differences, so a wrong entry is named with its index.
    def _project(
        self, point: Point, U: torch.Tensor, gen: torch.Generator
    ) -> list[ManualPairResult]:
        tol = self.tol
        xs, outs = point.xs, point.outs
        K = int(U.shape[0])
        u_in = max(machine_eps(x.dtype) for x in xs)
        # steps relative to each entry's magnitude (at least 1), as the core's fast mode
        magnitudes = [torch.clamp(x.detach().abs(), min=1.0) for x in xs]
        dirs = [[probe_vector(m, gen).mul_(m) for m in magnitudes] for _ in range(K)]
        del magnitudes
        # a gradient is the same for every probe: one call; a vjp is called once per u_k
        if self.interface == "grad":
            manual = [self.derivative.once(outs, U[0])] * K
        else:
            manual = [self.derivative.once(outs, U[k]) for k in range(K)]
        n_rows = 1 if self.interface == "grad" else K
        cots = []
        offset = 0
        for o in outs:
            m = int(o.numel())
            block = U[:n_rows, offset : offset + m].reshape(n_rows, *o.shape)
            cots.append(block.to(dtype=o.dtype, device=o.device))
            offset += m
        with torch.enable_grad():
            rows = vjp_rows(point, cots)
        autograd = [[r[min(k, n_rows - 1)] for r in rows] for k in range(K)]
        excess = [
            [entry_excess(m, a, tol) for m, a in zip(manual[k], autograd[k], strict=True)]
            for k in range(n_rows)
        ]
        differ = [sum(int((e > 0).sum()) for e in excess[k]) for k in range(n_rows)]
        # a probe whose two vectors agree entry by entry within atol/rtol: the two are
        # equally right, whatever their projections add up to over n entries
        same = torch.tensor([differ[min(k, n_rows - 1)] == 0 for k in range(K)])

        values, rounds, eff = directional_differences(point, dirs, tol.eps, [1.0])
        derivs = {"manual": manual, "autograd": autograd}
        dots = {who: [dot(eff[k], g[k], u_in) for k in range(K)] for who, g in derivs.items()}
        N = (U * values[1.0].cpu()).sum(dim=1).tolist()
        R = (U.abs() * rounds[1.0].cpu()).sum(dim=1).tolist()
        # Per-entry atol/rtol in quadrature over the n entries a probe adds up (the root sum
        # of squares of per-entry tolerances), plus the finite differences' own error
        # estimate and each dot product's roundoff. A tolerance summed over all entries
        # would grow like n and hide a single wrong entry; the entry-by-entry comparison
        # with autograd keeps full mode's per-entry tolerance anyway.
        u_norm = U.square().sum(dim=1).sqrt().tolist()
        v_norm = [math.sqrt(sum(squared_norm(w) for w in eff[k])) for k in range(K)]
        tolerance = {
            who: [
                tol.atol * u_norm[k] * v_norm[k]
                + tol.rtol * max(abs(N[k]) if math.isfinite(N[k]) else 0.0, d[k][2])
                for k in range(K)
            ]
            for who, d in dots.items()
        }
        value = {who: [dk[0] for dk in d] for who, d in dots.items()}
        # the finite difference minus the derivative along the direction actually taken,
        # per step scale: the directions differ between scales by their rounding
        resid: dict[str, dict[float, dict[int, float]]] = {
            who: {1.0: {k: N[k] - value[who][k] for k in range(K)}} for who in derivs
        }
        allowed = {
            who: [tolerance[who][k] + tol.safety * (R[k] + dots[who][k][1]) for k in range(K)]
            for who in derivs
        }
        numeric = {who: list(N) for who in derivs}
        agrees = {
            who: [abs(resid[who][1.0][k]) <= allowed[who][k] for k in range(K)] for who in derivs
        }
        unsure = [k for k in range(K) if not all(agrees[who][k] for who in derivs)]
        scales = self._rejudge_probes(
            point,
            U,
            dirs,
            unsure,
            derivs,
            dots,
            tolerance,
            resid,
            R,
            agrees,
            allowed,
            numeric,
        )
        as_tensor = functools.partial(torch.tensor, dtype=torch.float64)
        Mn, A, N_t = as_tensor(value["manual"]), as_tensor(value["autograd"]), as_tensor(N)
        close_mn = torch.tensor(agrees["manual"])
        close_an = torch.tensor(agrees["autograd"])
        either = close_mn | close_an
        close_mn = torch.where(same, either, close_mn)
        close_an = torch.where(same, either, close_an)
        al_m, al_a = as_tensor(allowed["manual"]), as_tensor(allowed["autograd"])
        num_m, num_a = as_tensor(numeric["manual"]), as_tensor(numeric["autograd"])
        three = agreement(Mn, A, N_t, ((num_m, al_m), (num_a, al_a)), close_mn, close_an)
        # a probe whose two vectors agree entry by entry: the two agree, whatever FD says
        three = dataclasses.replace(three, close_ma=same | three.close_ma)
        indices = [((k,), (k,)) for k in range(K)]
        probes = block_pair("projections", "directions", (K,), (K,), indices, three)
        n_in = sum(int(x.numel()) for x in xs)
        text = (
            f"fast mode: {K} random direction(s) v_k over the {n_in:,} checked input entries "
            f"(Rademacher signs times max(1, |x|), seed={self.opts.seed})"
        )
        if self.interface == "vjp":
            text += ", each with a random +-1 output projection u_k"
        text += (
            "; probe k compares u_k^T J v_k by your derivative, autograd and finite "
            "differences ('projections' and 'directions' index k), and your derivative is "
            "compared with autograd entry by entry"
        )
        if unsure:
            steps = ", ".join(f"{c:g}" for c in scales)
            text += f"; {len(unsure)} probe(s) also took steps of {steps} h (truncation, kinks)"
        self.notes.append(text)
        pairs = []
        first_differ = next((j for j in range(n_rows) if differ[j]), None)
        if first_differ is not None:
            j = first_differ
            pairs = self._judge_entries(point, U[j], manual[j], autograd[j], excess[j])
            of = f" (the vector-Jacobian products for u_{j})" if self.interface == "vjp" else ""
            judged = sum(p.total for p in pairs)
            self.notes.append(
                f"your derivative and autograd differ by more than atol + rtol |autograd| at "
                f"{differ[j]:,} of {n_in:,} entries{of}; the {judged} that differ most were "
                f"judged by finite differences of their own"
            )
        return [*pairs, probes]

    def _rejudge_probes(
        self,
        point: Point,
        U: torch.Tensor,
        dirs: list[list[torch.Tensor]],
        unsure: list[int],
        derivs: dict[str, list[list[torch.Tensor]]],
        dots: dict[str, list[tuple[float, float, float]]],
        tolerance: dict[str, list[float]],
        resid: dict[str, dict[float, dict[int, float]]],
        R: list[float],
        agrees: dict[str, list[bool]],
        allowed: dict[str, list[float]],
        numeric: dict[str, list[float]],
    ) -> list[float]:
        """Judge the unsure probes at the core's other step scales (updating the verdicts).

        As the core does: a second step 2h gives the truncation error where a probe is
        unsure (a right derivative within roundoff needs no estimate of it), and smaller
        steps see past a kink the base step crossed. A derivative is right if it agrees
        at some scale, so a wrong one has to be wrong at every scale. ``resid`` holds the
        finite difference minus the derivative along the direction each scale actually
        took (the directions differ between scales by their rounding). Returns the step
        multipliers used.
        """
        tol, u_in = self.tol, max(machine_eps(x.dtype) for x in point.xs)
        rnd: dict[float, dict[int, float]] = {1.0: dict(enumerate(R))}
        for first, (small, large) in enumerate(SCALES):
            need = [k for k in unsure if not all(agrees[who][k] for who in derivs)]
            if not need:
                break
            for c in (small, large):
                if c in rnd:
                    continue
                vals_c, rounds_c, eff_c = directional_differences(
                    point, [dirs[k] for k in need], tol.eps, [c]
                )
                rnd[c] = {}
                for j, k in enumerate(need):
                    n_c = float((U[k] * vals_c[c][j].cpu()).sum())
                    rnd[c][k] = float((U[k].abs() * rounds_c[c][j].cpu()).sum())
                    for who, g in derivs.items():
                        along = dot(eff_c[j], g[k], u_in)[0]
                        resid[who].setdefault(c, {})[k] = n_c - along
            for k in need:
                for who in derivs:
                    if agrees[who][k]:
                        continue
                    r_small, r_large = resid[who][small][k], resid[who][large][k]
                    trunc = abs(r_small - r_large)
                    trunc = 0.0 if math.isnan(trunc) else trunc
                    err = rnd[small][k] + rnd[large][k] + trunc + dots[who][k][1]
                    al = tolerance[who][k] + tol.safety * err
                    if first == 0:
                        # with no scale agreeing, the (h, 2h) allowance is the one reported
                        allowed[who][k] = al
                    if abs(r_small) <= al:
                        agrees[who][k] = True
                        allowed[who][k] = al
                        numeric[who][k] = dots[who][k][0] + r_small
        return list(rnd)

    def _judge_entries(
        self,
        point: Point,
        u: torch.Tensor,
        manual: list[torch.Tensor],
        autograd: list[torch.Tensor],
        excess: list[torch.Tensor],
    ) -> list[ManualPairResult]:
        """The entries where your derivative and autograd differ most, judged as in full mode.

        Central differences of those coordinates only (at the core's step scales where
        one is suspect): a few evaluations, whatever the size of the input.
        """
        tol = self.tol
        xs, outs = point.xs, point.outs
        flat = torch.cat([e.reshape(-1) for e in excess])
        n_pick = min(WORST_KEPT, int((flat > 0).sum()))
        picked = torch.argsort(flat, descending=True)[:n_pick].tolist()
        sizes = [int(x.numel()) for x in xs]
        starts = [sum(sizes[:i]) for i in range(len(xs))]
        pairs = []
        for i, x in enumerate(xs):
            cols = sorted(j - starts[i] for j in picked if starts[i] <= j < starts[i] + sizes[i])
            if not cols:
                continue
            coords = torch.tensor(cols, device=x.device)
            Mn = manual[i].reshape(-1)[coords].to(torch.float64).cpu().unsqueeze(0)
            A = autograd[i].reshape(-1)[coords].to(torch.float64).cpu().unsqueeze(0)
            steps = element_steps(x, tol.eps).to(x.device)
            multipliers = [m for pair in SCALES for m in pair]
            fd = central_differences(point, i, coords, steps, multipliers)
            vals = {c: weighted(u, v.T.cpu()) for c, v in fd.values.items()}
            rounds = {c: weighted(u.abs(), r.T.cpu()) for c, r in fd.roundoff.items()}
            N = vals[1.0].unsqueeze(0)
            vals = {c: v.unsqueeze(0) for c, v in vals.items()}
            rounds = {c: r.unsqueeze(0) for c, r in rounds.items()}
            num_m, al_m, _ = judge_scales(tol, Mn, vals, rounds)
            num_a, al_a, _ = judge_scales(tol, A, vals, rounds)
            judged = (num_m, al_m), (num_a, al_a)
            three = agreement(Mn, A, N, judged, close(Mn, num_m, al_m), close(A, num_a, al_a))
            leaf = self.checked[i]
            shape = tuple(x.shape)
            if self.interface == "grad":
                out_path, out_shape = self.out_paths[0], tuple(outs[0].shape)
            else:
                out_path, out_shape = "projections", ()
            indices = [(unravel(0, out_shape), unravel(c, shape)) for c in cols]
            pair = block_pair(out_path, leaf.path, out_shape, shape, indices, three[0])
            pairs.append(pair)
            if not pair.passed:
                self._entry_hints(pair, leaf.path, shape, x, manual[i], autograd[i], excess[i])
        return pairs

    def _entry_hints(
        self,
        pair: ManualPairResult,
        in_path: str,
        in_shape: tuple[int, ...],
        x: torch.Tensor,
        manual: torch.Tensor,
        autograd: torch.Tensor,
        excess: torch.Tensor,
    ) -> None:
        """Core hints over every entry where the two differ, blaming the judged odd one out."""
        odd = pair.odd_one_out
        if odd not in ("manual", "autograd"):
            return
        wrong = (excess > 0).reshape(1, -1)
        masks = {name: wrong if name == odd else torch.zeros_like(wrong) for name in SUBJECT}
        self._hint(
            pair.output,
            (),
            in_path,
            in_shape,
            x.detach().reshape(-1).to(torch.float64).cpu(),
            slice(0, 1),
            manual.reshape(1, -1).to(torch.float64).cpu(),
            autograd.reshape(1, -1).to(torch.float64).cpu(),
            {k: v.cpu() for k, v in masks.items()},
        )

    def _pairs(
        self,
        i: int,
        x: torch.Tensor,
        outs: list[torch.Tensor],
        three: ThreeWay,
    ) -> list[ManualPairResult]:
        """Split the (K, n_i) comparison into blocks per output leaf and classify entries."""
        ok, odd, distance = classify(three)
        Mn, A, numeric, allowed = three.manual, three.autograd, three.numeric, three.allowed
        if self.mode == "full":
            blocks = []
            offset = 0
            for path, o in zip(self.out_paths, outs, strict=True):
                m = int(o.numel())
                blocks.append((path, tuple(o.shape), slice(offset, offset + m)))
                offset += m
        else:
            blocks = [("projections", (int(Mn.shape[0]),), slice(0, int(Mn.shape[0])))]
        in_path, in_shape = self.checked[i].path, tuple(x.shape)
        x_values = x.detach().reshape(-1).to(torch.float64).cpu()
        pairs = []
        for out_path, out_shape, rows in blocks:
            masks = {k: v[rows] for k, v in odd.items()}
            bad = ~ok[rows]
            dist = distance[rows]
            excess = torch.where(bad, dist - allowed[rows], -math.inf).reshape(-1)
            n_bad = int(bad.sum())
            worst = []
            if n_bad:
                n_in = int(Mn.shape[1])
                for flat in torch.argsort(excess, descending=True)[: min(WORST_KEPT, n_bad)]:
                    r, c = divmod(int(flat), n_in)
                    kind = next(k for k, v in masks.items() if bool(v[r, c]))
                    worst.append(
                        ThreeWayElement(
                            output_index=unravel(r, out_shape),
                            input_index=unravel(c, in_shape),
                            manual=float(Mn[rows][r, c]),
                            autograd=float(A[rows][r, c]),
                            numeric=float(numeric[rows][r, c]),
                            allowed=float(allowed[rows][r, c]),
                            odd_one_out=kind,
                        )
                    )
            pairs.append(
                ManualPairResult(
                    output=out_path,
                    input=in_path,
                    output_shape=out_shape,
                    input_shape=in_shape,
                    passed=n_bad == 0,
                    total=int(bad.numel()),
                    manual_wrong=int(masks["manual"].sum()),
                    autograd_wrong=int(masks["autograd"].sum()),
                    numeric_wrong=int(masks["numeric"].sum()),
                    all_differ=int(masks["none"].sum()),
                    max_abs_error=float(dist.max()) if dist.numel() else 0.0,
                    worst=tuple(worst),
                )
            )
            if n_bad:
                self._hint(out_path, out_shape, in_path, in_shape, x_values, rows, Mn, A, masks)
        return pairs

    # -- hints ----------------------------------------------------------------------------
    def _hint(
        self,
        out_path: str,
        out_shape: tuple[int, ...],
        in_path: str,
        in_shape: tuple[int, ...],
        x_values: torch.Tensor,
        rows: slice,
        Mn: torch.Tensor,
        A: torch.Tensor,
        masks: dict[str, torch.Tensor],
    ) -> None:
        """Core hints for the entries where one derivative is the odd one out, in our words."""
        for who, wrong, right in (("manual", Mn, A), ("autograd", A, Mn)):
            mask = masks[who]
            if not bool(mask.any()):
                continue
            # the other derivative is the reference: it agrees with FD here, without FD's noise
            block = Block(
                out_path, in_path, out_shape, in_shape, wrong[rows], right[rows], mask, x_values
            )
            found = [reword(h, who) for h in diagnose([block])]
            if who == "manual" and not any(h.kind in ("factor", "sign", "zero") for h in found):
                ratio = ratio_hint(wrong[rows][mask], right[rows][mask], out_path, in_path)
                if ratio is not None:
                    found.insert(0, ratio)
            for h in found:
                if h not in self.hints:
                    self.hints.append(h)


@one_at_a_time
def check_matches_manual(
    fn: Callable[..., Any],
    manual_grad: Callable[..., Any] | None = None,
    inputs: Any = None,
    *,
    manual_vjp: Callable[..., Any] | None = None,
    **options: Unpack[ManualOptions],
) -> ManualCheckResult:
    """Compare a hand-written derivative with autograd and with finite differences.

    For a scalar ``fn``, ``manual_grad(*inputs)`` returns the gradient with
    respect to each input that requires grad: a tensor when one does, else a
    tuple in order (or one entry per input, None where there is no gradient).
    For any ``fn``, ``manual_vjp(grad_output, *inputs)`` returns ``J^T
    grad_output`` in the same form, ``grad_output`` shaped like ``fn``'s output.
    Every entry is judged three ways; where they disagree, the result names the
    odd one out. Runs on copies; inputs, ``.grad``, flags, modes and RNGs are
    left as they were.

    Args:
        fn: the function whose derivative was written by hand.
        manual_grad: ``manual_grad(*inputs)``, the gradient of a scalar ``fn``.
        inputs: a tensor, a tuple/list of arguments or a dict of keyword arguments.
        manual_vjp: ``manual_vjp(grad_output, *inputs)``, instead of ``manual_grad``.
        mode: ``"full"`` compares every entry, with finite differences per input
            entry (2 evaluations of ``fn`` each) and, with ``manual_vjp``, one call
            per output entry. ``"fast"`` compares ``n_probes`` random projections
            ``u_k^T J v_k`` over the inputs (and outputs): a constant number of
            evaluations; your derivative is still compared with autograd entry by
            entry, and the entries where they differ most get finite differences
            of their own. ``"auto"`` is fast above 4096 input entries, else full
            (with ``manual_vjp``, output projections only above 64 output entries).
        dtype: ``"float64"`` checks float64 copies; ``"native"`` the inputs' own dtype.
        eps: base finite-difference step; default by dtype.
        atol: absolute tolerance per entry; default by dtype.
        rtol: relative tolerance per entry; default by dtype.
        seed: seeds the RNGs and the random projections.
        rng: ``"fixed"`` or ``"replay"`` (every evaluation sees the same RNG state).
        n_probes: random projections (directions over the inputs) in fast mode
            (default 4).
        name: label for messages and reports (default: ``fn``'s qualified name).
        empty: ``"pass"`` (default) lets a check whose Jacobian has no entries (every
            checked input, or every output, is empty) pass with the note "nothing to
            check", as ``torch.autograd.gradcheck`` does; ``"error"`` raises
            :class:`InvalidArgument` instead.

    Returns:
        A :class:`ManualCheckResult`; ``passed`` is the verdict and
        ``odd_one_out`` names the derivative that is wrong.

    Raises:
        InvalidArgument: bad arguments; ``manual_grad`` for a non-scalar ``fn``;
            a derivative returning the wrong number of values, shapes or
            non-tensors (the message names the input and the shapes).

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> gk.check_matches_manual(lambda x: (x ** 3).sum(), lambda x: 3 * x ** 2, x).passed
        True
        >>> wrong = gk.check_matches_manual(lambda x: (x ** 3).sum(), lambda x: x ** 2, x)
        >>> wrong.passed, wrong.odd_one_out
        (False, 'manual')
        >>> gk.check_matches_manual(torch.sin, inputs=x,
        ...                         manual_vjp=lambda v, x: v * torch.cos(x)).passed
        True
        >>> big = torch.randn(100_000, dtype=torch.float64, requires_grad=True)
        >>> fast = gk.check_matches_manual(lambda x: (x ** 3).sum(), lambda x: 3 * x ** 2, big)
        >>> fast.passed, fast.mode, fast.evaluations <= 20
        (True, 'fast', True)
    """
    check_keywords(options, ManualOptions, "check_matches_manual")
    opts = CheckOptions.create(**options)
    check_callable(fn, "fn", "pass the function first")
    if (manual_grad is None) == (manual_vjp is None):
        given = "both" if manual_grad is not None else "neither"
        raise InvalidArgument(
            f"pass exactly one of manual_grad (the gradient of a scalar fn) and manual_vjp "
            f"(grad_output, *inputs -> J^T grad_output); got {given}."
        )
    manual = manual_grad if manual_grad is not None else manual_vjp
    label = "manual_grad" if manual_grad is not None else "manual_vjp"
    swapped = isinstance(manual, (torch.Tensor, tuple, list))
    guess = "Maybe the arguments are swapped: the order is (fn, manual_grad, inputs)"
    manual = check_callable(manual, label, guess if swapped else "")
    if inputs is None:
        raise InvalidArgument(
            "inputs is missing: pass the point to check at, e.g. "
            "check_matches_manual(fn, manual_grad, x) or (fn, inputs=x, manual_vjp=...)."
        )
    tree = InputTree(inputs)
    preserve = [inputs, *captured_objects(fn), *captured_objects(manual)]
    return _ManualCheck(
        fn,
        manual,
        "grad" if manual_grad is not None else "vjp",
        tree,
        opts,
        name=opts.name or fn_name(fn),
        preserve=preserve,
    ).run()


def assert_matches_manual(
    fn: Callable[..., Any],
    manual_grad: Callable[..., Any] | None = None,
    inputs: Any = None,
    *,
    manual_vjp: Callable[..., Any] | None = None,
    msg: Msg = None,
    **options: Unpack[ManualOptions],
) -> ManualCheckResult:
    """Assert that a hand-written derivative agrees with autograd and finite differences.

    Takes the arguments of :func:`check_matches_manual` (``manual_vjp=``,
    ``dtype=``, ``atol=``, ``rtol=``, ...), plus ``msg``: a string put before the
    report, or a callable that receives the report and returns the text to raise.

    Returns:
        The passing :class:`ManualCheckResult`.

    Raises:
        GradientMismatchError: the three disagree; the message names the odd one
            out ("your derivative disagrees with both autograd and finite
            differences at index ..."), the values, a likely cause, hints and a
            line that reproduces the check.
        NondeterministicFunctionError: ``fn`` is stochastic (try ``rng="replay"``).
        InvalidArgument: misuse, as in :func:`check_matches_manual`.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> w = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
        >>> _ = gk.assert_matches_manual(lambda w: (w @ w).trace(), lambda w: 2 * w.T, w)
    """
    __tracebackhide__ = True
    result = check_matches_manual(fn, manual_grad, inputs, manual_vjp=manual_vjp, **options)
    return fail_unless_passed(result, gradient_error(result.status), msg)
