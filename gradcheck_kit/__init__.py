"""Check PyTorch gradients: autograd against finite differences, from tests.

Every public name lives in a private ``gradcheck_kit._src`` module and is
re-exported here lazily (PEP 562), so ``import gradcheck_kit`` stays cheap and
does not import torch: the pytest plugin imports this package in every test run
of every project that installs it.

Examples:
    >>> import gradcheck_kit
    >>> "check_gradients" in gradcheck_kit.__all__
    True
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradcheck_kit._src.asserts import assert_gradients_close as assert_gradients_close
    from gradcheck_kit._src.asserts import assert_module_gradients as assert_module_gradients
    from gradcheck_kit._src.autograd_function import (
        assert_autograd_function as assert_autograd_function,
    )
    from gradcheck_kit._src.autograd_function import (
        check_autograd_function as check_autograd_function,
    )
    from gradcheck_kit._src.devices import DeviceBenchmark as DeviceBenchmark
    from gradcheck_kit._src.devices import DeviceParityResult as DeviceParityResult
    from gradcheck_kit._src.devices import DeviceTiming as DeviceTiming
    from gradcheck_kit._src.devices import assert_device_parity as assert_device_parity
    from gradcheck_kit._src.devices import benchmark_devices as benchmark_devices
    from gradcheck_kit._src.devices import check_device_parity as check_device_parity
    from gradcheck_kit._src.dropin import gradcheck as gradcheck
    from gradcheck_kit._src.dropin import gradgradcheck as gradgradcheck
    from gradcheck_kit._src.dropin_errors import TorchGradcheckError as TorchGradcheckError
    from gradcheck_kit._src.errors import AutogradFunctionError as AutogradFunctionError
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
    from gradcheck_kit._src.errors import TrainingDivergenceError as TrainingDivergenceError
    from gradcheck_kit._src.errors import TrainingLoopError as TrainingLoopError
    from gradcheck_kit._src.errors import TrainingLoopWarning as TrainingLoopWarning
    from gradcheck_kit._src.errors import UnassertedCheckWarning as UnassertedCheckWarning
    from gradcheck_kit._src.errors import UnsupportedInputError as UnsupportedInputError
    from gradcheck_kit._src.failure_inputs import save_failure_inputs as save_failure_inputs
    from gradcheck_kit._src.gradcheck import check_gradients as check_gradients
    from gradcheck_kit._src.gradcheck import check_module_gradients as check_module_gradients
    from gradcheck_kit._src.graph import assert_detached as assert_detached
    from gradcheck_kit._src.graph import assert_grad_is_none as assert_grad_is_none
    from gradcheck_kit._src.graph import assert_graph_reaches as assert_graph_reaches
    from gradcheck_kit._src.graph import assert_no_graph as assert_no_graph
    from gradcheck_kit._src.graph import assert_no_shared_memory as assert_no_shared_memory
    from gradcheck_kit._src.graph import assert_requires_grad as assert_requires_grad
    from gradcheck_kit._src.graph import assert_shares_memory as assert_shares_memory
    from gradcheck_kit._src.graph import graph_nodes as graph_nodes
    from gradcheck_kit._src.manual import assert_matches_manual as assert_matches_manual
    from gradcheck_kit._src.manual import check_matches_manual as check_matches_manual
    from gradcheck_kit._src.results import SCHEMA_VERSION as SCHEMA_VERSION
    from gradcheck_kit._src.results import AuditFinding as AuditFinding
    from gradcheck_kit._src.results import FunctionAuditResult as FunctionAuditResult
    from gradcheck_kit._src.results import GradCheckResult as GradCheckResult
    from gradcheck_kit._src.results import GraphCheckResult as GraphCheckResult
    from gradcheck_kit._src.results import Hint as Hint
    from gradcheck_kit._src.results import ManualCheckResult as ManualCheckResult
    from gradcheck_kit._src.results import ManualPairResult as ManualPairResult
    from gradcheck_kit._src.results import PairResult as PairResult
    from gradcheck_kit._src.results import ProbeResult as ProbeResult
    from gradcheck_kit._src.results import Resolution as Resolution
    from gradcheck_kit._src.results import RoutedCall as RoutedCall
    from gradcheck_kit._src.results import SameTrainingResult as SameTrainingResult
    from gradcheck_kit._src.results import SecondOrderResult as SecondOrderResult
    from gradcheck_kit._src.results import ThreeWayElement as ThreeWayElement
    from gradcheck_kit._src.results import TorchVerdict as TorchVerdict
    from gradcheck_kit._src.results import TrajectoryDivergence as TrajectoryDivergence
    from gradcheck_kit._src.results import WorstElement as WorstElement
    from gradcheck_kit._src.second_order import assert_second_order as assert_second_order
    from gradcheck_kit._src.second_order import check_second_order as check_second_order
    from gradcheck_kit._src.targets import CheckTarget as CheckTarget
    from gradcheck_kit._src.targets import TargetError as TargetError
    from gradcheck_kit._src.targets import resolve_target as resolve_target
    from gradcheck_kit._src.targets import target as target
    from gradcheck_kit._src.training.assertions import (
        assert_optimizer_tracks as assert_optimizer_tracks,
    )
    from gradcheck_kit._src.training.assertions import assert_params_frozen as assert_params_frozen
    from gradcheck_kit._src.training.assertions import (
        assert_params_updated as assert_params_updated,
    )
    from gradcheck_kit._src.training.assertions import (
        assert_zero_grad_between_steps as assert_zero_grad_between_steps,
    )
    from gradcheck_kit._src.training.findings import TrainingFinding as TrainingFinding
    from gradcheck_kit._src.training.findings import TrainingReport as TrainingReport
    from gradcheck_kit._src.training.watcher import TrainingWatcher as TrainingWatcher
    from gradcheck_kit._src.training.watcher import watch_training as watch_training
    from gradcheck_kit._src.trajectories import assert_same_training as assert_same_training
    from gradcheck_kit._src.trajectories import check_same_training as check_same_training

__all__ = [
    "SCHEMA_VERSION",
    "AuditFinding",
    "AutogradFunctionError",
    "CheckTarget",
    "DeviceBenchmark",
    "DeviceParityError",
    "DeviceParityResult",
    "DeviceTiming",
    "DeviceUnavailableError",
    "FunctionAuditResult",
    "GradCheckResult",
    "GradcheckError",
    "GradcheckKitError",
    "GradientMismatchError",
    "GraphCheckError",
    "GraphCheckResult",
    "Hint",
    "InvalidArgument",
    "InvalidArgumentType",
    "JacobianTooLargeError",
    "MemoryBudgetError",
    "PerturbedEvaluationError",
    "OutputShapeChangedError",
    "ManualCheckResult",
    "ManualPairResult",
    "NonFiniteOutputError",
    "NondeterministicFunctionError",
    "PairResult",
    "ProbeResult",
    "Resolution",
    "RoutedCall",
    "SameTrainingResult",
    "SecondOrderResult",
    "TargetError",
    "ThreeWayElement",
    "TrainingDivergenceError",
    "TrainingFinding",
    "TrainingLoopError",
    "TrainingLoopWarning",
    "UnassertedCheckWarning",
    "TrainingReport",
    "TrainingWatcher",
    "TorchGradcheckError",
    "TorchVerdict",
    "TrajectoryDivergence",
    "UnsupportedInputError",
    "WorstElement",
    "assert_autograd_function",
    "assert_detached",
    "assert_device_parity",
    "assert_grad_is_none",
    "assert_gradients_close",
    "assert_graph_reaches",
    "assert_matches_manual",
    "assert_module_gradients",
    "assert_no_graph",
    "assert_no_shared_memory",
    "assert_optimizer_tracks",
    "assert_params_frozen",
    "assert_params_updated",
    "assert_requires_grad",
    "assert_same_training",
    "assert_second_order",
    "assert_shares_memory",
    "assert_zero_grad_between_steps",
    "benchmark_devices",
    "check_autograd_function",
    "check_device_parity",
    "check_gradients",
    "check_matches_manual",
    "check_module_gradients",
    "check_same_training",
    "check_second_order",
    "gradcheck",
    "gradgradcheck",
    "graph_nodes",
    "resolve_target",
    "save_failure_inputs",
    "target",
    "watch_training",
]

try:
    __version__: str = _distribution_version("gradcheck-kit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# Public name -> the module that defines it. Kept beside __all__; a test checks they agree.
_LAZY_IMPORTS: dict[str, str] = {
    "DeviceBenchmark": "gradcheck_kit._src.devices",
    "DeviceParityError": "gradcheck_kit._src.errors",
    "DeviceParityResult": "gradcheck_kit._src.devices",
    "DeviceTiming": "gradcheck_kit._src.devices",
    "DeviceUnavailableError": "gradcheck_kit._src.errors",
    "assert_device_parity": "gradcheck_kit._src.devices",
    "benchmark_devices": "gradcheck_kit._src.devices",
    "check_device_parity": "gradcheck_kit._src.devices",
    "CheckTarget": "gradcheck_kit._src.targets",
    "TargetError": "gradcheck_kit._src.targets",
    "resolve_target": "gradcheck_kit._src.targets",
    "target": "gradcheck_kit._src.targets",
    "save_failure_inputs": "gradcheck_kit._src.failure_inputs",
    "check_gradients": "gradcheck_kit._src.gradcheck",
    "check_module_gradients": "gradcheck_kit._src.gradcheck",
    "assert_gradients_close": "gradcheck_kit._src.asserts",
    "assert_module_gradients": "gradcheck_kit._src.asserts",
    "GradCheckResult": "gradcheck_kit._src.results",
    "PairResult": "gradcheck_kit._src.results",
    "ProbeResult": "gradcheck_kit._src.results",
    "Resolution": "gradcheck_kit._src.results",
    "RoutedCall": "gradcheck_kit._src.results",
    "TorchVerdict": "gradcheck_kit._src.results",
    "WorstElement": "gradcheck_kit._src.results",
    "Hint": "gradcheck_kit._src.results",
    "SCHEMA_VERSION": "gradcheck_kit._src.results",
    "GradcheckKitError": "gradcheck_kit._src.errors",
    "GradcheckError": "gradcheck_kit._src.errors",
    "GradientMismatchError": "gradcheck_kit._src.errors",
    "NondeterministicFunctionError": "gradcheck_kit._src.errors",
    "InvalidArgument": "gradcheck_kit._src.errors",
    "UnsupportedInputError": "gradcheck_kit._src.errors",
    "NonFiniteOutputError": "gradcheck_kit._src.errors",
    "JacobianTooLargeError": "gradcheck_kit._src.errors",
    "MemoryBudgetError": "gradcheck_kit._src.errors",
    "PerturbedEvaluationError": "gradcheck_kit._src.errors",
    "OutputShapeChangedError": "gradcheck_kit._src.errors",
    "TrainingWatcher": "gradcheck_kit._src.training.watcher",
    "watch_training": "gradcheck_kit._src.training.watcher",
    "TrainingFinding": "gradcheck_kit._src.training.findings",
    "TrainingReport": "gradcheck_kit._src.training.findings",
    "assert_optimizer_tracks": "gradcheck_kit._src.training.assertions",
    "assert_params_frozen": "gradcheck_kit._src.training.assertions",
    "assert_params_updated": "gradcheck_kit._src.training.assertions",
    "assert_zero_grad_between_steps": "gradcheck_kit._src.training.assertions",
    "assert_detached": "gradcheck_kit._src.graph",
    "assert_grad_is_none": "gradcheck_kit._src.graph",
    "assert_graph_reaches": "gradcheck_kit._src.graph",
    "assert_no_graph": "gradcheck_kit._src.graph",
    "assert_no_shared_memory": "gradcheck_kit._src.graph",
    "assert_requires_grad": "gradcheck_kit._src.graph",
    "assert_shares_memory": "gradcheck_kit._src.graph",
    "graph_nodes": "gradcheck_kit._src.graph",
    "GraphCheckError": "gradcheck_kit._src.errors",
    "InvalidArgumentType": "gradcheck_kit._src.errors",
    "TrainingLoopError": "gradcheck_kit._src.errors",
    "TrainingLoopWarning": "gradcheck_kit._src.errors",
    "UnassertedCheckWarning": "gradcheck_kit._src.errors",
    "assert_matches_manual": "gradcheck_kit._src.manual",
    "check_matches_manual": "gradcheck_kit._src.manual",
    "assert_autograd_function": "gradcheck_kit._src.autograd_function",
    "check_autograd_function": "gradcheck_kit._src.autograd_function",
    "assert_second_order": "gradcheck_kit._src.second_order",
    "check_second_order": "gradcheck_kit._src.second_order",
    "assert_same_training": "gradcheck_kit._src.trajectories",
    "check_same_training": "gradcheck_kit._src.trajectories",
    "AuditFinding": "gradcheck_kit._src.results",
    "FunctionAuditResult": "gradcheck_kit._src.results",
    "GraphCheckResult": "gradcheck_kit._src.results",
    "ManualCheckResult": "gradcheck_kit._src.results",
    "ManualPairResult": "gradcheck_kit._src.results",
    "SameTrainingResult": "gradcheck_kit._src.results",
    "SecondOrderResult": "gradcheck_kit._src.results",
    "ThreeWayElement": "gradcheck_kit._src.results",
    "TrajectoryDivergence": "gradcheck_kit._src.results",
    "AutogradFunctionError": "gradcheck_kit._src.errors",
    "TrainingDivergenceError": "gradcheck_kit._src.errors",
    "gradcheck": "gradcheck_kit._src.dropin",
    "gradgradcheck": "gradcheck_kit._src.dropin",
    "TorchGradcheckError": "gradcheck_kit._src.dropin_errors",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its ``_src`` module on first use (PEP 562)."""
    module_name = _LAZY_IMPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    # Cache it, so the next lookup is an ordinary attribute access.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names, although most are not imported yet."""
    return sorted([*__all__, "__version__"])
