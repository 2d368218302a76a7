"""Default step sizes and tolerances, keyed by the dtype the check runs in.

This is the one home of the numbers. Float64 uses torch.autograd.gradcheck's
long-standing defaults (step 1e-6, atol 1e-5, rtol 1e-3) so verdicts are
comparable. Lower precisions take their step from the floating-point error
model of central differences: truncation error grows like h**2 and roundoff
like eps/h, so the best step is near eps**(1/3), and the tolerance on top of
the per-element error estimate covers the backward pass's own roundoff.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..validation import check_nonnegative, check_positive

__all__ = ["Tolerances", "resolve_tolerances", "machine_eps"]


@dataclass(frozen=True)
class Tolerances:
    """The numbers one check runs with.

    ``eps`` is the base finite-difference step (scaled by ``max(1, |x|)`` per
    element); an element passes when ``|analytic - numeric| <= atol + rtol *
    |numeric| + safety * error_estimate``.
    """

    eps: float
    atol: float
    rtol: float
    safety: float
    unit_roundoff: float


# dtype -> (eps, atol, rtol, safety)
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
) -> Tolerances:
    """Fill in the defaults for ``dtype`` where the caller gave None.

    Raises:
        InvalidArgument: for a non-positive ``eps`` or a negative tolerance.

    Examples:
        >>> import torch
        >>> resolve_tolerances(torch.float64).atol
        1e-05
        >>> resolve_tolerances(torch.float64, atol=0.5).atol
        0.5
    """
    check_positive(eps, "eps")
    check_nonnegative(atol, "atol")
    check_nonnegative(rtol, "rtol")
    d_eps, d_atol, d_rtol, safety = _DEFAULTS.get(dtype, _DEFAULTS[torch.float32])
    return Tolerances(
        eps=float(eps) if eps is not None else d_eps,
        atol=float(atol) if atol is not None else d_atol,
        rtol=float(rtol) if rtol is not None else d_rtol,
        safety=safety,
        unit_roundoff=machine_eps(dtype),
    )
