"""Default step sizes and tolerances, keyed by the dtype the check runs in.

This is the one home of the numbers. Float64 uses torch.autograd.gradcheck's
step (1e-6) and atol (1e-5). Lower precisions take their step from the
floating-point error model of central differences: truncation error grows like
h**2 and roundoff like eps/h, so the best step is near eps**(1/3).

The relative part is not a fixed fraction such as torch's rtol=1e-3, which
hides a backward off by 0.1 % everywhere: each entry is allowed ``safety``
times its own finite-difference error estimate (roundoff, and truncation where
the step sizes disagree), plus ``sqrt(u)`` relative for the backward pass's own
roundoff (1.5e-8 in float64, 3.5e-4 in float32). A ``rtol`` or ``atol`` the
caller passes replaces the default as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..validation import check_nonnegative, check_positive

__all__ = ["Tolerances", "resolve_tolerances", "machine_eps"]


@dataclass(frozen=True)
class Tolerances:
    """The numbers one check runs with.

    ``eps`` is the base finite-difference step (scaled by ``max(1, |x|)`` per
    element, unless ``absolute_steps``: then every element moves by ``eps``, as in
    ``torch.autograd.gradcheck``); an element passes when ``|analytic - numeric|
    <= atol + rtol * |numeric| + safety * error_estimate``.
    """

    eps: float
    atol: float
    rtol: float
    safety: float
    unit_roundoff: float
    absolute_steps: bool = False


def _root_u(dtype: torch.dtype) -> float:
    # the backward's own roundoff: sums of many terms lose up to about sqrt(u) relative
    return math.sqrt(float(torch.finfo(dtype).eps))


# dtype -> (eps, atol, rtol, safety); rtol is the fixed one of checks without a
# per-entry error estimate (the Function audit, second order, hand-written derivatives)
_DEFAULTS: dict[torch.dtype, tuple[float, float, float, float]] = {
    torch.float64: (1e-6, 1e-5, 1e-3, 4.0),
    torch.float32: (torch.finfo(torch.float32).eps ** (1 / 3), 1e-4, 1e-2, 4.0),
    torch.float16: (torch.finfo(torch.float16).eps ** (1 / 3), 1e-2, 5e-2, 4.0),
    torch.bfloat16: (torch.finfo(torch.bfloat16).eps ** (1 / 3), 5e-2, 1e-1, 4.0),
}


def machine_eps(dtype: torch.dtype) -> float:
    """Unit roundoff of a floating dtype (``torch.finfo(dtype).eps``)."""
    return float(torch.finfo(dtype).eps)


def resolve_tolerances(
    dtype: torch.dtype,
    *,
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    by_estimate: bool = False,
    absolute_steps: bool = False,
) -> Tolerances:
    """Fill in the defaults for ``dtype`` where the caller gave None.

    With ``by_estimate`` (checks that judge each entry against its own
    finite-difference error estimate), the default ``rtol`` is ``sqrt(u)``, the
    backward's roundoff, instead of the fixed fraction of the table.

    Raises:
        InvalidArgument: for a non-positive ``eps`` or a negative tolerance.

    Examples:
        >>> import torch
        >>> resolve_tolerances(torch.float64).atol
        1e-05
        >>> resolve_tolerances(torch.float64, atol=0.5).atol
        0.5
        >>> resolve_tolerances(torch.float64, by_estimate=True).rtol < 1e-7
        True
    """
    check_positive(eps, "eps")
    check_nonnegative(atol, "atol")
    check_nonnegative(rtol, "rtol")
    d_eps, d_atol, d_rtol, safety = _DEFAULTS.get(dtype, _DEFAULTS[torch.float32])
    if by_estimate:
        d_rtol = _root_u(dtype if dtype in _DEFAULTS else torch.float32)
    return Tolerances(
        eps=float(eps) if eps is not None else d_eps,
        atol=float(atol) if atol is not None else d_atol,
        rtol=float(rtol) if rtol is not None else d_rtol,
        safety=safety,
        unit_roundoff=machine_eps(dtype),
        absolute_steps=absolute_steps,
    )
