"""The process-wide torch modes a check might flip, captured and put back as one value."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..compat import default_device
from ..engine.precision import Tf32Settings

__all__ = ["GlobalModes"]


@dataclass(frozen=True)
class GlobalModes:
    """Process-wide torch settings a check might flip.

    Examples:
        >>> GlobalModes.capture().grad_enabled == torch.is_grad_enabled()
        True
    """

    grad_enabled: bool
    anomaly_enabled: bool
    anomaly_check_nan: bool
    default_dtype: torch.dtype
    default_device: torch.device
    deterministic: bool
    deterministic_warn_only: bool
    tf32: Tf32Settings

    @classmethod
    def capture(cls) -> GlobalModes:
        """Read the current modes.

        Examples:
            >>> GlobalModes.capture() == GlobalModes.capture()
            True
        """
        return cls(
            grad_enabled=torch.is_grad_enabled(),
            anomaly_enabled=torch.is_anomaly_enabled(),
            anomaly_check_nan=torch.is_anomaly_check_nan_enabled(),
            default_dtype=torch.get_default_dtype(),
            default_device=default_device(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            tf32=Tf32Settings.capture(),
        )

    def restore(self) -> None:
        """Set every mode that differs from this capture back to it.

        Examples:
            >>> modes = GlobalModes.capture()
            >>> torch.set_default_dtype(torch.float64)
            >>> modes.restore()
            >>> torch.get_default_dtype()
            torch.float32
        """
        now = GlobalModes.capture()
        if now.grad_enabled != self.grad_enabled:
            torch.set_grad_enabled(self.grad_enabled)
        if (now.anomaly_enabled, now.anomaly_check_nan) != (
            self.anomaly_enabled,
            self.anomaly_check_nan,
        ):
            torch.set_anomaly_enabled(self.anomaly_enabled, self.anomaly_check_nan)
        if now.default_dtype != self.default_dtype:
            torch.set_default_dtype(self.default_dtype)
        if now.default_device != self.default_device:
            # None drops the global device context instead of pushing a "cpu" one,
            # which would slow every factory call down.
            target = None if self.default_device.type == "cpu" else self.default_device
            torch.set_default_device(target)
        if (now.deterministic, now.deterministic_warn_only) != (
            self.deterministic,
            self.deterministic_warn_only,
        ):
            torch.use_deterministic_algorithms(
                self.deterministic, warn_only=self.deterministic_warn_only
            )
        if now.tf32 != self.tf32:
            self.tf32.restore()

    def diff(self, other: GlobalModes) -> list[str]:
        """Name each mode that differs, from this capture to ``other``.

        Examples:
            >>> a = GlobalModes.capture()
            >>> with torch.no_grad():
            ...     b = GlobalModes.capture()
            >>> a.diff(b)
            ['grad mode changed from True to False']
        """
        names = (
            ("grad_enabled", "grad mode"),
            ("anomaly_enabled", "anomaly detection"),
            ("anomaly_check_nan", "anomaly detection's NaN check"),
            ("default_dtype", "default dtype"),
            ("default_device", "default device"),
            ("deterministic", "deterministic algorithms"),
            ("deterministic_warn_only", "deterministic algorithms' warn_only"),
            ("tf32", "TF32 settings"),
        )
        out = []
        for attr, what in names:
            old, new = getattr(self, attr), getattr(other, attr)
            if old != new:
                out.append(f"{what} changed from {old} to {new}")
        return out
