"""Turn a gradient mismatch into hints a person can act on.

When autograd and finite differences disagree, the shape of the disagreement
usually names the bug: the analytic gradient is half the numeric one (a
missing factor of 2), its negative (a sign error), its transpose, zero (a
detached tensor), or wrong only for negative inputs (a bad branch in a
backward formula). :func:`diagnose` looks for these patterns in Jacobian
blocks already computed; it never calls the user's function.

Every pattern must be clear before it is reported: a fit has to explain (almost)
every mismatched element, and a region has to be unlikely to arise by chance,
so a random error pattern gets no hint rather than a misleading one.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidArgument, UnsupportedInputError
from ..results import Hint
from ..validation import check_type

__all__ = [
    "Block",
    "diagnose",
    "format_factor",
    "input_leaf_hint",
    "zero_gradient_hint",
    "projected_factor_hint",
]

# Diagnostic thresholds. They judge the *shape* of an error that the caller's
# tolerances already found, so they are relative to the size of that error and
# do not belong in tolerances.py.

# |analytic| below this fraction of |numeric| counts as "autograd gave nothing";
# small enough that a real factor such as 1/1024 (mean over a batch) is not zero.
_ZERO_REL = 1e-6
# |numeric| below this fraction of |analytic| counts as "the output does not
# depend on it" even when a factor fit would succeed (FD noise can be
# consistent only by accident this far down).
_NUMERIC_ZERO_REL = 1e-6
# Looser: such elements count as zero only when no consistent factor explains them.
_NUMERIC_ZERO_LOOSE = 1e-3
# A factor fit: each element within 2 % of k, plus a hair of the block's scale.
_FIT_REL = 0.02
_FIT_ABS = 1e-9
# ... and at least 90 % of the mismatched elements must follow it.
_FIT_SHARE = 0.9
# A factor this close to 1 needs a tighter fit (a fraction of its distance to 1) to be
# named, as a small scale error ("analytic ≈ 1.001 × numeric everywhere").
_NEAR_ONE = 0.05
_NEAR_ONE_FIT = 0.1
# Closer to 1 than this no finite difference resolves a factor.
_NEAR_ONE_MIN = 1e-6
# Simple ratios (2, 1/4, 64, ...) are named when k is this close to them.
_SIMPLE_REL = 0.01
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
# Names listed in a hint before "and N more".
_MAX_NAMES = 3

# The widest border (in elements from each edge) looked for: a 7x7 kernel's reach.
_MAX_BORDER = 3
# A border is reported when the chance that the mismatched positions all fall on it at
# random is at most this. A padding bug spoils a whole edge (all 28 edge pixels of an
# 8x8 image: a chance of 1e-18), so the bar can be high enough that scattered errors
# (4 of 64 pixels happen to be edge pixels 3 times in 100) never read as one.
_BORDER_CHANCE = 1e-3

_KIND_ORDER = (
    "border",
    "zero",
    "sign",
    "factor",
    "transposed",
    "region",
    "one_input",
    "some_inputs",
    "one_output",
)


@dataclass(frozen=True, eq=False)
class Block:
    """One (output leaf, input leaf) block of the Jacobian, analytic and numeric.

    Row ``i`` of each matrix belongs to element ``i`` of the flattened output
    leaf, column ``j`` to element ``j`` of the flattened input leaf. Equality is
    identity (tensors have no single truth value).

    Attributes:
        output: Leaf path of the output, e.g. ``"output"`` or ``"output['loss']"``.
        input: Leaf path of the input, e.g. ``"inputs[0]"`` or ``"params/fc1.weight"``.
        output_shape: Shape of the output leaf.
        input_shape: Shape of the input leaf.
        analytic: ``(out_numel, in_numel)`` float tensor, d out[i] / d in[j] by autograd.
        numeric: Same shape, by finite differences.
        mismatch: Same shape, bool: True where ``|analytic - numeric|`` exceeds the tolerance.
        input_values: ``(in_numel,)`` float tensor, the point at which the Jacobian was taken.

    Raises:
        TypeError: A field has the wrong type.
        InvalidArgument: The tensors' shapes do not fit the leaf shapes.
        UnsupportedInputError: A matrix is complex.

    Examples:
        >>> import torch
        >>> x = torch.tensor([1.0, -2.0], dtype=torch.float64)
        >>> jac = torch.diag(2 * x)
        >>> block = Block("output", "inputs[0]", (2,), (2,), jac, jac,
        ...               torch.zeros(2, 2, dtype=torch.bool), x)
        >>> block.analytic.shape
        torch.Size([2, 2])
    """

    output: str
    input: str
    output_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    analytic: torch.Tensor
    numeric: torch.Tensor
    mismatch: torch.Tensor
    input_values: torch.Tensor

    def __post_init__(self) -> None:
        check_type(str, self.output, "output")
        check_type(str, self.input, "input")
        for name in ("output_shape", "input_shape"):
            shape = getattr(self, name)
            if not isinstance(shape, tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise InvalidArgument(f"{name}={shape!r} must be a tuple of ints >= 0.")
        for name in ("analytic", "numeric", "mismatch", "input_values"):
            check_type(torch.Tensor, getattr(self, name), name)
        rows, cols = math.prod(self.output_shape), math.prod(self.input_shape)
        for name in ("analytic", "numeric", "mismatch"):
            tensor: torch.Tensor = getattr(self, name)
            if tuple(tensor.shape) != (rows, cols):
                raise InvalidArgument(
                    f"{name} has shape {tuple(tensor.shape)}, but output_shape="
                    f"{self.output_shape} and input_shape={self.input_shape} "
                    f"need ({rows}, {cols})."
                )
            if tensor.is_complex():
                raise UnsupportedInputError(f"{name} is complex ({tensor.dtype}).")
        if self.mismatch.dtype != torch.bool:
            raise InvalidArgument(f"mismatch must be a bool tensor, not {self.mismatch.dtype}.")
        if self.input_values.numel() != cols:
            raise InvalidArgument(
                f"input_values has {self.input_values.numel()} elements, but "
                f"input_shape={self.input_shape} has {cols}."
            )
        if self.input_values.is_complex():
            raise UnsupportedInputError(f"input_values is complex ({self.input_values.dtype}).")


def format_factor(k: float) -> str:
    """Name what a ratio ``analytic / numeric == k`` suggests, for a hint's text.

    Ratios close (within 1 %) to ``n`` or ``1/n`` for a small integer, a power
    of two or a power of ten are named as an extra or missing factor, a ratio
    near -1 as a sign error; anything else is printed with three significant
    digits.

    Args:
        k: The ratio of the analytic to the numeric gradient.

    Returns:
        A phrase such as ``"a missing factor of 2"``, to end a sentence with.

    Examples:
        >>> format_factor(0.5)
        'a missing factor of 2'
        >>> format_factor(3.0)
        'an extra factor of 3'
        >>> format_factor(-1.0)
        'a sign error'
        >>> format_factor(-0.25)
        'a sign error and a missing factor of 4'
        >>> format_factor(0.731)
        'a wrong scale factor of 0.731'
    """
    if not math.isfinite(k) or k == 0.0:
        return f"a wrong scale factor of {_format_number(k)}"
    prefix = "a sign error and " if k < 0 else ""
    magnitude = abs(k)
    if abs(magnitude - 1.0) <= _SIMPLE_REL:
        return "a sign error" if k < 0 else "no wrong factor"
    simple = _simple_integer(magnitude)
    if simple is not None:
        n, missing = simple
        return f"{prefix}{'a missing' if missing else 'an extra'} factor of {n}"
    sign = "-" if k < 0 else ""
    return f"a wrong scale factor of {sign}{_format_number(magnitude)}"


def diagnose(blocks: Sequence[Block]) -> tuple[Hint, ...]:
    """Explain the mismatches of a gradient check as hints, most specific first.

    Looks, per block, for analytic gradients that are zero where the numeric
    ones are not (or the reverse), a consistent factor or sign between them, a
    transposition of a square 2-D input or output, and mismatches confined to
    negative, positive, small or large input values; then notes when only one
    input or one output leaf is wrong. The same finding in several blocks
    becomes one hint naming all of them. Non-finite elements are ignored.

    Args:
        blocks: The Jacobian blocks of one check, with their mismatch masks.

    Returns:
        Hints ordered zero, sign, factor, transposed, region, one_input,
        one_output; empty when nothing mismatches or no pattern is clear.

    Raises:
        TypeError: ``blocks`` holds something other than :class:`Block`.

    Examples:
        >>> import torch
        >>> x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
        >>> numeric = torch.diag(2 * x)      # d(x**2)/dx
        >>> analytic = torch.diag(x)         # a backward that forgot the 2
        >>> block = Block("output", "inputs[0]", (3,), (3,), analytic, numeric,
        ...               (analytic - numeric).abs() > 1e-5, x)
        >>> hints = diagnose([block])
        >>> [hint.kind for hint in hints], hints[0].factor
        (['factor'], 0.5)
        >>> "missing factor of 2" in hints[0].text
        True
        >>> diagnose([Block("output", "inputs[0]", (3,), (3,), numeric, numeric,
        ...                 torch.zeros(3, 3, dtype=torch.bool), x)])
        ()
    """
    blocks = tuple(blocks)
    for i, block in enumerate(blocks):
        check_type(Block, block, f"blocks[{i}]")
    wrong = [block for block in blocks if int(torch.count_nonzero(block.mismatch)) > 0]
    if not wrong:
        return ()

    findings: list[_Finding] = []
    for block in wrong:
        findings.extend(_analyse(block))
    hints = [_hint(group) for group in _group(findings)]
    hints.extend(_one_leaf_hints(blocks, wrong))
    hints.sort(key=lambda hint: _KIND_ORDER.index(hint.kind))  # stable: block order within a kind
    return tuple(hints)


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True, eq=False)
class _Finding:
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


def _analyse(block: Block) -> list[_Finding]:
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
            findings.append(_Finding("transposed", side, block, total, total))

    border = _border(block, a2, n2, sample.scale)
    if border is not None:
        # A ratio measured on edge pixels describes the edge handling, not a scale:
        # "a missing factor of 2" would send the reader to the wrong line.
        findings = [f for f in findings if f.kind not in ("factor", "sign")]
        side, variant = border
        findings.insert(0, _Finding("border", variant, block, total, total, side=side))

    region = _region(block, a2, n2, sample.scale)
    if region is not None and total >= 2:
        variant, threshold = region
        findings.append(_Finding("region", variant, block, total, total, threshold=threshold))
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


def _value_patterns(block: Block, values: _Values, factor: float | None = None) -> list[_Finding]:
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
        zero = _Finding("zero", "numeric", block, count, count)
    if zero is not None:
        return [zero]
    if fit is None:
        return []
    k, fitted = fit
    if abs(k + 1.0) <= _FIT_REL:
        return [_Finding("sign", "", block, count, fitted, factor=-1.0)]
    return [_Finding("factor", "", block, count, fitted, factor=k)]


def _zero(block: Block, values: _Values) -> _Finding | None:
    count = values.count
    if values.how_many(values.abs_a > _ZERO_REL * values.abs_n) == 0:
        # Whether autograd gave nothing at all is decided once, on all elements.
        return _Finding("zero", "analytic", block, count, count)
    if values.how_many(values.abs_n > _NUMERIC_ZERO_REL * values.abs_a) == 0:
        return _Finding("zero", "numeric", block, count, count)
    return None


def _all_zero(a: torch.Tensor, n: torch.Tensor) -> bool:
    """Whether ``a`` is (near) zero wherever it is finite, relative to ``n``."""
    return _finite_peak(a) <= _ZERO_REL * _finite_peak(n)


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
    if not math.isfinite(k) or abs(k) < _ZERO_REL or abs(k - 1.0) < _NEAR_ONE_MIN:
        return None
    # A factor near 1 (1.001) is a scale error only if it fits far tighter than its
    # distance to 1; anything looser is noise around a correct gradient.
    rel = _FIT_REL if abs(k - 1.0) >= _NEAR_ONE else _NEAR_ONE_FIT * abs(k - 1.0)
    residual = torch.add(values.a, values.n, alpha=-k).abs_()
    allowed = values.n.abs().mul_(rel * abs(k)).add_(_FIT_ABS * values.scale)
    fitted = values.how_many(residual <= allowed)
    if count == 1:
        # One element always "fits"; name it only when the ratio is a telling number.
        simple = abs(abs(k) - 1.0) <= _SIMPLE_REL or _simple_integer(abs(k)) is not None
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


def _simple_integer(magnitude: float) -> tuple[int, bool] | None:
    """``(n, missing)`` when ``magnitude`` is close to ``1/n`` (missing) or ``n`` (extra)."""
    for value, missing in ((1.0 / magnitude, True), (magnitude, False)):
        if not math.isfinite(value) or value > 2.0**62:
            continue
        n = round(value)
        if n >= 2 and _is_simple(n) and abs(value / n - 1.0) <= _SIMPLE_REL:
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


def _format_number(value: float) -> str:
    return f"{value:.3g}"


# --------------------------------------------------------------------------- texts


def _group(findings: list[_Finding]) -> list[list[_Finding]]:
    """Merge findings that say the same thing about different blocks."""
    groups: list[list[_Finding]] = []
    for finding in findings:
        for group in groups:
            if _same_story(group[0], finding):
                group.append(finding)
                break
        else:
            groups.append([finding])
    return groups


def _same_story(first: _Finding, other: _Finding) -> bool:
    if (first.kind, first.variant) != (other.kind, other.variant):
        return False
    if first.kind in ("zero", "region"):
        # A detached input or a wrong branch concerns one input leaf.
        return first.block.input == other.block.input and first.threshold == other.threshold
    if first.kind == "factor" and first.factor is not None and other.factor is not None:
        return abs(other.factor - first.factor) <= _FIT_REL * abs(first.factor)
    return True


def _names(names: list[str]) -> str:
    shown = ", ".join(f"'{name}'" for name in names[:_MAX_NAMES])
    more = len(names) - _MAX_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _hint(group: list[_Finding]) -> Hint:
    first = group[0]
    outputs = _unique([f.block.output for f in group])
    inputs = _unique([f.block.input for f in group])
    out_one = outputs[0] if len(outputs) == 1 else None
    in_one = inputs[0] if len(inputs) == 1 else None
    where = f"for {_names(outputs)} with respect to {_names(inputs)}"
    count = sum(f.count for f in group)
    fitted = sum(f.fitted for f in group)

    if first.kind == "zero":
        text = _zero_text(first.variant, outputs, inputs, count)
        return Hint("zero", text, output=out_one, input=in_one)

    if first.kind in ("sign", "factor"):
        factor = -1.0 if first.kind == "sign" else _weighted_factor(group)
        if count == 1:
            coverage = "the only mismatched element"
        elif fitted == count:
            coverage = "every mismatched element"
        else:
            coverage = f"{fitted} of {count} mismatched elements"
        if first.kind == "sign":
            text = (
                f"analytic ≈ −numeric on {coverage} {where} — a sign error "
                "(a missing minus, or operands swapped in a subtraction) in the backward?"
            )
        elif abs(factor - 1.0) < _NEAR_ONE and fitted == count:
            text = (
                f"analytic ≈ {factor:.4g} × numeric everywhere {where} (a "
                f"{_format_number(abs(factor - 1.0) * 100)}% scale error) — a constant "
                "slightly off in the backward (a rounded coefficient, an epsilon, 1/(n-1) "
                "for 1/n)?"
            )
        else:
            text = (
                f"analytic ≈ {_format_number(factor)} × numeric on {coverage} {where} "
                f"— {format_factor(factor)}?"
            )
        return Hint(first.kind, text, factor=factor, output=out_one, input=in_one)

    if first.kind == "border":
        leaf = _names(inputs if first.side == "input" else outputs)
        text = (
            f"the mismatch is concentrated at the border of {first.side} {leaf} "
            f"({first.variant}; {count} mismatched elements, none inside): check "
            "padding/edge handling in the backward (zero padding, the edges of a 'same' "
            "convolution or pooling window)"
        )
        return Hint("border", text, output=out_one, input=in_one)

    if first.kind == "transposed":
        text = (
            f"analytic ≈ numeric with the square {first.variant} matrix transposed {where} "
            "— is a matrix transposed (.T, .transpose, swapped matmul operands) in the backward?"
        )
        return Hint("transposed", text, output=out_one, input=in_one)

    return Hint("region", _region_text(first, outputs, inputs, count), output=out_one, input=in_one)


def _weighted_factor(group: list[_Finding]) -> float:
    total = sum(f.fitted for f in group)
    return sum((f.factor or 0.0) * f.fitted for f in group) / total


def _zero_text(variant: str, outputs: list[str], inputs: list[str], count: int) -> str:
    out, inp = _names(outputs), _names(inputs)
    noun = "output" if len(outputs) == 1 else "outputs"
    if variant == "analytic":
        verb = "depends" if len(outputs) == 1 else "depend"
        return (
            f"autograd gives no gradient for input {inp} although {noun} {out} {verb} on it "
            "— is it detached (`.detach()`, `.data`, `torch.no_grad()`, a NumPy round trip) "
            "on the way to the output?"
        )
    if variant == "analytic_partial":
        return (
            f"autograd gives a zero gradient on all {count} mismatched elements for {out} "
            f"with respect to {inp} where finite differences do not — is part of the "
            "computation detached, or does a backward return zeros there?"
        )
    if variant == "numeric_partial":
        return (
            f"autograd gives a gradient on all {count} mismatched elements for {out} with "
            f"respect to {inp} where finite differences give 0 — does a backward pass "
            "gradient through a branch the forward blocks (a mask, relu, clamp, where)?"
        )
    verb = "does" if len(outputs) == 1 else "do"
    return (
        f"autograd reports a gradient for input {inp} where {noun} {out} {verb} not depend "
        "on it (finite differences give 0) — does a backward return a gradient for an input "
        "the forward ignores, or are two gradients swapped?"
    )


def _region_text(first: _Finding, outputs: list[str], inputs: list[str], count: int) -> str:
    inp = ", ".join(inputs)
    elements = f"({count} of {count} mismatched elements)"
    head = f"the gradient of {_names(outputs)} is wrong only where"
    variant = first.variant
    if variant.startswith(("negative", "positive")):
        op = {"negative": "<", "positive": ">"}[variant.split("_")[0]]
        if variant.endswith("_inclusive"):
            op += "="
        side = variant.split("_")[0]
        return (
            f"{head} {inp} {op} 0 {elements}; the backward formula for {side} inputs may be "
            "wrong (e.g. an abs/relu/clamp/where branch)"
        )
    cut = _format_number(first.threshold if first.threshold is not None else math.nan)
    if variant == "small":
        return (
            f"{head} |{inp}| < {cut} {elements}; the backward may be wrong near 0, or finite "
            "differences straddle a kink there (abs, relu, sqrt, norm): try another point"
        )
    return (
        f"{head} |{inp}| > {cut} {elements}; the backward may overflow or lose precision for "
        "large inputs, or finite differences are inaccurate there (try float64 or a smaller eps)"
    )


def input_leaf_hint(leaves: Sequence[str], wrong: Sequence[str], output: str | None) -> Hint | None:
    """Name the input leaves whose gradients are wrong while the others' agree.

    One wrong leaf is a ``one_input`` hint; several (not all) a ``some_inputs``
    hint: what they share and the others do not is the path back to them, where
    a detached or mis-differentiated operation sits.

    Examples:
        >>> hint = input_leaf_hint(["w1", "b1", "w2"], ["w1", "b1"], "output")
        >>> hint.kind, hint.text[:52]
        ('some_inputs', "only the gradients with respect to 'w1', 'b1' are wr")
    """
    leaves = _unique(list(leaves))
    wrong = _unique([leaf for leaf in wrong if leaf in leaves])
    if len(leaves) < 2 or not wrong or len(wrong) == len(leaves):
        return None
    others = _names([leaf for leaf in leaves if leaf not in wrong])
    if len(wrong) == 1:
        text = (
            f"only the gradient with respect to '{wrong[0]}' is wrong; the others ({others}) agree"
        )
        return Hint("one_input", text, output=output, input=wrong[0])
    text = (
        f"only the gradients with respect to {_names(wrong)} are wrong; the others ({others}) "
        "agree — the gradient goes wrong on the path back to these alone: a .detach() or "
        ".data there, a statistic computed under torch.no_grad(), or a custom backward?"
    )
    return Hint("some_inputs", text, output=output)


def zero_gradient_hint(output: str, leaf: str) -> Hint:
    """The hint for an input autograd gives no gradient while finite differences do.

    Examples:
        >>> zero_gradient_hint("output", "params/w").text[:47]
        "autograd gives no gradient for input 'params/w'"
    """
    return Hint("zero", _zero_text("analytic", [output], [leaf], 0), output=output, input=leaf)


def projected_factor_hint(
    probe: tuple[float, float], entry: tuple[float, float], output: str, input: str
) -> Hint | None:
    """A factor seen by fast mode: the failing projection and its entry share one simple ratio.

    ``probe`` and ``entry`` are (analytic, numeric) pairs. A uniform factor k
    scales the projection and every entry alike; an error confined to some
    entries (a border, a branch) leaves the projection's ratio near 1 while the
    entry's is anything. Only a simple ratio (2, 1/4, -1...) is named.

    Examples:
        >>> projected_factor_hint((1.0, 2.0), (0.25, 0.5), "output", "x").text[:39]
        'analytic ≈ 0.5 × numeric on the failing'
        >>> projected_factor_hint((1.98, 2.0), (1.0, 0.5), "output", "x") is None
        True
    """
    (pa, pn), (ea, en) = probe, entry
    if not (pn and en and all(math.isfinite(v) for v in (pa, pn, ea, en))):
        return None
    k, k_entry = pa / pn, ea / en
    if abs(k - k_entry) > _FIT_REL * abs(k) or abs(k - 1.0) < _NEAR_ONE or abs(k) < _ZERO_REL:
        return None
    if abs(k + 1.0) <= _FIT_REL:
        k = -1.0
    elif _simple_integer(abs(k)) is None:
        return None
    text = (
        f"analytic ≈ {_format_number(k)} × numeric on the failing projection and on the entry "
        f"it narrows down to, for '{output}' with respect to '{input}' — {format_factor(k)}? "
        "(fast mode sees one projection; mode='full' checks every entry)"
    )
    return Hint("sign" if k == -1.0 else "factor", text, factor=k, output=output, input=input)


def _one_leaf_hints(blocks: tuple[Block, ...], wrong_blocks: list[Block]) -> list[Hint]:
    hints: list[Hint] = []
    inputs = _unique([b.input for b in blocks if b.analytic.numel() > 0])
    wrong_outputs = _unique([b.output for b in wrong_blocks])
    by_input = input_leaf_hint(
        inputs,
        [b.input for b in wrong_blocks],
        wrong_outputs[0] if len(wrong_outputs) == 1 else None,
    )
    if by_input is not None:
        hints.append(by_input)
    outputs = _unique([b.output for b in blocks if b.analytic.numel() > 0])
    wrong_inputs = _unique([b.input for b in wrong_blocks])
    if len(outputs) >= 2 and len(wrong_outputs) == 1:
        others = _names([leaf for leaf in outputs if leaf != wrong_outputs[0]])
        text = f"only the gradient of '{wrong_outputs[0]}' is wrong; the others ({others}) agree"
        other_one = wrong_inputs[0] if len(wrong_inputs) == 1 else None
        hints.append(Hint("one_output", text, output=wrong_outputs[0], input=other_one))
    return hints
