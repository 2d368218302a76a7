"""The exception hierarchy of gradcheck_kit.

Two families, so that callers can tell a wrong gradient from a wrong call:

* :class:`GradcheckError` (an :class:`AssertionError`): a check ran and the
  program under test failed it. pytest shows these as test failures.
* :class:`InvalidArgument` (a :class:`ValueError`): the check could not run
  because of how it was called. Raised before any computation or mutation.

This module only defines types; the text of messages is composed elsewhere.
"""

from __future__ import annotations

__all__ = [
    "GradcheckKitError",
    "GradcheckError",
    "GradientMismatchError",
    "NondeterministicFunctionError",
    "InvalidArgument",
    "UnsupportedInputError",
    "NonFiniteOutputError",
    "JacobianTooLargeError",
    "MemoryBudgetError",
    "PerturbedEvaluationError",
    "RankFailedError",
    "DdpGradientError",
    "OutputShapeChangedError",
    "TrainingLoopError",
    "GraphCheckError",
    "TrainingLoopWarning",
    "InvalidArgumentType",
    "AutogradFunctionError",
    "TrainingDivergenceError",
    "DeviceParityError",
    "DeviceUnavailableError",
    "UnassertedCheckWarning",
]


class GradcheckKitError(Exception):
    """Root of every exception raised by gradcheck_kit itself.

    Examples:
        >>> issubclass(GradientMismatchError, GradcheckKitError)
        True
    """


class GradcheckError(GradcheckKitError, AssertionError):
    """A check ran and failed: the gradients (or the training loop) are wrong.

    Subclasses :class:`AssertionError`, so pytest reports it as a failure.
    Carries the failed check's result as ``.result`` when one exists.

    Examples:
        >>> isinstance(GradcheckError("x"), AssertionError), GradcheckError("x").result
        (True, None)
    """

    def __init__(self, message: str = "", result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class GradientMismatchError(GradcheckError):
    """Autograd's gradients disagree with the reference (finite differences or a manual derivative).

    The exception carries the full result as ``.result`` when one exists.

    Examples:
        >>> err = GradientMismatchError("Gradients are not close!")
        >>> err.result is None
        True
    """


class NondeterministicFunctionError(GradcheckError):
    """The function returned different outputs for the same inputs.

    Finite differences are meaningless then; check with ``rng="replay"``.

    Examples:
        >>> issubclass(NondeterministicFunctionError, GradcheckError)
        True
    """


class InvalidArgument(GradcheckKitError, ValueError):
    """A check was called wrongly (bad argument, unusable input or output).

    Examples:
        >>> isinstance(InvalidArgument("eps=-1 must be > 0"), ValueError)
        True
    """


class UnsupportedInputError(InvalidArgument):
    """An input or output of a kind the checker does not support yet (sparse, complex, ...).

    Examples:
        >>> issubclass(UnsupportedInputError, InvalidArgument)
        True
    """


class NonFiniteOutputError(InvalidArgument):
    """The function produced NaN or Inf at the point being checked.

    Examples:
        >>> issubclass(NonFiniteOutputError, ValueError)
        True
    """


class JacobianTooLargeError(InvalidArgument):
    """A check does not fit its memory budget (kept for code written against 0.1).

    Raised as its subclass :class:`MemoryBudgetError`.

    Examples:
        >>> issubclass(JacobianTooLargeError, InvalidArgument)
        True
    """


class MemoryBudgetError(JacobianTooLargeError):
    """Not even one evaluation of the function fits within ``max_memory``.

    Full mode streams the Jacobian in blocks and batches shrink to fit, so this
    is raised only when a single evaluation's copies of inputs and outputs do not
    fit; the message says how much would.

    Examples:
        >>> issubclass(MemoryBudgetError, JacobianTooLargeError)
        True
    """


class PerturbedEvaluationError(GradcheckKitError, RuntimeError):
    """The function raised at a point finite differences need, near the checked one.

    Usually the step left the function's domain (a Cholesky factor of a matrix
    that stops being positive definite, a log of a value that crosses 0). The
    message names the input, the index and the step; the function's own
    exception is the ``__cause__``.

    Examples:
        >>> issubclass(PerturbedEvaluationError, RuntimeError)
        True
    """


class OutputShapeChangedError(GradcheckError):
    """An output changes shape under an arbitrarily small change of the inputs.

    Discrete selections (matching, non-maximum suppression, thresholding) do
    that; finite differences cannot be taken across them. Raised by the
    assertions for a result with ``status == "shape_changed"``.

    Examples:
        >>> issubclass(OutputShapeChangedError, AssertionError)
        True
    """


class TrainingLoopError(GradcheckError):
    """A training loop, or one step of it, does something that silently spoils learning.

    Raised by :func:`gradcheck_kit.watch_training` at the end of the watched
    block and by the training assertions (``assert_zero_grad_between_steps``,
    ``assert_optimizer_tracks``, ``assert_params_updated``, ...). The full
    report is ``.report`` (a ``TrainingReport``), its findings ``.findings``.

    Examples:
        >>> err = TrainingLoopError("Gradient not reset between optimizer steps")
        >>> isinstance(err, AssertionError), err.findings
        (True, ())
    """

    def __init__(self, message: str = "", report: object | None = None) -> None:
        super().__init__(message, report)
        self.report = report

    @property
    def findings(self) -> tuple[object, ...]:
        """The findings of :attr:`report` (empty without one).

        Examples:
            >>> TrainingLoopError("x").findings
            ()
        """
        return tuple(getattr(self.report, "findings", ()))


class GraphCheckError(GradcheckError):
    """A tensor's autograd graph, grad mode, ``.grad`` or memory sharing is not what was asserted.

    Raised by ``assert_no_graph``, ``assert_detached``, ``assert_requires_grad``,
    ``assert_grad_is_none``, ``assert_graph_reaches``, ``assert_shares_memory``
    and ``assert_no_shared_memory``. Carries the assertion's
    :class:`~gradcheck_kit.results.GraphCheckResult` as ``.result`` when one exists.

    Examples:
        >>> issubclass(GraphCheckError, AssertionError)
        True
        >>> GraphCheckError("Tensors share memory!").result is None
        True
    """


class TrainingLoopWarning(UserWarning):
    """What ``watch_training(..., on_error="warn")`` emits instead of raising.

    Examples:
        >>> issubclass(TrainingLoopWarning, UserWarning)
        True
    """


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument of the wrong type: both an :class:`InvalidArgument` and a :class:`TypeError`.

    Examples:
        >>> err = InvalidArgumentType("optimizer=3 must be a torch.optim.Optimizer, not int.")
        >>> isinstance(err, ValueError), isinstance(err, TypeError)
        (True, True)
    """


class AutogradFunctionError(GradcheckError):
    """An audit of a custom ``torch.autograd.Function`` found a misuse or a wrong derivative.

    The exception carries the full audit as ``.result``.

    Examples:
        >>> issubclass(AutogradFunctionError, GradcheckError)
        True
    """


class TrainingDivergenceError(GradcheckError):
    """Two training loops that should follow the same trajectory part ways.

    The exception carries the comparison as ``.result``.

    Examples:
        >>> err = TrainingDivergenceError("Training loops diverge!")
        >>> isinstance(err, AssertionError), err.result is None
        (True, True)
    """


class DeviceParityError(GradcheckError):
    """Outputs or gradients differ between devices (CPU vs CUDA) beyond the tolerance.

    Raised by ``assert_device_parity`` with the comparison as ``.result``.

    Examples:
        >>> issubclass(DeviceParityError, AssertionError)
        True
    """


class DeviceUnavailableError(GradcheckKitError, RuntimeError):
    """A device that was asked for explicitly is not present (no CUDA build, no GPU, ...).

    Benchmarks and parity checks report missing devices as skipped instead; this is
    raised only where one device was required (a fixture turns it into a skip).

    Examples:
        >>> isinstance(DeviceUnavailableError("CUDA device not available"), RuntimeError)
        True
    """


class RankFailedError(GradcheckKitError, RuntimeError):
    """A rank of a multi-process check raised, hung past the timeout, or died.

    ``rank`` is the first rank that failed, ``failures`` maps every failed rank
    to what happened to it (its traceback, "timed out", or its exit code). Every
    process of the run has been stopped when it is raised.

    Examples:
        >>> err = RankFailedError("rank 1 raised ValueError: bad batch", 1, {1: "ValueError"})
        >>> err.rank, isinstance(err, RuntimeError)
        (1, True)
    """

    def __init__(self, message: str, rank: int, failures: dict[int, str]) -> None:
        super().__init__(message)
        self.rank = rank
        self.failures = failures

    def __reduce__(self) -> tuple[type[RankFailedError], tuple[str, int, dict[int, str]]]:
        return type(self), (str(self), self.rank, self.failures)


class UnassertedCheckWarning(UserWarning):
    """A check failed in a test that passed without ever reading its result.

    ``check_*`` functions return their result and never raise, so a test that
    calls one and does not assert on it passes whatever the gradients are. The
    pytest plugin warns at the end of such a test; assert on the result
    (``assert result.passed, result.summary()``) or call the ``assert_*`` twin.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("error", UnassertedCheckWarning)  # make them fail in CI
        ...     issubclass(UnassertedCheckWarning, UserWarning)
        True
    """


class DdpGradientError(GradcheckError):
    """DDP ranks computed other gradients or weights than one process on the whole batch.

    Raised by :func:`gradcheck_kit.assert_ddp_gradients`; carries the
    :class:`~gradcheck_kit.results.DdpCheckResult` as ``.result``.

    Examples:
        >>> err = DdpGradientError("DDP ranks disagree!")
        >>> isinstance(err, AssertionError), err.result is None
        (True, True)
    """


# Tracebacks and reprs name the exceptions where users import them from
# (gradcheck_kit.errors.GradientMismatchError), not this private module. pickle looks
# them up by that name too, which works: gradcheck_kit.errors re-exports every one.
_PUBLIC_MODULE = "gradcheck_kit.errors"
for _name in __all__:
    globals()[_name].__module__ = _PUBLIC_MODULE
# doctest skips classes whose __module__ is another module; __test__ keeps their examples.
__test__ = {_name: globals()[_name] for _name in __all__}
del _name
