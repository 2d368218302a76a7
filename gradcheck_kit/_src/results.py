"""Result types of every check, and their JSON form.

Frozen dataclasses, so a result cannot be edited after the fact. Imports no
torch: a report can be rendered from JSON on a machine without it.
``to_dict()`` output follows ``schema.json`` (``SCHEMA_VERSION``); the tests
validate every emitted document against it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from .plain import PlainData, num
from .recording import Observable

__all__ = [
    "SCHEMA_VERSION",
    "summarizes",
    "WorstElement",
    "Hint",
    "ERROR_MAP_MAX_CELLS",
    "ErrorMap",
    "PairResult",
    "ProbeResult",
    "Resolution",
    "TorchVerdict",
    "RoutedCall",
    "GradcheckResult",
    "ThreeWayElement",
    "ManualPairResult",
    "ManualCheckResult",
    "SecondOrderResult",
    "AuditFinding",
    "FunctionAuditResult",
    "TrajectoryDivergence",
    "SameTrainingResult",
    "GraphCheckResult",
    "DdpLeaf",
    "DdpCheckResult",
]

SCHEMA_VERSION = 1

Status = Literal["passed", "mismatch", "nondeterministic", "shape_changed", "empty"]


@dataclass(frozen=True)
class _Entry(PlainData):
    """Where in a Jacobian: d output[output_index] / d input[input_index]."""

    output_index: tuple[int, ...]
    input_index: tuple[int, ...]


@dataclass(frozen=True)
class WorstElement(_Entry):
    """One Jacobian entry where analytic and numeric gradients differ most.

    ``output_index`` indexes the output tensor, ``input_index`` the input
    tensor; the entry is d output[output_index] / d input[input_index].

    Examples:
        >>> w = WorstElement((0,), (2,), analytic=1.0, numeric=2.0, abs_error=1.0,
        ...                  rel_error=0.5, allowed=0.002)
        >>> w.to_dict()["input_index"]
        [2]
    """

    analytic: float
    numeric: float
    abs_error: float
    rel_error: float
    allowed: float


@dataclass(frozen=True)
class Hint(PlainData):
    """A diagnosis of a mismatch pattern, with the sentence shown to people.

    ``kind`` is one of: ``factor``, ``sign``, ``transposed``, ``region``,
    ``zero``, ``one_input``, ``one_output``, ``nondeterministic``,
    ``domain``, ``forward_ad`` (a wrong jvp beside a right vjp), ``grad_output``
    (backward not linear in grad_output),
    ``shape_changed`` (an output changes shape under a small step of the inputs),
    ``border`` (the mismatch sits on the edges of an image or signal: padding),
    ``in_place_input`` (fn writes its input in place, so no two calls agree).

    Examples:
        >>> Hint(kind="sign", text="analytic ≈ -numeric: a sign error?").kind
        'sign'
    """

    kind: str
    text: str
    factor: float | None = None
    output: str | None = None
    input: str | None = None


# The most cells an ErrorMap has along each side: enough to see a transposed or a
# partly wrong block, small enough that a report of thousands of checks stays light.
ERROR_MAP_MAX_CELLS = 32


@dataclass(frozen=True)
class ErrorMap(PlainData):
    """|analytic − numeric| over one Jacobian block, max-pooled onto a small grid.

    The block is seen as a matrix: row ``r`` is the output entry with flat
    (row-major) index ``r``, column ``c`` the input entry with flat index ``c``;
    ``rows``/``cols`` are the two sizes. Cell ``(i, j)`` covers rows
    ``i*row_step`` to ``(i+1)*row_step - 1`` and columns ``j*col_step`` to
    ``(j+1)*col_step - 1`` (the last cell of a side may be smaller). It holds the
    largest |diff| there (``inf`` where one side is NaN), to 4 significant digits
    (a picture's worth; the exact worst entries are in the pair's ``worst``), in
    ``abs_error`` and the number of entries over their allowance in
    ``mismatched``. :meth:`steps` gives the steps that keep both sides within
    :data:`ERROR_MAP_MAX_CELLS`.

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


R = TypeVar("R", bound="_Verdict")
F = TypeVar("F", bound=Callable[[Any], str])

# The text of each kind of result, registered by messages.py (the one place text is
# composed) when the package loads: results are data and never import their wording, as
# torch.testing's ErrorMeta is worded at the API boundary, not where the mismatch is found.
_SUMMARIES: dict[str, Callable[[Any], str]] = {}


def summarizes(kind: str) -> Callable[[F], F]:
    """Register the decorated function as ``summary()`` of the results of ``kind``.

    Examples:
        >>> @summarizes("example")
        ... def format_example(result):
        ...     return f"{result.name} passed: {result.passed}"
        >>> _SUMMARIES["example"] is format_example
        True
        >>> del _SUMMARIES["example"]
    """

    def register(format: F) -> F:
        _SUMMARIES[kind] = format
        return format

    return register


class _Verdict(PlainData, Observable):
    """What every check's result shares: the verdict, hints, the test that made it."""

    passed: bool
    hints: tuple[Hint, ...]
    kind: str

    def summary(self) -> str:
        """A multi-line, human-readable account of the check (the assertion's message)."""
        return _SUMMARIES[self.kind](self)

    @property
    def hint(self) -> str | None:
        """The most specific diagnosis as one sentence, or None when there is none."""
        return self.hints[0].text if self.hints else None

    def __bool__(self) -> bool:
        return self.passed

    def with_test_id(self: R, test_id: str | None) -> R:
        """A copy labelled with the test that made it (used by the pytest plugin)."""
        return cast(R, dataclasses.replace(cast(Any, self), test_id=test_id))

    def _extra(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "hint": self.hint}


@dataclass(frozen=True)
class _Block(PlainData):
    """Where a comparison was made: one (output leaf, input leaf) block, and its verdict."""

    output: str
    input: str
    output_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    passed: bool


@dataclass(frozen=True)
class PairResult(_Block):
    """The comparison for one (output leaf, input leaf) block of the Jacobian.

    ``error_map`` (optional, ``None`` when the checker did not build the block,
    as in fast mode) is a pooled picture of the whole block for reports.

    Examples:
        >>> pair = PairResult("output", "inputs[0]", (3,), (3,), passed=True,
        ...                   max_abs_error=1e-10, max_rel_error=1e-9, mismatched=0, total=9)
        >>> pair.passed, pair.total
        (True, 9)
    """

    max_abs_error: float
    max_rel_error: float
    mismatched: int
    total: int
    worst: tuple[WorstElement, ...] = ()
    error_map: ErrorMap | None = None


@dataclass(frozen=True)
class ProbeResult(PlainData):
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


@dataclass(frozen=True)
class Resolution(PlainData):
    """The smallest relative gradient error a check could have caught on one block.

    A backward scaled by ``1 + d`` everywhere on ``block`` fails the check for
    every ``|d| >= relative``: the finite differences' own error estimate (and
    atol, and the backward's roundoff) hide anything smaller. ``block`` is an
    input path (``"inputs[0]"``, ``"params/weight"``), prefixed by the output
    path when fn has several outputs.

    Examples:
        >>> Resolution("params/weight", 3e-7).text()
        'would catch relative errors ≥ 3e-07 on params/weight'
    """

    block: str
    relative: float

    def text(self) -> str:
        """The sentence a summary or report shows."""
        return f"would catch relative errors ≥ {self.relative:.2g} on {self.block}"


@dataclass(frozen=True)
class TorchVerdict(PlainData):
    """What torch's own gradcheck said about a routed call (``--gradcheck-torch=compare``).

    ``verdict`` is ``"passed"``, ``"failed"`` (it raised its ``GradcheckError`` or
    returned False) or ``"error"`` (it raised anything else); ``error`` is the
    first line of what it raised.

    Examples:
        >>> TorchVerdict(verdict="failed", seconds=0.01, error="Jacobian mismatch").to_dict()
        {'verdict': 'failed', 'seconds': 0.01, 'error': 'Jacobian mismatch'}
    """

    verdict: Literal["passed", "failed", "error"]
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class RoutedCall(PlainData):
    """A check that ``pytest --gradcheck-torch`` routed from torch's gradcheck to the drop-in.

    ``function`` is the torch function the code called, ``caller`` where it was
    called from (``file:line``, the first frame outside torch), ``seconds`` the
    drop-in's wall time. In compare mode ``torch`` holds torch's own verdict,
    ``agree`` whether both verdicts are the same and ``disagreement`` why not.

    Examples:
        >>> call = RoutedCall("torch.autograd.gradcheck", "tests/test_ops.py:12", "route", 0.02)
        >>> call.to_dict()["caller"]
        'tests/test_ops.py:12'
    """

    function: str
    caller: str | None
    mode: Literal["route", "compare"]
    seconds: float
    torch: TorchVerdict | None = None
    agree: bool | None = None
    disagreement: str | None = None


@dataclass(frozen=True)
class _Settings(_Verdict):
    """What a check against finite differences ran with, beside its verdict.

    The fields of :meth:`.engine.run.CheckRun.settings`, first in every such result.
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


@dataclass(frozen=True)
class GradcheckResult(_Settings):
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

    pairs: tuple[PairResult, ...] = ()
    probes: tuple[ProbeResult, ...] = ()
    hints: tuple[Hint, ...] = ()
    notes: tuple[str, ...] = ()
    duration_s: float = 0.0
    evaluations: int = 0
    vectorized: bool = False
    # Jacobian entries the check covers: compared one by one (full mode) or projected
    # (fast mode); 0 where none were (a nondeterministic fn) or for older results.
    entries: int = 0
    check: str = "check_gradients"
    test_id: str | None = None
    inputs_file: str | None = None
    reproduce: str | None = None
    resolution: tuple[Resolution, ...] = ()
    # set where pytest --gradcheck-torch routed a call of torch's gradcheck here
    routed: RoutedCall | None = None
    kind: str = field(default="gradient", init=False)

    @property
    def max_abs_error(self) -> float:
        """The largest absolute difference over all Jacobian blocks (0.0 with none)."""
        return max((p.max_abs_error for p in self.pairs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        """The largest relative difference over all Jacobian blocks (0.0 with none)."""
        return max((p.max_rel_error for p in self.pairs), default=0.0)

    def _extra(self) -> dict[str, Any]:
        return {
            **super()._extra(),
            "max_abs_error": num(self.max_abs_error),
            "max_rel_error": num(self.max_rel_error),
        }


# ------------------------------------------------------------------ hand-written derivatives

OddOneOut = Literal["manual", "autograd", "numeric", "none"]

# The order in which a block's categories are named when several occur.
_ODD_ORDER: tuple[str, ...] = ("manual", "autograd", "numeric", "none")


@dataclass(frozen=True)
class ThreeWayElement(_Entry):
    """One gradient entry seen three ways: the user's derivative, autograd, finite differences.

    ``odd_one_out`` names the one that disagrees with the other two:
    ``"manual"`` (your derivative), ``"autograd"``, ``"numeric"`` (finite
    differences), or ``"none"`` when all three disagree. ``allowed`` is the
    allowance the comparison with finite differences used.

    Examples:
        >>> e = ThreeWayElement((), (1,), manual=1.0, autograd=2.0, numeric=2.0,
        ...                     allowed=0.002, odd_one_out="manual")
        >>> e.abs_error, e.to_dict()["odd_one_out"]
        (1.0, 'manual')
    """

    manual: float
    autograd: float
    numeric: float
    allowed: float
    odd_one_out: str

    @property
    def abs_error(self) -> float:
        """How far the odd one lies from the other two (for ``"none"``: your derivative from FD)."""
        if self.odd_one_out == "autograd":
            return abs(self.autograd - self.numeric)
        if self.odd_one_out == "numeric":
            return abs(self.numeric - self.manual)
        return abs(self.manual - self.numeric)


@dataclass(frozen=True)
class ManualPairResult(_Block):
    """The three-way comparison for one (output leaf, input leaf) block of the gradient.

    The counts say, per mismatched entry, which of the three was the odd one
    out; ``total`` is the number of entries compared. In ``"fast"`` mode the
    output is ``"projections"``: entry ``k`` of it is the gradient of
    ``<u_k, fn(inputs)>`` for a random cotangent ``u_k``.

    Examples:
        >>> pair = ManualPairResult("output", "inputs[0]", (), (3,), passed=False, total=3,
        ...                         manual_wrong=2, autograd_wrong=0, numeric_wrong=0,
        ...                         all_differ=0, max_abs_error=1.0)
        >>> pair.mismatched, pair.odd_one_out
        (2, 'manual')
    """

    total: int
    manual_wrong: int
    autograd_wrong: int
    numeric_wrong: int
    all_differ: int
    max_abs_error: float
    worst: tuple[ThreeWayElement, ...] = ()

    @property
    def mismatched(self) -> int:
        """Entries where the three do not all agree."""
        return self.manual_wrong + self.autograd_wrong + self.numeric_wrong + self.all_differ

    @property
    def counts(self) -> dict[str, int]:
        """Mismatched entries per odd one out (``manual``, ``autograd``, ``numeric``, ``none``)."""
        wrong = (self.manual_wrong, self.autograd_wrong, self.numeric_wrong, self.all_differ)
        return dict(zip(_ODD_ORDER, wrong, strict=True))

    @property
    def odd_one_out(self) -> str | None:
        """The odd one out of most mismatched entries; None when the block passed."""
        counts = self.counts
        if not any(counts.values()):
            return None
        return max(_ODD_ORDER, key=lambda k: (counts[k], -_ODD_ORDER.index(k)))


@dataclass(frozen=True)
class ManualCheckResult(_Settings):
    """A hand-written derivative compared with autograd and finite differences.

    Returned by :func:`gradcheck_kit.check_matches_manual`. ``passed`` is the
    verdict; ``odd_one_out`` says which of the three disagrees with the other
    two on most mismatched entries (``"manual"``, ``"autograd"``,
    ``"numeric"``, ``"none"``), None when all agree. ``interface`` is
    ``"grad"`` (``manual_grad(*inputs)``) or ``"vjp"``
    (``manual_vjp(grad_output, *inputs)``).

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> result = gk.check_matches_manual(lambda x: (x ** 2).sum(), lambda x: 2 * x, x)
        >>> result.passed, result.kind, result.odd_one_out
        (True, 'manual', None)
    """

    odd_one_out: str | None
    interface: str
    pairs: tuple[ManualPairResult, ...] = ()
    hints: tuple[Hint, ...] = ()
    notes: tuple[str, ...] = ()
    duration_s: float = 0.0
    evaluations: int = 0
    check: str = "check_matches_manual"
    test_id: str | None = None
    kind: str = field(default="manual", init=False)

    @property
    def max_abs_error(self) -> float:
        """The largest distance of an odd one out from the other two (0.0 with none)."""
        return max((p.max_abs_error for p in self.pairs), default=0.0)

    def _extra(self) -> dict[str, Any]:
        return {**super()._extra(), "max_abs_error": num(self.max_abs_error)}


@dataclass(frozen=True)
class SecondOrderResult(GradcheckResult):
    """Second derivatives (double backward) compared with finite differences of the gradient.

    Returned by :func:`gradcheck_kit.check_second_order`. The same fields as
    :class:`GradcheckResult`, read one order up: the function checked is the
    gradient map ``inputs -> grad`` (outputs named ``grad[<input>]``), its
    "analytic" Jacobian is the Hessian by double backward, its "numeric" one
    the finite differences of the gradient.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> result = gk.check_second_order(lambda x: x.sin().sum(), x)
        >>> result.passed, result.kind, result.pairs[0].output
        (True, 'second_order', 'grad[input]')
    """

    check: str = "check_second_order"
    kind: str = field(default="second_order", init=False)


AuditStatus = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class AuditFinding(PlainData):
    """One item of an audit of a custom ``torch.autograd.Function``.

    ``check`` names the property examined (``backward``, ``gradient_count``,
    ``gradient_shape``, ``gradient_dtype``, ``non_tensor_gradient``,
    ``non_differentiable``, ``forward_mode``, ``double_backward``,
    ``repeatable``, ``inputs_unchanged``); ``status`` is ``passed``,
    ``failed`` or ``skipped``; ``text`` says what was found and what to do.

    Examples:
        >>> f = AuditFinding("forward_mode", "skipped", "no jvp staticmethod")
        >>> f.to_dict()["status"]
        'skipped'
    """

    check: str
    status: str
    text: str
    input: str | None = None
    output: str | None = None


@dataclass(frozen=True)
class FunctionAuditResult(_Verdict):
    """Everything an audit of a custom ``torch.autograd.Function`` found.

    Returned by :func:`gradcheck_kit.check_autograd_function`. ``passed`` is
    False when any finding failed. ``gradient`` is the backward's check against
    finite differences, ``second_order`` the double-backward check (either is
    None when it could not run).

    Examples:
        >>> wrong = AuditFinding("gradient_dtype", "failed", "float32 for float64 input")
        >>> result = FunctionAuditResult(name="Square", passed=False, dtype="float64",
        ...                              dtype_policy="float64", seed=0, findings=(wrong,))
        >>> result.kind, [f.check for f in result.failed], result.hint
        ('autograd_function', ['gradient_dtype'], 'float32 for float64 input')
    """

    name: str
    passed: bool
    dtype: str
    dtype_policy: str
    seed: int
    findings: tuple[AuditFinding, ...] = ()
    gradient: GradcheckResult | None = None
    second_order: GradcheckResult | None = None
    hints: tuple[Hint, ...] = ()
    notes: tuple[str, ...] = ()
    duration_s: float = 0.0
    check: str = "check_autograd_function"
    test_id: str | None = None
    kind: str = field(default="autograd_function", init=False)

    @property
    def failed(self) -> tuple[AuditFinding, ...]:
        """The findings that failed, in the order they were examined."""
        return tuple(f for f in self.findings if f.status == "failed")

    @property
    def hint(self) -> str | None:
        """The first failed finding's text, else the first hint; None when all passed."""
        if self.failed:
            return self.failed[0].text
        return self.hints[0].text if self.hints else None


# --------------------------------------------------------------------------- training trajectories


@dataclass(frozen=True)
class TrajectoryDivergence(PlainData):
    """Where two training loops first part: after ``step`` (1-based), in one parameter entry.

    ``value_a``/``value_b`` are the entry's values in the two loops at that
    step; ``allowed`` the allowance ``atol + rtol * max(|a|, |b|)``.
    ``parameter_errors`` holds the largest difference of every parameter at
    that step.

    Examples:
        >>> d = TrajectoryDivergence(3, "params", (0,), value_a=1.0, value_b=1.5,
        ...                          abs_error=0.5, allowed=1e-4)
        >>> d.to_dict()["step"]
        3
    """

    step: int
    parameter: str
    index: tuple[int, ...]
    value_a: float
    value_b: float
    abs_error: float
    allowed: float
    parameter_errors: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class SameTrainingResult(_Verdict):
    """Two training loops run from the same parameters, compared step by step.

    Returned by :func:`gradcheck_kit.check_same_training`. ``divergence`` is
    the first step and parameter entry where they part (None when they agree
    for all ``steps``); ``max_abs_error`` the largest difference seen over the
    steps run; ``steps_run`` stops at the divergence.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> def halve(p):
        ...     p.mul_(0.5)
        >>> def halve_too(p):
        ...     return p / 2
        >>> result = gk.check_same_training(halve, halve_too, torch.ones(3), steps=4)
        >>> result.passed, result.steps_run, result.kind
        (True, 4, 'same_training')
    """

    name: str
    step_a: str
    step_b: str
    passed: bool
    steps: int
    steps_run: int
    dtype: str
    atol: float
    rtol: float
    seed: int
    parameters: tuple[str, ...] = ()
    divergence: TrajectoryDivergence | None = None
    max_abs_error: float = 0.0
    hints: tuple[Hint, ...] = ()
    notes: tuple[str, ...] = ()
    duration_s: float = 0.0
    check: str = "check_same_training"
    test_id: str | None = None
    kind: str = field(default="same_training", init=False)


# --------------------------------------------------------------------------- graph assertions


@dataclass(frozen=True)
class GraphCheckResult(_Verdict):
    """One graph assertion (``assert_requires_grad``, ``assert_no_graph``...) and its verdict.

    Published by every graph assertion of :mod:`gradcheck_kit`, passed or not,
    so that a report counts them like the other checks; a failed one is then
    raised as a :class:`GraphCheckError` carrying it (``.result``). ``check`` is
    the assertion's name, ``tensors`` the names of the tensors it examined,
    ``offending`` those that broke it, ``message`` the text it raised with
    (empty when it passed).

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> from gradcheck_kit.errors import GraphCheckError
        >>> try:
        ...     gk.assert_requires_grad(torch.zeros(2))
        ... except GraphCheckError as error:
        ...     result = error.result
        >>> result.kind, result.check, result.passed, result.offending
        ('graph', 'assert_requires_grad', False, ('argument 0',))
    """

    name: str
    check: str
    passed: bool
    tensors: tuple[str, ...] = ()
    offending: tuple[str, ...] = ()
    message: str = ""
    hints: tuple[Hint, ...] = ()
    duration_s: float = 0.0
    test_id: str | None = None
    kind: str = field(default="graph", init=False)

    def summary(self) -> str:
        """The assertion's message (empty when it passed)."""
        return self.message


# --------------------------------------------------------------------------- distributed training


@dataclass(frozen=True)
class DdpLeaf(PlainData):
    """One tensor of one rank compared with the single-process run (or with rank 0).

    ``what`` is ``"grad"`` (the gradient an optimizer step applied), ``"param"``
    (the parameter after that step) or ``"buffer"`` (after the last step); ``step``
    the optimizer step (1-based) where it differed most, 0 when the step never
    called the optimizer. ``index`` is the worst element; ``allowed`` the error
    allowed there. ``missing`` says which side had no tensor (``"reference"``,
    ``"rank"``) or ``"shape"`` when the shapes differ.

    Examples:
        >>> leaf = DdpLeaf("fc.weight", "grad", 1, 1, 0.5, 1e-6, (0, 1), 1.0, 0.5, 6, 6)
        >>> leaf.passed, leaf.to_dict()["what"]
        (False, 'grad')
    """

    parameter: str
    what: str
    rank: int
    step: int
    max_abs_error: float
    allowed: float
    index: tuple[int, ...]
    reference: float
    value: float
    mismatched: int
    numel: int
    missing: str | None = None

    @property
    def passed(self) -> bool:
        """No element outside the tolerance."""
        return self.mismatched == 0


@dataclass(frozen=True)
class DdpCheckResult(_Verdict):
    """DistributedDataParallel ranks compared with one process on the whole batch.

    Returned by :func:`gradcheck_kit.check_ddp_gradients`. ``leaves`` holds, per
    parameter (and buffer) and per rank, the worst difference from the
    single-process run; ``across_ranks`` the tensors where a rank differs from
    rank 0. ``compared_with_reference`` is False when the step draws random
    numbers (then only the ranks are compared with each other). ``rank_failure``
    is what a rank (or the single-process run, ``failed_rank=-1``) raised, or that
    it hung; the hints name the likely cause.

    Examples:
        >>> r = DdpCheckResult(name="step", passed=True, world_size=2, backend="gloo", steps=1,
        ...                    optimizer_steps=1, dtype="float32", atol=None, rtol=3e-4, seed=0)
        >>> r.kind, bool(r)
        ('ddp', True)
    """

    name: str
    passed: bool
    world_size: int
    backend: str
    steps: int
    optimizer_steps: int
    dtype: str
    atol: float | None
    rtol: float
    seed: int
    parameters: tuple[str, ...] = ()
    leaves: tuple[DdpLeaf, ...] = ()
    across_ranks: tuple[DdpLeaf, ...] = ()
    compared_with_reference: bool = True
    failed_rank: int | None = None
    rank_failure: str | None = None
    max_abs_error: float = 0.0
    hints: tuple[Hint, ...] = ()
    notes: tuple[str, ...] = ()
    launch_s: float = 0.0
    duration_s: float = 0.0
    check: str = "check_ddp_gradients"
    test_id: str | None = None
    kind: str = field(default="ddp", init=False)

    @property
    def failures(self) -> tuple[DdpLeaf, ...]:
        """The compared tensors that differ (from the reference when it is compared)."""
        own = self.leaves if self.compared_with_reference else ()
        return tuple(leaf for leaf in (*own, *self.across_ranks) if not leaf.passed)
