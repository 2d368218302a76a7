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

The work is in three modules: :mod:`.block` (the input), :mod:`.patterns`
(what is wrong in one block) and :mod:`.hints` (the texts); this one runs them
in order and re-exports what the checks use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..results import Hint
from ..validation import check_type
from .block import Block
from .hints import (
    format_factor,
    group_findings,
    hint_of,
    input_leaf_hint,
    leaf_hints,
    projected_factor_hint,
    zero_gradient_hint,
)
from .patterns import Finding, analyse

__all__ = [
    "Block",
    "diagnose",
    "format_factor",
    "input_leaf_hint",
    "zero_gradient_hint",
    "projected_factor_hint",
]

# The order hints are shown in: the most specific story first.
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

    findings: list[Finding] = []
    for block in wrong:
        findings.extend(analyse(block))
    hints = [hint_of(group) for group in group_findings(findings)]
    hints.extend(leaf_hints(blocks, wrong))
    hints.sort(key=lambda hint: _KIND_ORDER.index(hint.kind))  # stable: block order within a kind
    return tuple(hints)
