"""Every exception and warning of gradcheck_kit, importable from one place.

Like ``hypothesis.errors``: the verbs live in :mod:`gradcheck_kit`, the things
they raise here. Tracebacks name them by this module
(``gradcheck_kit.errors.TrainingLoopError``), and they pickle by that name.
``GradcheckError``, ``GradientMismatchError`` and ``InvalidArgument`` are
importable from :mod:`gradcheck_kit` as well. Two families, so that callers can
tell a wrong gradient from a wrong call:

* :class:`GradcheckError` (an :class:`AssertionError`): a check ran and the
  program under test failed it; pytest shows it as a test failure.
  ``GradientMismatchError``, ``NondeterministicFunctionError``,
  ``OutputShapeChangedError``, ``TrainingLoopError``, ``GraphCheckError``,
  ``AutogradFunctionError``, ``TrainingDivergenceError``, ``DeviceParityError``,
  ``DdpGradientError``,
  and ``TorchGradcheckError`` (the drop-in's, also torch's ``GradcheckError``).
* :class:`InvalidArgument` (a :class:`ValueError`): the check could not run
  because of how it was called, raised before any computation or mutation.
  ``InvalidArgumentType`` (also a :class:`TypeError`), ``UnsupportedInputError``,
  ``NonFiniteOutputError``, ``JacobianTooLargeError`` / ``MemoryBudgetError``,
  ``TargetError``.

Both derive from :class:`GradcheckKitError`, as do ``PerturbedEvaluationError``
``DeviceUnavailableError`` and ``RankFailedError`` (``RuntimeError`` s). The warnings:
``UnassertedCheckWarning``, ``TrainingLoopWarning``, ``StateRestoreWarning``.
Each name is imported on first use, so this module imports no torch.

Examples:
    >>> from gradcheck_kit.errors import GradcheckError, InvalidArgument, TrainingLoopError
    >>> issubclass(TrainingLoopError, GradcheckError), issubclass(InvalidArgument, ValueError)
    (True, True)
    >>> TrainingLoopError.__module__
    'gradcheck_kit.errors'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradcheck_kit._src.lazy import attach

if TYPE_CHECKING:
    from gradcheck_kit._src.dropin_errors import TorchGradcheckError as TorchGradcheckError
    from gradcheck_kit._src.errors import AutogradFunctionError as AutogradFunctionError
    from gradcheck_kit._src.errors import DdpGradientError as DdpGradientError
    from gradcheck_kit._src.errors import DeviceParityError as DeviceParityError
    from gradcheck_kit._src.errors import DeviceUnavailableError as DeviceUnavailableError
    from gradcheck_kit._src.errors import GradcheckError as GradcheckError
    from gradcheck_kit._src.errors import GradcheckKitError as GradcheckKitError
    from gradcheck_kit._src.errors import GradientMismatchError as GradientMismatchError
    from gradcheck_kit._src.errors import GraphCheckError as GraphCheckError
    from gradcheck_kit._src.errors import InvalidArgument as InvalidArgument
    from gradcheck_kit._src.errors import InvalidArgumentType as InvalidArgumentType
    from gradcheck_kit._src.errors import JacobianTooLargeError as JacobianTooLargeError
    from gradcheck_kit._src.errors import MemoryBudgetError as MemoryBudgetError
    from gradcheck_kit._src.errors import (
        NondeterministicFunctionError as NondeterministicFunctionError,
    )
    from gradcheck_kit._src.errors import NonFiniteOutputError as NonFiniteOutputError
    from gradcheck_kit._src.errors import OutputShapeChangedError as OutputShapeChangedError
    from gradcheck_kit._src.errors import PerturbedEvaluationError as PerturbedEvaluationError
    from gradcheck_kit._src.errors import RankFailedError as RankFailedError
    from gradcheck_kit._src.errors import TrainingDivergenceError as TrainingDivergenceError
    from gradcheck_kit._src.errors import TrainingLoopError as TrainingLoopError
    from gradcheck_kit._src.errors import TrainingLoopWarning as TrainingLoopWarning
    from gradcheck_kit._src.errors import UnassertedCheckWarning as UnassertedCheckWarning
    from gradcheck_kit._src.errors import UnsupportedInputError as UnsupportedInputError
    from gradcheck_kit._src.state.snapshot import StateRestoreWarning as StateRestoreWarning
    from gradcheck_kit._src.targets import TargetError as TargetError

__all__ = [
    "GradcheckKitError",
    # a check ran and failed
    "GradcheckError",
    "GradientMismatchError",
    "NondeterministicFunctionError",
    "OutputShapeChangedError",
    "TrainingLoopError",
    "GraphCheckError",
    "AutogradFunctionError",
    "TrainingDivergenceError",
    "DeviceParityError",
    "DdpGradientError",
    "TorchGradcheckError",
    # the check could not run as called
    "InvalidArgument",
    "InvalidArgumentType",
    "UnsupportedInputError",
    "NonFiniteOutputError",
    "JacobianTooLargeError",
    "MemoryBudgetError",
    "TargetError",
    # the function or the machine stopped the check
    "PerturbedEvaluationError",
    "DeviceUnavailableError",
    "RankFailedError",
    # warnings
    "UnassertedCheckWarning",
    "TrainingLoopWarning",
    "StateRestoreWarning",
]

# Public name -> the module that defines it. A test checks it against __all__, the
# TYPE_CHECKING block and every exception class the package defines.
_LAZY_IMPORTS: dict[str, str] = {
    "GradcheckKitError": "gradcheck_kit._src.errors",
    "GradcheckError": "gradcheck_kit._src.errors",
    "GradientMismatchError": "gradcheck_kit._src.errors",
    "NondeterministicFunctionError": "gradcheck_kit._src.errors",
    "OutputShapeChangedError": "gradcheck_kit._src.errors",
    "TrainingLoopError": "gradcheck_kit._src.errors",
    "GraphCheckError": "gradcheck_kit._src.errors",
    "AutogradFunctionError": "gradcheck_kit._src.errors",
    "TrainingDivergenceError": "gradcheck_kit._src.errors",
    "DeviceParityError": "gradcheck_kit._src.errors",
    "DdpGradientError": "gradcheck_kit._src.errors",
    "TorchGradcheckError": "gradcheck_kit._src.dropin_errors",
    "InvalidArgument": "gradcheck_kit._src.errors",
    "InvalidArgumentType": "gradcheck_kit._src.errors",
    "UnsupportedInputError": "gradcheck_kit._src.errors",
    "NonFiniteOutputError": "gradcheck_kit._src.errors",
    "JacobianTooLargeError": "gradcheck_kit._src.errors",
    "MemoryBudgetError": "gradcheck_kit._src.errors",
    "TargetError": "gradcheck_kit._src.targets",
    "PerturbedEvaluationError": "gradcheck_kit._src.errors",
    "DeviceUnavailableError": "gradcheck_kit._src.errors",
    "RankFailedError": "gradcheck_kit._src.errors",
    "UnassertedCheckWarning": "gradcheck_kit._src.errors",
    "TrainingLoopWarning": "gradcheck_kit._src.errors",
    "StateRestoreWarning": "gradcheck_kit._src.state.snapshot",
}

# Not cached in globals(): doctest would take a cached class for this module's own
# (its __module__ may say so) and run its examples without their lazy neighbours.
__getattr__, __dir__ = attach(__name__, None, _LAZY_IMPORTS)
