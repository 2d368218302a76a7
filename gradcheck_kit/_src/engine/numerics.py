"""Finite-difference arithmetic: steps, central differences and their error estimates.

Pure tensor math on float64 results; no user functions are called here.

The central difference ``D(h) = (f(x+h) - f(x-h)) / 2h`` has a truncation
error ``c h**2`` and a roundoff error of about ``u |f| / h`` (``u`` the unit
roundoff of the dtype ``f`` is computed in). Evaluating at ``2h`` too gives
``D(h) - D(2h) = -3 c h**2 + noise``: an *empirical* estimate of both, which is
what lets the tolerance follow the function instead of a float64 constant.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "element_steps",
    "actual_steps",
    "roundoff_estimate",
    "allowed_error",
    "relative_error",
    "unravel",
]


def unravel(index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The multi-index of flat (row-major) ``index`` in ``shape``.

    Examples:
        >>> unravel(5, (2, 3))
        (1, 2)
    """
    out = []
    for size in reversed(shape):
        out.append(index % size if size else 0)
        index = index // size if size else 0
    return tuple(reversed(out))


def relative_error(abs_err: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
    """``|diff| / |numeric|``, inf where the numeric value is 0 and the difference is not."""
    denom = numeric.abs()
    rel = abs_err / denom
    return torch.where(denom > 0, rel, torch.where(abs_err > 0, math.inf, 0.0))


def element_steps(x: torch.Tensor, eps: float, *, absolute: bool = False) -> torch.Tensor:
    """Per-element step ``eps * max(1, |x|)`` (float64, flat); ``eps`` itself if ``absolute``.

    Scaling keeps ``x ± h`` representable with the same relative accuracy for
    large inputs, where a fixed absolute step would drown in roundoff. The
    drop-in for ``torch.autograd.gradcheck`` asks for torch's absolute step.
    """
    if absolute:
        return torch.full((int(x.numel()),), float(eps), dtype=torch.float64)
    mag = x.detach().reshape(-1).to(torch.float64).abs()
    mag = torch.where(torch.isfinite(mag), mag, 1.0)  # inf stays inf at any step
    return eps * torch.clamp(mag, min=1.0)


def actual_steps(plus: torch.Tensor, minus: torch.Tensor) -> torch.Tensor:
    """The step really taken, ``fl(x+h) - fl(x-h)``, in float64.

    In float32 ``x + h`` is rounded; dividing by the rounded step instead of
    ``2h`` removes that part of the error entirely.
    """
    return plus.to(torch.float64) - minus.to(torch.float64)


def roundoff_estimate(
    f_plus: torch.Tensor, f_minus: torch.Tensor, step: torch.Tensor, unit_roundoff: float
) -> torch.Tensor:
    """Roundoff error of a central difference: ``u (|f+| + |f-|) / step`` (float64)."""
    return unit_roundoff * (f_plus.abs() + f_minus.abs()) / step.abs()


def allowed_error(
    numeric: torch.Tensor,
    error_estimate: torch.Tensor,
    *,
    atol: float,
    rtol: float,
    safety: float,
) -> torch.Tensor:
    """Per-element allowance ``atol + rtol |numeric| + safety * error_estimate``."""
    return atol + rtol * numeric.abs() + safety * error_estimate
