"""Findings turned into hints a person can act on: one text per story, blocks merged.

The same finding in several blocks becomes one hint naming all of them; a ratio
is named as a missing or extra factor, or a sign error (:func:`format_factor`).
Fast mode, which sees projections rather than blocks, uses the single-hint
helpers (:func:`input_leaf_hint`, :func:`zero_gradient_hint`,
:func:`projected_factor_hint`) directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..results import Hint
from .block import Block
from .patterns import (
    FIT_REL,
    NEAR_ONE,
    SIMPLE_REL,
    ZERO_REL,
    Finding,
    simple_integer,
)

__all__ = [
    "format_factor",
    "group_findings",
    "hint_of",
    "input_leaf_hint",
    "leaf_hints",
    "projected_factor_hint",
    "zero_gradient_hint",
]

# Names listed in a hint before "and N more".
_MAX_NAMES = 3


def format_number(value: float) -> str:
    """A number in a hint: three significant digits.

    Examples:
        >>> format_number(0.73125), format_number(1024.0)
        ('0.731', '1.02e+03')
    """
    return f"{value:.3g}"


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
        return f"a wrong scale factor of {format_number(k)}"
    prefix = "a sign error and " if k < 0 else ""
    magnitude = abs(k)
    if abs(magnitude - 1.0) <= SIMPLE_REL:
        return "a sign error" if k < 0 else "no wrong factor"
    simple = simple_integer(magnitude)
    if simple is not None:
        n, missing = simple
        return f"{prefix}{'a missing' if missing else 'an extra'} factor of {n}"
    sign = "-" if k < 0 else ""
    return f"a wrong scale factor of {sign}{format_number(magnitude)}"


def group_findings(findings: list[Finding]) -> list[list[Finding]]:
    """Merge findings that say the same thing about different blocks, in first-seen order.

    The same kind and variant make one story; a zero or region must concern the
    same input leaf, a factor be the same up to the fit's tolerance.
    """
    groups: list[list[Finding]] = []
    for finding in findings:
        for group in groups:
            if _same_story(group[0], finding):
                group.append(finding)
                break
        else:
            groups.append([finding])
    return groups


def _same_story(first: Finding, other: Finding) -> bool:
    if (first.kind, first.variant) != (other.kind, other.variant):
        return False
    if first.kind in ("zero", "region"):
        # A detached input or a wrong branch concerns one input leaf.
        return first.block.input == other.block.input and first.threshold == other.threshold
    if first.kind == "factor" and first.factor is not None and other.factor is not None:
        return abs(other.factor - first.factor) <= FIT_REL * abs(first.factor)
    return True


def _names(names: list[str]) -> str:
    shown = ", ".join(f"'{name}'" for name in names[:_MAX_NAMES])
    more = len(names) - _MAX_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def hint_of(group: list[Finding]) -> Hint:
    """The one hint that tells a group's story (see :func:`group_findings`), naming its blocks.

    Examples:
        >>> import torch
        >>> from gradcheck_kit._src.engine.patterns import analyse
        >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> block = Block("output", "inputs[0]", (2,), (2,), torch.diag(x), torch.diag(2 * x),
        ...               torch.eye(2, dtype=torch.bool), x)
        >>> hint_of(analyse(block)).text[:64]
        "analytic ≈ 0.5 × numeric on every mismatched element for 'output"
    """
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
        elif abs(factor - 1.0) < NEAR_ONE and fitted == count:
            text = (
                f"analytic ≈ {factor:.4g} × numeric everywhere {where} (a "
                f"{format_number(abs(factor - 1.0) * 100)}% scale error) — a constant "
                "slightly off in the backward (a rounded coefficient, an epsilon, 1/(n-1) "
                "for 1/n)?"
            )
        else:
            text = (
                f"analytic ≈ {format_number(factor)} × numeric on {coverage} {where} "
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


def _weighted_factor(group: list[Finding]) -> float:
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


def _region_text(first: Finding, outputs: list[str], inputs: list[str], count: int) -> str:
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
    cut = format_number(first.threshold if first.threshold is not None else math.nan)
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
    if abs(k - k_entry) > FIT_REL * abs(k) or abs(k - 1.0) < NEAR_ONE or abs(k) < ZERO_REL:
        return None
    if abs(k + 1.0) <= FIT_REL:
        k = -1.0
    elif simple_integer(abs(k)) is None:
        return None
    text = (
        f"analytic ≈ {format_number(k)} × numeric on the failing projection and on the entry "
        f"it narrows down to, for '{output}' with respect to '{input}' — {format_factor(k)}? "
        "(fast mode sees one projection; mode='full' checks every entry)"
    )
    return Hint("sign" if k == -1.0 else "factor", text, factor=k, output=output, input=input)


def leaf_hints(blocks: tuple[Block, ...], wrong_blocks: list[Block]) -> list[Hint]:
    """``one_input``/``some_inputs`` and ``one_output`` hints: which leaves alone are wrong."""
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
