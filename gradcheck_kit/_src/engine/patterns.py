"""The patterns in one Jacobian block's mismatch: zero, sign, factor, transposed, region, border.

:func:`analyse` looks at the mismatched elements of a :class:`Block` and returns
a :class:`Finding` for each pattern clear enough to report: a fit has to explain
(almost) every mismatched element, and a region or border has to be unlikely to
arise by chance. No text is written here (:mod:`.hints` does that).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch

from .block import Block

__all__ = [
    "FIT_REL",
    "NEAR_ONE",
    "SIMPLE_REL",
    "ZERO_REL",
    "Finding",
    "analyse",
    "simple_integer",
]

# Diagnostic thresholds. They judge the *shape* of an error that the caller's
# tolerances already found, so they are relative to the size of that error and
# do not belong in tolerances.py.

# |analytic| below this fraction of |numeric| counts as "autograd gave nothing";
# small enough that a real factor such as 1/1024 (mean over a batch) is not zero.
ZERO_REL = 1e-6
# |numeric| below this fraction of |analytic| counts as "the output does not
# depend on it" even when a factor fit would succeed (FD noise can be
# consistent only by accident this far down).
_NUMERIC_ZERO_REL = 1e-6
# Looser: such elements count as zero only when no consistent factor explains them.
_NUMERIC_ZERO_LOOSE = 1e-3
# A factor fit: each element within 2 % of k, plus a hair of the block's scale.
FIT_REL = 0.02
_FIT_ABS = 1e-9
# ... and at least 90 % of the mismatched elements must follow it.
_FIT_SHARE = 0.9
# A factor this close to 1 needs a tighter fit (a fraction of its distance to 1) to be
# named, as a small scale error ("analytic ≈ 1.001 × numeric everywhere").
NEAR_ONE = 0.05
_NEAR_ONE_FIT = 0.1
# Closer to 1 than this no finite difference resolves a factor.
_NEAR_ONE_MIN = 1e-6
# Simple ratios (2, 1/4, 64, ...) are named when k is this close to them.
SIMPLE_REL = 0.01
# Transposition: residual per element, relative to the transposed numeric value
# and to the smallest mismatch, and how much better than "no transposition" it
# must explain the mismatched elements.
_TRANSPOSE_REL = 0.02
_TRANSPOSE_ABS_OF_MIN_ERROR = 0.5
_TRANSPOSE_GAIN = 0.25
# A region is reported when the chance that the mismatched input positions all
# fall on that side at random is at most this (hypergeometric tail): for a
# relu-like bug on 8 inputs, 4 of them negative, that chance is 1/70; with 2
# negatives among 4 it is 1/6, too likely to mean anything.
_REGION_CHANCE = 0.05
# The same for "only where |x| is small (large)", with at least 2 correct inputs.
# Much stricter: a random pattern must not produce this rarer hint, so it
# needs many inputs (6 smallest of 40, say).
_MAGNITUDE_CHANCE = 1e-5
# Above this many mismatched elements, value patterns are first sought in an
# even sample of them (a median of millions costs more than the rest together).
_SAMPLE = 1 << 14

# The widest border (in elements from each edge) looked for: a 7x7 kernel's reach.
_MAX_BORDER = 3
# A border is reported when the chance that the mismatched positions all fall on it at
# random is at most this. A padding bug spoils a whole edge (all 28 edge pixels of an
# 8x8 image: a chance of 1e-18), so the bar can be high enough that scattered errors
# (4 of 64 pixels happen to be edge pixels 3 times in 100) never read as one.
_BORDER_CHANCE = 1e-3


@dataclass(frozen=True, eq=False)
class Finding:
    """One pattern in one block, before texts are written and blocks merged."""

    kind: str
    variant: str
    block: Block
    count: int  # finite mismatched elements of the block
    fitted: int = 0  # of those, how many the pattern explains
    factor: float | None = None
    threshold: float | None = None
    side: str = "input"  # for a border: the leaf whose edges hold the mismatch


class _Values:
    """Mismatched elements of a block: gathered (``mask`` None) or the whole block under ``mask``.

    Every test is phrased as a count of elements satisfying a comparison, and a
    comparison with NaN is False, so non-finite elements never count.
    """

    def __init__(
        self, a: torch.Tensor, n: torch.Tensor, mask: torch.Tensor | None, count: int, scale: float
    ) -> None:
        self.a, self.n, self.mask = a, n, mask
        self.count = count
        self.scale = scale  # the largest |analytic| or |numeric| among them

    @classmethod
    def gathered(cls, a: torch.Tensor, n: torch.Tensor) -> _Values | None:
        """The finite ones of the given elements; None when none is left or all are 0."""
        finite = torch.isfinite(a) & torch.isfinite(n)
        if not bool(finite.all()):
            a, n = a[finite], n[finite]
        if a.numel() == 0:
            return None
        scale = max(float(a.abs().max()), float(n.abs().max()))
        return cls(a, n, None, int(a.numel()), scale) if scale > 0.0 else None

    # Computed on demand: each is a pass over up to millions of elements.
    @functools.cached_property
    def abs_a(self) -> torch.Tensor:
        return self.a.abs()

    @functools.cached_property
    def abs_n(self) -> torch.Tensor:
        return self.n.abs()

    @functools.cached_property
    def min_error(self) -> float:
        error = torch.sub(self.a, self.n).abs_()
        if self.mask is not None:
            error = error.masked_fill_(~self.mask, math.inf)
        return float(error.min())

    def how_many(self, condition: torch.Tensor) -> int:
        """How many of the elements satisfy ``condition`` (a bool tensor shaped like ``a``)."""
        if self.mask is not None:
            condition = condition & self.mask
        return int(torch.count_nonzero(condition))


def analyse(block: Block) -> list[Finding]:
    """The patterns clear enough to report in one block's mismatched elements.

    Zero, sign or factor (at most one of them), then transposition, border and
    region; empty when the block has no finite mismatched element or no pattern
    is clear. Non-finite elements are ignored.

    Examples:
        >>> x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
        >>> block = Block("output", "inputs[0]", (3,), (3,), -torch.diag(x), torch.diag(x),
        ...               torch.eye(3, dtype=torch.bool), x)
        >>> [(f.kind, f.count, f.factor) for f in analyse(block)]
        [('sign', 3, -1.0)]
    """
    # Blocks can hold millions of elements: touch the full matrices as few
    # times as possible. Value patterns are looked for in a sample of the
    # mismatched elements and, when one shows, confirmed on all of them.
    a = block.analytic.detach().to(torch.float64).reshape(-1)
    n = block.numeric.detach().to(torch.float64).reshape(-1)
    mask = block.mismatch.reshape(-1)
    # A sum is non-finite when any element is (or, rarely, on overflow: then
    # the exact test below runs needlessly but gives the same answer).
    if not (math.isfinite(float(a.sum())) and math.isfinite(float(n.sum()))):
        mask = mask & torch.isfinite(a) & torch.isfinite(n)
    total = int(torch.count_nonzero(mask))
    if total == 0:
        return []
    sample = _sample(a, n, mask, total)
    if sample is None:
        return []
    if sample.count == total:
        full: _Values = sample
    else:
        full = _Values(a, n, mask, total, sample.scale)

    findings = _value_patterns(block, sample)
    if findings and full is not sample:
        factor = findings[0].factor if findings[0].kind in ("factor", "sign") else None
        findings = _value_patterns(block, full, factor)
    # Zero on the mismatched elements; is it zero on the whole block too?
    if findings and findings[0].kind == "zero":
        first = findings[0]
        zero, other = (a, n) if first.variant == "analytic" else (n, a)
        if not _all_zero(zero, other):
            findings[0] = dataclasses.replace(first, variant=first.variant + "_partial")

    a2, n2 = a.reshape(block.analytic.shape), n.reshape(block.analytic.shape)
    for side, shape in (("input", block.input_shape), ("output", block.output_shape)):
        square = len(shape) == 2 and shape[0] == shape[1] and shape[0] > 1
        if square and _is_transposition(block, a2, n2, shape[0], side, sample.min_error):
            findings.append(Finding("transposed", side, block, total, total))

    border = _border(block, a2, n2, sample.scale)
    if border is not None:
        # A ratio measured on edge pixels describes the edge handling, not a scale:
        # "a missing factor of 2" would send the reader to the wrong line.
        findings = [f for f in findings if f.kind not in ("factor", "sign")]
        side, variant = border
        findings.insert(0, Finding("border", variant, block, total, total, side=side))

    region = _region(block, a2, n2, sample.scale)
    if region is not None and total >= 2:
        variant, threshold = region
        findings.append(Finding("region", variant, block, total, total, threshold=threshold))
    return findings


def _sample(a: torch.Tensor, n: torch.Tensor, mask: torch.Tensor, total: int) -> _Values | None:
    """All mismatched elements when they are few, else about ``_SAMPLE`` of them at random."""
    if total > _SAMPLE:
        # A private generator with a fixed seed: the same hint every run, and
        # the user's random state untouched.
        generator = torch.Generator(device=mask.device).manual_seed(0)
        draws = min(mask.numel(), -(-_SAMPLE * mask.numel() // total))
        where = torch.randint(mask.numel(), (draws,), generator=generator, device=mask.device)
        where = where[mask[where]]
        if where.numel() > 0:
            return _Values.gathered(a[where], n[where])
    where = torch.nonzero(mask).squeeze(1)
    return _Values.gathered(a[where], n[where])


def _value_patterns(block: Block, values: _Values, factor: float | None = None) -> list[Finding]:
    """Zero, sign and factor patterns among the mismatched elements.

    ``factor`` is a ratio already fitted on a sample, to be confirmed here;
    the sample then showed no zero pattern, so none is looked for.
    """
    count = values.count
    zero = None if factor is not None else _zero(block, values)
    fit = None if zero is not None else _factor_fit(values, factor)
    # Numeric "zero" up to this looser bound only where no factor (1/1024, say) fits.
    loose = zero is None and fit is None and factor is None
    if loose and values.how_many(values.abs_n > _NUMERIC_ZERO_LOOSE * values.abs_a) == 0:
        zero = Finding("zero", "numeric", block, count, count)
    if zero is not None:
        return [zero]
    if fit is None:
        return []
    k, fitted = fit
    if abs(k + 1.0) <= FIT_REL:
        return [Finding("sign", "", block, count, fitted, factor=-1.0)]
    return [Finding("factor", "", block, count, fitted, factor=k)]


def _zero(block: Block, values: _Values) -> Finding | None:
    count = values.count
    if values.how_many(values.abs_a > ZERO_REL * values.abs_n) == 0:
        # Whether autograd gave nothing at all is decided once, on all elements.
        return Finding("zero", "analytic", block, count, count)
    if values.how_many(values.abs_n > _NUMERIC_ZERO_REL * values.abs_a) == 0:
        return Finding("zero", "numeric", block, count, count)
    return None


def _all_zero(a: torch.Tensor, n: torch.Tensor) -> bool:
    """Whether ``a`` is (near) zero wherever it is finite, relative to ``n``."""
    return _finite_peak(a) <= ZERO_REL * _finite_peak(n)


def _finite_peak(t: torch.Tensor) -> float:
    """The largest finite |t|, 0.0 for none."""
    if t.numel() == 0:
        return 0.0
    peak = float(t.abs().max())
    if math.isfinite(peak):
        return peak
    return float(torch.nan_to_num(t, 0.0, 0.0, 0.0).abs().max())


def _factor_fit(values: _Values, k: float | None = None) -> tuple[float, int] | None:
    """The ratio k with analytic ≈ k × numeric on the mismatched elements, if one fits.

    With ``k`` given, only count the elements that follow it.
    """
    count = values.count
    if k is None:
        if values.mask is not None:
            raise RuntimeError("a factor is fitted on gathered elements only")
        usable = values.abs_n > _NUMERIC_ZERO_REL * values.scale
        if not bool(usable.any()):
            return None
        # The median ignores the few elements a real bug leaves unexplained.
        k = float((values.a[usable] / values.n[usable]).median())
    if not math.isfinite(k) or abs(k) < ZERO_REL or abs(k - 1.0) < _NEAR_ONE_MIN:
        return None
    # A factor near 1 (1.001) is a scale error only if it fits far tighter than its
    # distance to 1; anything looser is noise around a correct gradient.
    rel = FIT_REL if abs(k - 1.0) >= NEAR_ONE else _NEAR_ONE_FIT * abs(k - 1.0)
    residual = torch.add(values.a, values.n, alpha=-k).abs_()
    allowed = values.n.abs().mul_(rel * abs(k)).add_(_FIT_ABS * values.scale)
    fitted = values.how_many(residual <= allowed)
    if count == 1:
        # One element always "fits"; name it only when the ratio is a telling number.
        simple = abs(abs(k) - 1.0) <= SIMPLE_REL or simple_integer(abs(k)) is not None
        return (k, 1) if fitted == 1 and simple else None
    if fitted >= 2 and fitted >= _FIT_SHARE * count:
        return k, fitted
    return None


def _is_transposition(
    block: Block, a: torch.Tensor, n: torch.Tensor, side_len: int, side: str, err_min: float
) -> bool:
    """Whether analytic equals numeric with the square input (or output) leaf transposed."""
    rows, cols = a.shape
    if side == "input":
        n_t = n.reshape(rows, side_len, side_len).transpose(1, 2).reshape(rows, cols)
    else:
        n_t = n.reshape(side_len, side_len, cols).transpose(0, 1).reshape(rows, cols)
    residual = (a - n_t).abs()
    allowed = _TRANSPOSE_REL * n_t.abs() + _TRANSPOSE_ABS_OF_MIN_ERROR * err_min
    # NaN compares False both ways: non-finite elements neither confirm nor refute.
    if bool((residual > allowed).any()):
        return False
    # A symmetric Jacobian with small errors passes the test above too; the
    # transposition has to explain the mismatched elements far better than none.
    explained = block.mismatch & torch.isfinite(residual)
    if not bool(explained.any()):
        return False
    gain = residual[explained] <= _TRANSPOSE_GAIN * (a - n).abs()[explained]
    return bool(gain.all())


def _region(
    block: Block, a: torch.Tensor, n: torch.Tensor, scale: float
) -> tuple[str, float | None] | None:
    """Mismatches confined to the input positions on one side of 0 (or of a magnitude).

    Returns the variant and, for magnitudes, the threshold; None without a clear region.
    """
    x = block.input_values.detach().to(torch.float64).reshape(-1)
    col_wrong = block.mismatch.any(dim=0).to(x.device)
    wrong = int(col_wrong.sum())
    if wrong < 2 or not bool(torch.isfinite(x[col_wrong]).all()):
        return None
    # A column is informative when some element is not (near) zero: a column of
    # structural zeros says nothing about where the backward is right. fmax
    # skips NaN, so a column of NaN is not informative either.
    peak = torch.fmax(_column_peak(a), _column_peak(n)).to(x.device)
    col_used = ((peak > _FIT_ABS * scale) | col_wrong) & torch.isfinite(x)
    col_right = col_used & ~col_wrong
    if not bool(col_right.any()):
        return None
    total = int(col_used.sum())
    x_wrong = x[col_wrong]

    for variant, on_side in (("negative", x <= 0), ("positive", x >= 0)):
        if not bool(on_side[col_wrong].all()) or not bool((x_wrong != 0).any()):
            continue
        if not bool((col_right & ~on_side).any()):
            continue
        side = int((col_used & on_side).sum())
        if _log_chance(side, total, wrong) <= math.log(_REGION_CHANCE):
            inclusive = "_inclusive" if bool((x_wrong == 0).any()) else ""
            return variant + inclusive, None

    # A magnitude split is a weaker prior than a sign split (relu, abs and clamp
    # branch on the sign), so it needs stronger evidence.
    right = int(col_right.sum())
    # Chance that the wrong positions are exactly the smallest or the largest ones.
    chance = math.log(2.0) - _log_binomial(total, wrong)
    if right < 2 or chance > math.log(_MAGNITUDE_CHANCE):
        return None
    ax = x.abs()
    smallest_right, largest_right = float(ax[col_right].min()), float(ax[col_right].max())
    largest_wrong, smallest_wrong = float(ax[col_wrong].max()), float(ax[col_wrong].min())
    if largest_wrong < smallest_right:
        return "small", (largest_wrong + smallest_right) / 2
    if smallest_wrong > largest_right:
        return "large", (smallest_wrong + largest_right) / 2
    return None


def _border(block: Block, a: torch.Tensor, n: torch.Tensor, scale: float) -> tuple[str, str] | None:
    """Mismatches confined to the edges of the input (else the output) leaf's last dimensions.

    A convolution, pooling or filter whose backward mishandles padding is wrong
    exactly there. Returns the side and a description of the edges, such as
    ``"rows 0 and 7, columns 0 and 7"``; None without a clear border.
    """
    for side, shape, dim in (("input", block.input_shape, 0), ("output", block.output_shape, 1)):
        wrong = block.mismatch.any(dim=dim)
        count = int(wrong.sum())
        geometry = _border_geometry(shape, wrong) if count >= 2 else None
        if geometry is None:
            continue
        coords, spatial, width, on_border = geometry
        # Only now the passes over the values: which positions have any gradient at all.
        peak = torch.fmax(_peak_along(a, dim), _peak_along(n, dim))
        used = (peak > _FIT_ABS * scale) | wrong
        if not bool((used & ~wrong & ~on_border).any()):
            continue  # nothing right inside the border: no contrast to speak of
        chance = _log_chance(int((used & on_border).sum()), int(used.sum()), count)
        if chance <= math.log(_BORDER_CHANCE):
            return side, _edge_names(coords, spatial, wrong, width)
    return None


def _peak_along(t: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.fmax(t.amax(dim=dim).abs(), t.amin(dim=dim).abs())


def _border_geometry(
    shape: tuple[int, ...], wrong: torch.Tensor
) -> tuple[list[torch.Tensor], tuple[int, ...], int, torch.Tensor] | None:
    """The narrowest border of the trailing (spatial) dimensions holding every wrong position.

    The last two dimensions when both have 3 or more entries (an image), else the
    last one when it has 4 or more (a signal). Returns each position's coordinates
    along them, the dimensions, the width and the border mask; None when no border
    up to :data:`_MAX_BORDER` wide leaves an inside.
    """
    if len(shape) >= 2 and shape[-1] >= 3 and shape[-2] >= 3:
        spatial = shape[-2:]
    elif len(shape) >= 1 and shape[-1] >= 4:
        spatial = shape[-1:]
    else:
        return None
    flat = torch.arange(wrong.numel(), device=wrong.device)
    coords = []
    for size in reversed(spatial):  # the last dimension varies fastest
        coords.append(flat % size)
        flat = flat // size
    coords.reverse()
    for width in range(1, _MAX_BORDER + 1):
        if any(size <= 2 * width for size in spatial):
            return None
        near = [(c < width) | (c >= size - width) for c, size in zip(coords, spatial, strict=True)]
        on_border = functools.reduce(torch.logical_or, near)
        if bool(on_border[wrong].all()):
            return coords, spatial, width, on_border
    return None


def _edge_names(
    coords: list[torch.Tensor], spatial: tuple[int, ...], wrong: torch.Tensor, width: int
) -> str:
    nouns = ("rows", "columns") if len(spatial) == 2 else ("positions",)
    parts = []
    for noun, c, size in zip(nouns, coords, spatial, strict=True):
        at = c[wrong]
        ends = []
        if bool((at < width).any()):
            ends.append("0" if width == 1 else f"0-{width - 1}")
        if bool((at >= size - width).any()):
            last = size - 1
            ends.append(f"{last}" if width == 1 else f"{size - width}-{last}")
        if ends:
            parts.append(f"{noun} {' and '.join(ends)}")
    return ", ".join(parts)


def _column_peak(t: torch.Tensor) -> torch.Tensor:
    """The largest |t| of each column (NaN where a column holds NaN)."""
    # Two reductions allocate less than t.abs() of a large block.
    return torch.fmax(t.amax(dim=0).abs(), t.amin(dim=0).abs())


def _log_binomial(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _log_chance(side: int, total: int, wrong: int) -> float:
    """Log-probability that ``wrong`` of ``total`` positions drawn at random all lie in ``side``."""
    if wrong > side:
        return 0.0  # cannot happen for a region; never report
    return _log_binomial(side, wrong) - _log_binomial(total, wrong)


def simple_integer(magnitude: float) -> tuple[int, bool] | None:
    """``(n, missing)`` when ``magnitude`` is close to ``1/n`` (missing) or ``n`` (extra).

    Only simple ratios count: small integers, powers of two and of ten.

    Examples:
        >>> simple_integer(0.25), simple_integer(64.3), simple_integer(0.731)
        ((4, True), (64, False), None)
    """
    for value, missing in ((1.0 / magnitude, True), (magnitude, False)):
        if not math.isfinite(value) or value > 2.0**62:
            continue
        n = round(value)
        if n >= 2 and _is_simple(n) and abs(value / n - 1.0) <= SIMPLE_REL:
            return n, missing
    return None


def _is_simple(n: int) -> bool:
    # Small integers, batch-like powers of two, and powers of ten; beyond 32 any
    # number is within 1 % of some integer, so naming it would mean nothing.
    if n <= 32:
        return True
    if n & (n - 1) == 0:
        return n <= 2**20
    return n <= 10**9 and 10 ** round(math.log10(n)) == n
