"""Forward mode judged where ``fn`` supports it: a jvp against finite differences and the vjp.

Both modes take one jvp per direction they already have differences for (fast
mode: each probe's ``v``; full mode: one random ``v`` dotted with the numeric
columns it computes anyway), so the check costs about one forward pass more and
no perturbed evaluation. A ``fn`` that forward AD cannot run through (a custom
``autograd.Function`` without ``jvp``, an op without a forward-mode formula) is
not a failure: the result says so in a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import torch

from ..results import Hint
from .jacobian import ForwardModeUnsupported, forward_directional
from .memory import format_bytes
from .problem import Problem

__all__ = ["FORWARD_AD_HINT", "jvp_or_note", "forward_ad_hint"]

FORWARD_AD_HINT: Final = (
    "the forward-mode derivative (jvp) disagrees with finite differences while the "
    "backward (vjp) agrees: check the Function's jvp staticmethod"
)


def jvp_or_note(problem: Problem, tangents: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """``J w`` by one jvp (flat float64 on the outputs' device), or None with a note saying why not.

    A jvp carries a tangent beside every activation: one evaluation's peak more
    than a plain call, which has to fit the budget.
    """
    point = problem.point
    extra = point.forward_peak(1)
    if extra > point.budget.available:
        _note_once(
            problem,
            f"forward mode was not checked: a jvp holds a tangent beside every activation "
            f"({format_bytes(extra)} more than a plain call), over max_memory",
        )
        return None
    try:
        return forward_directional(point, tangents)
    except ForwardModeUnsupported as exc:
        _note_once(
            problem,
            f"forward mode was not checked: forward-mode AD does not run through fn "
            f"({exc}); only reverse mode was compared with finite differences",
        )
        return None


def forward_ad_hint(detail: str) -> Hint:
    """The hint of a wrong jvp beside a right vjp, with the figures in ``detail``.

    Examples:
        >>> forward_ad_hint("u·Jv 2 vs 1").kind
        'forward_ad'
    """
    return Hint(kind="forward_ad", text=f"{FORWARD_AD_HINT} ({detail})")


def _note_once(problem: Problem, text: str) -> None:
    if text not in problem.notes:
        problem.notes.append(text)
