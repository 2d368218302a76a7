"""What a mode needs to judge ``fn`` at a point: the point, tolerances, names, and what it found."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..results import Hint, PairResult, ProbeResult
from .jacobian import Point
from .judging import LinearityProbe
from .options import CheckOptions
from .tolerances import Tolerances

__all__ = ["Problem", "Outcome", "BatchTiming"]


@dataclass
class Problem:
    """``fn`` at a point with the settings of one check; modes append notes and hints."""

    point: Point
    opts: CheckOptions
    tol: Tolerances
    u_in: float
    out_paths: list[str]
    notes: list[str] = field(default_factory=list)
    hints: list[Hint] = field(default_factory=list)

    @property
    def in_paths(self) -> list[str]:
        """Paths of the checked inputs."""
        return self.point.in_paths

    def linearity_probe(
        self,
        rows: list[torch.Tensor],
        cots: list[torch.Tensor],
        second: int,
        combined: int,
        drawn: str,
    ) -> LinearityProbe:
        """The linearity probe over batched vjp ``rows``, its figures still on the device.

        Row 0 is g1's vjp, row ``second`` g2's, row ``combined`` that of g1 - 2 g2;
        ``cots`` holds the cotangents, stacked the same way.
        """
        return LinearityProbe(
            rows,
            cots,
            second,
            combined,
            in_paths=self.in_paths,
            unit_roundoff=max(self.u_in, self.point.u_out),
            atol=self.tol.atol,
            drawn=drawn,
        )


@dataclass
class BatchTiming:
    """Seconds and rows of fast mode's two batches, from which auto mode predicts full mode."""

    difference_seconds: float = 0.0
    difference_rows: int = 0
    backward_seconds: float = 0.0
    backward_rows: int = 0


@dataclass
class Outcome:
    """What one mode concluded, and how long its batches took."""

    passed: bool
    pairs: list[PairResult] = field(default_factory=list)
    probes: list[ProbeResult] = field(default_factory=list)
    timing: BatchTiming = field(default_factory=BatchTiming)
    # per block (an input path, prefixed by the output's with several outputs): the
    # smallest uniform relative error of the backward that this outcome would fail
    resolution: list[tuple[str, float]] = field(default_factory=list)
