"""How check_matches_manual judges its three gradients and words what it finds.

Shared by the entry-by-entry (full) comparison and the projections of fast mode in
:mod:`.manual`: agreement within the core's per-entry allowances and step scales,
which of the three is the odd one out, the result blocks, and the hints that name
a factor or a forgotten inner derivative.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from .engine.diagnose import format_factor
from .engine.judging import WORST_KEPT
from .engine.tolerances import Tolerances, machine_eps
from .messages import odd_one_out_cause, odd_one_out_text
from .results import Hint, ManualPairResult, ThreeWayElement

__all__ = [
    "SUBJECT",
    "WORST_KEPT",
    "close",
    "ThreeWay",
    "agreement",
    "classify",
    "block_pair",
    "entry_excess",
    "squared_norm",
    "dot",
    "weighted",
    "odd_one_out_hint",
    "reword",
    "ratio_hint",
]

# Who is wrong, in the words of the messages; the reference is what the other two agree on.
SUBJECT = {"manual": "your derivative", "autograd": "autograd"}
_REFERENCE = {
    "manual": "autograd and finite differences",
    "autograd": "your derivative and finite differences",
}
# A ratio yours/reference spreading wider than this over the wrong entries is not a constant
# factor (diagnose names those) but one that depends on the input: a forgotten inner derivative.
_RATIO_SPREAD = 0.02


def close(a: torch.Tensor, b: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Entry-wise agreement; two NaNs agree, NaN and a number do not."""
    both_nan = torch.isnan(a) & torch.isnan(b)
    return ((a - b).abs() <= allowed) | both_nan


@dataclasses.dataclass(frozen=True)
class ThreeWay:
    """Your derivative and autograd beside finite differences, entry by entry, and who agrees.

    ``numeric`` is the finite difference shown (at the scale where one of the two
    agreed with it), ``allowed`` its allowance; ``close_mn``, ``close_an`` and
    ``close_ma`` say which pairs of the three agree. Indexing selects entries of all.
    """

    manual: torch.Tensor
    autograd: torch.Tensor
    numeric: torch.Tensor
    allowed: torch.Tensor
    close_mn: torch.Tensor
    close_an: torch.Tensor
    close_ma: torch.Tensor

    def __getitem__(self, index: object) -> ThreeWay:
        return ThreeWay(*(t[index] for t in dataclasses.astuple(self)))


def agreement(
    manual: torch.Tensor,
    autograd: torch.Tensor,
    fd: torch.Tensor,
    judged: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    close_mn: torch.Tensor,
    close_an: torch.Tensor,
) -> ThreeWay:
    """The three-way comparison, given each derivative's judged (numeric, allowed) and verdict.

    Where your derivative agrees, its finite difference is shown; else autograd's where
    that agrees; else ``fd``.
    """
    (num_m, al_m), (num_a, al_a) = judged
    numeric = torch.where(close_mn, num_m, torch.where(close_an, num_a, fd))
    allowed = torch.where(close_mn, al_m, torch.where(close_an, al_a, al_m))
    close_ma = close(manual, autograd, allowed)
    return ThreeWay(manual, autograd, numeric, allowed, close_mn, close_an, close_ma)


def classify(t: ThreeWay) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Agreement, the odd one out per entry, and how far the odd one lies from the other two."""
    Mn, A, numeric = t.manual, t.autograd, t.numeric
    close_mn, close_an, close_ma = t.close_mn, t.close_an, t.close_ma
    ok = close_mn & close_an
    odd = {
        "manual": ~ok & close_an,
        "autograd": ~ok & ~close_an & close_mn,
        "numeric": ~close_an & ~close_mn & close_ma,
        "none": ~close_an & ~close_mn & ~close_ma,
    }
    distance = torch.where(
        odd["autograd"],
        (A - numeric).abs(),
        torch.where(odd["numeric"], (numeric - Mn).abs(), (Mn - numeric).abs()),
    )
    distance = torch.where(torch.isnan(distance) & ~ok, math.inf, distance)
    distance = torch.where(ok, (Mn - numeric).abs().nan_to_num(0.0), distance)
    return ok, odd, distance


def block_pair(
    output: str,
    input: str,
    output_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    indices: Sequence[tuple[tuple[int, ...], tuple[int, ...]]],
    t: ThreeWay,
) -> ManualPairResult:
    """A list of compared values (entry ``r`` at ``indices[r]``) as one classified block."""
    ok, odd, distance = classify(t)
    Mn, A, numeric, allowed = t.manual, t.autograd, t.numeric, t.allowed
    n = int(Mn.numel())
    excess = torch.where(~ok, distance - allowed, -math.inf)
    n_bad = int((~ok).sum())
    worst = []
    for r in torch.argsort(excess, descending=True)[: min(WORST_KEPT, n_bad)].tolist():
        kind = next(name for name, mask in odd.items() if bool(mask[r]))
        worst.append(
            ThreeWayElement(
                output_index=indices[r][0],
                input_index=indices[r][1],
                manual=float(Mn[r]),
                autograd=float(A[r]),
                numeric=float(numeric[r]),
                allowed=float(allowed[r]),
                odd_one_out=kind,
            )
        )
    return ManualPairResult(
        output=output,
        input=input,
        output_shape=output_shape,
        input_shape=input_shape,
        passed=n_bad == 0,
        total=n,
        manual_wrong=int(odd["manual"].sum()),
        autograd_wrong=int(odd["autograd"].sum()),
        numeric_wrong=int(odd["numeric"].sum()),
        all_differ=int(odd["none"].sum()),
        max_abs_error=float(distance.max()) if n else 0.0,
        worst=tuple(worst),
    )


def entry_excess(manual: torch.Tensor, autograd: torch.Tensor, tol: Tolerances) -> torch.Tensor:
    """``|yours - autograd| - (atol + rtol |autograd|)`` per entry (float64, flat).

    Positive where the two differ by more than full mode would allow; a NaN on one side
    only counts as infinitely far, NaN on both as agreement.
    """
    m = manual.reshape(-1).to(torch.float64)
    a = autograd.reshape(-1).to(device=m.device, dtype=torch.float64)
    diff = (m - a).abs().nan_to_num(math.inf, math.inf)
    diff = torch.where((torch.isnan(m) & torch.isnan(a)) | (m == a), 0.0, diff)
    return diff - (tol.atol + tol.rtol * a.abs().nan_to_num(0.0, 0.0, 0.0))


def squared_norm(w: torch.Tensor) -> float:
    """The squared norm of a tensor, accumulated in float64."""
    flat = w.reshape(-1).to(torch.float64)
    return float(torch.dot(flat, flat))


def weighted(U: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``U @ X`` for cotangent rows ``U`` (or one vector) and finite-difference rows ``X``.

    The identity is skipped (full mode's ``U``); small products avoid BLAS, whose
    threads wait for a busy core on a loaded machine even for a few hundred entries.
    """
    if U.dim() == 2 and U.shape[0] == U.shape[1] and bool(torch.equal(U, torch.eye(len(U)))):
        return X.clone()
    if U.numel() * X.shape[-1] > 1 << 16:
        return U @ X
    if U.dim() == 1:
        return (U.unsqueeze(1) * X).sum(0)
    return (U.unsqueeze(2) * X.unsqueeze(0)).sum(1)


def dot(
    directions: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], u_in: float
) -> tuple[float, float, float]:
    """``<g, v>`` in float64, its roundoff estimate and the root sum of squares of its terms.

    The roundoff allows for the gradient's own dtype (a float32 gradient of a float64
    check). A non-finite dot product gets no allowance from its own size, so that an
    infinite gradient cannot excuse itself.
    """
    total, scale, square, u = 0.0, 0.0, 0.0, u_in
    for w, g in zip(directions, grads, strict=True):
        term = (w.to(torch.float64) * g.to(device=w.device, dtype=torch.float64)).reshape(-1)
        total += float(term.sum())
        square += float(torch.dot(term, term))
        scale += float(term.abs_().sum())
        u = max(u, machine_eps(g.dtype))
    if not (math.isfinite(scale) and math.isfinite(square)):
        return total, 0.0, 0.0
    return total, 8 * u * scale, math.sqrt(square)


def odd_one_out_hint(pairs: Sequence[ManualPairResult], odd: str) -> Hint:
    """The verdict in one sentence, first among the hints (what one-line reports show)."""
    pair = next(p for p in pairs if not p.passed and p.odd_one_out == odd)
    element = next((e for e in pair.worst if e.odd_one_out == odd), pair.worst[0])
    text = f"{odd_one_out_text(pair, element)} Likely cause: {odd_one_out_cause(odd)}"
    return Hint(kind="odd_one_out", text=text, output=pair.output, input=pair.input)


def reword(hint: Hint, who: str) -> Hint:
    """A core hint (worded for autograd vs finite differences) for the derivative ``who``."""
    subject, reference = SUBJECT[who], _REFERENCE[who]
    where = f"for '{hint.output}' with respect to '{hint.input}'"
    text = hint.text
    if hint.kind == "factor" and hint.factor is not None:
        text = (
            f"{subject} ≈ {hint.factor:.3g} × the value {reference} agree on, {where} — "
            f"{format_factor(hint.factor)}?"
        )
    elif hint.kind == "sign":
        text = (
            f"{subject} ≈ −(the value {reference} agree on), {where} — a sign error (a missing "
            f"minus, or operands swapped in a subtraction)?"
        )
    elif hint.kind == "zero":
        if "no gradient" in text or "zero gradient" in text:
            text = f"{subject} is 0 where {reference} are not, {where} — a term forgotten?"
        else:
            text = (
                f"{subject} is not 0 where {reference} give 0, {where} — a gradient given for "
                f"the wrong input, or two gradients swapped?"
            )
    elif hint.kind == "transposed":
        text = text.replace("analytic ≈ numeric", f"{subject} ≈ {reference}").replace(
            " in the backward?", "?"
        )
    elif hint.kind == "region":
        text = text.replace("the gradient of ", f"{subject} for ", 1).replace(
            "the backward formula", "the formula"
        )
    else:
        text = f"{subject}: {text}"
    return dataclasses.replace(hint, text=text)


def ratio_hint(wrong: torch.Tensor, right: torch.Tensor, out: str, inp: str) -> Hint | None:
    """Yours/reference varying from entry to entry: a factor depending on the input is missing."""
    keep = torch.isfinite(wrong) & torch.isfinite(right) & (right != 0) & (wrong != 0)
    if int(keep.sum()) < 2:
        return None
    ratio = wrong[keep] / right[keep]
    lo, hi = float(ratio.min()), float(ratio.max())
    if hi - lo <= _RATIO_SPREAD * max(abs(lo), abs(hi)):
        return None
    text = (
        f"your derivative / the value autograd and finite differences agree on varies from "
        f"{lo:.3g} to {hi:.3g} over the wrong entries of '{out}' with respect to '{inp}': a "
        f"factor that depends on the input is missing or extra — the inner derivative of a "
        f"chain rule (d/dx of the inside of a composition) forgotten?"
    )
    return Hint(kind="inner_factor", text=text, output=out, input=inp)
