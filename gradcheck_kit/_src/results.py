"""Result types of every check, and their JSON form.

Frozen dataclasses, so a result cannot be edited after the fact. Imports no
torch: a report can be rendered from JSON on a machine without it.
``to_dict()`` output follows ``schema.json`` (``SCHEMA_VERSION``); the tests
validate every emitted document against it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "SCHEMA_VERSION",
    "WorstElement",
    "Hint",
    "ERROR_MAP_MAX_CELLS",
    "ErrorMap",
    "PairResult",
    "ProbeResult",
    "GradCheckResult",
]

SCHEMA_VERSION = 1

Status = Literal["passed", "mismatch", "nondeterministic"]


def _num(value: float | None) -> float | str | None:
    """JSON has no inf/nan: write them as strings, read them back in :func:`_from_num`."""
    if value is None:
        return None
    if math.isfinite(value):
        return float(value)
    return repr(float(value))  # 'inf', '-inf', 'nan'


def _from_num(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


@dataclass(frozen=True)
class WorstElement:
    """One Jacobian entry where analytic and numeric gradients differ most.

    ``output_index`` indexes the output tensor, ``input_index`` the input
    tensor; the entry is d output[output_index] / d input[input_index].

    Examples:
        >>> w = WorstElement((0,), (2,), analytic=1.0, numeric=2.0, abs_error=1.0,
        ...                  rel_error=0.5, allowed=0.002)
        >>> w.to_dict()["input_index"]
        [2]
    """

    output_index: tuple[int, ...]
    input_index: tuple[int, ...]
    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    allowed: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_index": list(self.output_index),
            "input_index": list(self.input_index),
            "analytic": _num(self.analytic),
            "numeric": _num(self.numeric),
            "abs_error": _num(self.abs_error),
            "rel_error": _num(self.rel_error),
            "allowed": _num(self.allowed),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorstElement:
        return cls(
            output_index=tuple(data["output_index"]),
            input_index=tuple(data["input_index"]),
            analytic=float(data["analytic"]),
            numeric=float(data["numeric"]),
            abs_error=float(data["abs_error"]),
            rel_error=float(data["rel_error"]),
            allowed=float(data["allowed"]),
        )


@dataclass(frozen=True)
class Hint:
    """A diagnosis of a mismatch pattern, with the sentence shown to people.

    ``kind`` is one of: ``factor``, ``sign``, ``transposed``, ``region``,
    ``zero``, ``one_input``, ``one_output``, ``nondeterministic``,
    ``domain``, ``forward``.

    Examples:
        >>> Hint(kind="sign", text="analytic ≈ -numeric: a sign error?").kind
        'sign'
    """

    kind: str
    text: str
    factor: float | None = None
    output: str | None = None
    input: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "text": self.text,
            "factor": _num(self.factor),
            "output": self.output,
            "input": self.input,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hint:
        return cls(
            kind=data["kind"],
            text=data["text"],
            factor=_from_num(data.get("factor")),
            output=data.get("output"),
            input=data.get("input"),
        )


# The most cells an ErrorMap has along each side: enough to see a transposed or a
# partly wrong block, small enough that a report of thousands of checks stays light.
ERROR_MAP_MAX_CELLS = 32


@dataclass(frozen=True)
class ErrorMap:
    """|analytic − numeric| over one Jacobian block, max-pooled onto a small grid.

    The block is seen as a matrix: row ``r`` is the output entry with flat
    (row-major) index ``r``, column ``c`` the input entry with flat index ``c``;
    ``rows``/``cols`` are the two sizes. Cell ``(i, j)`` covers rows
    ``i*row_step`` to ``(i+1)*row_step - 1`` and columns ``j*col_step`` to
    ``(j+1)*col_step - 1`` (the last cell of a side may be smaller). It holds the
    largest |diff| there (``inf`` where one side is NaN) in ``abs_error`` and the
    number of entries over their allowance in ``mismatched``. :meth:`steps` gives
    the steps that keep both sides within :data:`ERROR_MAP_MAX_CELLS`.

    Examples:
        >>> ErrorMap.steps(100, 3)
        (4, 1)
        >>> m = ErrorMap(rows=2, cols=2, row_step=1, col_step=1,
        ...              abs_error=((0.0, 1.0), (1.0, 0.0)), mismatched=((0, 1), (1, 0)))
        >>> ErrorMap.from_dict(m.to_dict()) == m
        True
    """

    rows: int
    cols: int
    row_step: int
    col_step: int
    abs_error: tuple[tuple[float, ...], ...]
    mismatched: tuple[tuple[int, ...], ...]

    @staticmethod
    def steps(rows: int, cols: int, max_cells: int = ERROR_MAP_MAX_CELLS) -> tuple[int, int]:
        """The pooling steps ``(row_step, col_step)`` for a ``rows`` x ``cols`` block.

        Examples:
            >>> ErrorMap.steps(6, 6)
            (1, 1)
            >>> ErrorMap.steps(1, 1000)
            (1, 32)
        """
        return max(1, -(-rows // max_cells)), max(1, -(-cols // max_cells))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "row_step": self.row_step,
            "col_step": self.col_step,
            "abs_error": [[_num(v) for v in row] for row in self.abs_error],
            "mismatched": [list(row) for row in self.mismatched],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorMap:
        return cls(
            rows=int(data["rows"]),
            cols=int(data["cols"]),
            row_step=int(data["row_step"]),
            col_step=int(data["col_step"]),
            abs_error=tuple(tuple(float(v) for v in row) for row in data["abs_error"]),
            mismatched=tuple(tuple(int(v) for v in row) for row in data["mismatched"]),
        )


@dataclass(frozen=True)
class PairResult:
    """The comparison for one (output leaf, input leaf) block of the Jacobian.

    ``error_map`` (optional, ``None`` when the checker did not build the block,
    as in fast mode) is a pooled picture of the whole block for reports.

    Examples:
        >>> pair = PairResult("output", "inputs[0]", (3,), (3,), passed=True,
        ...                   max_abs_error=1e-10, max_rel_error=1e-9, mismatched=0, total=9)
        >>> pair.passed, pair.total
        (True, 9)
    """

    output: str
    input: str
    output_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    passed: bool
    max_abs_error: float
    max_rel_error: float
    mismatched: int
    total: int
    worst: tuple[WorstElement, ...] = ()
    error_map: ErrorMap | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "input": self.input,
            "output_shape": list(self.output_shape),
            "input_shape": list(self.input_shape),
            "passed": self.passed,
            "max_abs_error": _num(self.max_abs_error),
            "max_rel_error": _num(self.max_rel_error),
            "mismatched": self.mismatched,
            "total": self.total,
            "worst": [w.to_dict() for w in self.worst],
            "error_map": None if self.error_map is None else self.error_map.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairResult:
        return cls(
            output=data["output"],
            input=data["input"],
            output_shape=tuple(data["output_shape"]),
            input_shape=tuple(data["input_shape"]),
            passed=bool(data["passed"]),
            max_abs_error=float(data["max_abs_error"]),
            max_rel_error=float(data["max_rel_error"]),
            mismatched=int(data["mismatched"]),
            total=int(data["total"]),
            worst=tuple(WorstElement.from_dict(w) for w in data["worst"]),
            error_map=(
                ErrorMap.from_dict(data["error_map"]) if data.get("error_map") is not None else None
            ),
        )


@dataclass(frozen=True)
class ProbeResult:
    """One random projection ``u^T J v`` of fast mode, computed three ways.

    ``allowed`` is the finite differences' own error estimate times a safety
    factor: a probe over it is a *suspect*, which fast mode then narrows down
    to one Jacobian entry and judges with the per-entry atol/rtol.

    Examples:
        >>> p = ProbeResult(reverse=1.0, forward=None, numeric=1.0, error_estimate=1e-9,
        ...                 allowed=4e-9, passed=True)
        >>> p.to_dict()["forward"] is None
        True
    """

    reverse: float
    forward: float | None
    numeric: float
    error_estimate: float
    allowed: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "reverse": _num(self.reverse),
            "forward": _num(self.forward),
            "numeric": _num(self.numeric),
            "error_estimate": _num(self.error_estimate),
            "allowed": _num(self.allowed),
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        return cls(
            reverse=float(data["reverse"]),
            forward=_from_num(data.get("forward")),
            numeric=float(data["numeric"]),
            error_estimate=float(data["error_estimate"]),
            allowed=float(data["allowed"]),
            passed=bool(data["passed"]),
        )


@dataclass(frozen=True)
class GradCheckResult:
    """Everything one gradient check found. ``passed`` is the verdict.

    Returned by :func:`gradcheck_kit.check_gradients` and
    :func:`gradcheck_kit.check_module_gradients`; never raised.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> result = gk.check_gradients(torch.sin, x)
        >>> result.passed, result.mode
        (True, 'full')
    """

    name: str
    passed: bool
    status: Status
    mode: str
    mode_requested: str
    dtype: str
    dtype_policy: str
    eps: float
    atol: float
    rtol: float
    seed: int
    rng: str
    pairs: tuple[PairResult, ...] = ()
    probes: tuple[ProbeResult, ...] = ()
    hints: tuple[Hint, ...] = ()
    notes: tuple[str, ...] = ()
    duration_s: float = 0.0
    evaluations: int = 0
    vectorized: bool = False
    check: str = "check_gradients"
    test_id: str | None = None
    kind: str = field(default="gradient", init=False)

    @property
    def hint(self) -> str | None:
        """The most specific diagnosis as one sentence, or None when there is none."""
        return self.hints[0].text if self.hints else None

    @property
    def max_abs_error(self) -> float:
        """The largest absolute difference over all Jacobian blocks (0.0 with none)."""
        return max((p.max_abs_error for p in self.pairs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        """The largest relative difference over all Jacobian blocks (0.0 with none)."""
        return max((p.max_rel_error for p in self.pairs), default=0.0)

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        """A multi-line, human-readable account of the check (the assertion's message)."""
        from .messages import format_result

        return format_result(self)

    def with_test_id(self, test_id: str | None) -> GradCheckResult:
        """A copy labelled with the test that made it (used by the pytest plugin)."""
        return dataclasses.replace(self, test_id=test_id)

    def to_dict(self) -> dict[str, Any]:
        """This result as plain JSON-ready data (schema ``SCHEMA_VERSION``)."""
        return {
            "kind": self.kind,
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "check": self.check,
            "test_id": self.test_id,
            "passed": self.passed,
            "status": self.status,
            "mode": self.mode,
            "mode_requested": self.mode_requested,
            "dtype": self.dtype,
            "dtype_policy": self.dtype_policy,
            "eps": _num(self.eps),
            "atol": _num(self.atol),
            "rtol": _num(self.rtol),
            "seed": self.seed,
            "rng": self.rng,
            "vectorized": self.vectorized,
            "duration_s": self.duration_s,
            "evaluations": self.evaluations,
            "max_abs_error": _num(self.max_abs_error),
            "max_rel_error": _num(self.max_rel_error),
            "hint": self.hint,
            "hints": [h.to_dict() for h in self.hints],
            "notes": list(self.notes),
            "pairs": [p.to_dict() for p in self.pairs],
            "probes": [p.to_dict() for p in self.probes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradCheckResult:
        """Rebuild a result from :meth:`to_dict` output."""
        return cls(
            name=data["name"],
            passed=bool(data["passed"]),
            status=data["status"],
            mode=data["mode"],
            mode_requested=data["mode_requested"],
            dtype=data["dtype"],
            dtype_policy=data["dtype_policy"],
            eps=float(data["eps"]),
            atol=float(data["atol"]),
            rtol=float(data["rtol"]),
            seed=int(data["seed"]),
            rng=data["rng"],
            pairs=tuple(PairResult.from_dict(p) for p in data["pairs"]),
            probes=tuple(ProbeResult.from_dict(p) for p in data["probes"]),
            hints=tuple(Hint.from_dict(h) for h in data["hints"]),
            notes=tuple(data["notes"]),
            duration_s=float(data["duration_s"]),
            evaluations=int(data["evaluations"]),
            vectorized=bool(data["vectorized"]),
            check=data.get("check", "check_gradients"),
            test_id=data.get("test_id"),
        )
