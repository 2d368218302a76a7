"""Check PyTorch gradients: autograd against finite differences, from tests.

The verbs live here (``check_*`` returns a result, ``assert_*`` raises,
``watch_training``, ``benchmark_devices``, the drop-in ``gradcheck``...), with the
few types nearly every user names: ``GradcheckResult``, ``GradcheckError``,
``GradientMismatchError``, ``InvalidArgument``, ``CheckTarget``, ``TrainingWatcher``.
The nouns have modules of their own: every exception and warning in
:mod:`gradcheck_kit.errors`, every result and record type in
:mod:`gradcheck_kit.results`. Names that moved there still work from here until
0.3, with a :class:`DeprecationWarning` naming their new home.

Every public name lives in a private ``gradcheck_kit._src`` module and is
re-exported here lazily (PEP 562), so ``import gradcheck_kit`` stays cheap and
does not import torch: the pytest plugin imports this package in every test run
of every project that installs it.

Examples:
    >>> import gradcheck_kit
    >>> "check_gradients" in gradcheck_kit.__all__
    True
    >>> from gradcheck_kit.errors import TrainingLoopError  # not gradcheck_kit.TrainingLoopError
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version
from typing import TYPE_CHECKING

from gradcheck_kit._src.lazy import Moved, attach

if TYPE_CHECKING:
    from gradcheck_kit._src.asserts import assert_gradients_close as assert_gradients_close
    from gradcheck_kit._src.asserts import assert_module_gradients as assert_module_gradients
    from gradcheck_kit._src.autograd_function import (
        assert_autograd_function as assert_autograd_function,
    )
    from gradcheck_kit._src.autograd_function import (
        check_autograd_function as check_autograd_function,
    )
    from gradcheck_kit._src.devices.benchmark import benchmark_devices as benchmark_devices
    from gradcheck_kit._src.devices.parity import assert_device_parity as assert_device_parity
    from gradcheck_kit._src.devices.parity import check_device_parity as check_device_parity
    from gradcheck_kit._src.distributed.ddp import assert_ddp_gradients as assert_ddp_gradients
    from gradcheck_kit._src.distributed.ddp import check_ddp_gradients as check_ddp_gradients
    from gradcheck_kit._src.dropin import gradcheck as gradcheck
    from gradcheck_kit._src.dropin import gradgradcheck as gradgradcheck
    from gradcheck_kit._src.errors import GradcheckError as GradcheckError
    from gradcheck_kit._src.errors import GradientMismatchError as GradientMismatchError
    from gradcheck_kit._src.errors import InvalidArgument as InvalidArgument
    from gradcheck_kit._src.failure_inputs import save_failure_inputs as save_failure_inputs
    from gradcheck_kit._src.gradcheck import check_gradients as check_gradients
    from gradcheck_kit._src.gradcheck import check_module_gradients as check_module_gradients
    from gradcheck_kit._src.graph.memory import assert_no_shared_memory as assert_no_shared_memory
    from gradcheck_kit._src.graph.memory import assert_shares_memory as assert_shares_memory
    from gradcheck_kit._src.graph.presence import assert_detached as assert_detached
    from gradcheck_kit._src.graph.presence import assert_grad_is_none as assert_grad_is_none
    from gradcheck_kit._src.graph.presence import assert_no_graph as assert_no_graph
    from gradcheck_kit._src.graph.presence import assert_requires_grad as assert_requires_grad
    from gradcheck_kit._src.graph.reach import assert_graph_reaches as assert_graph_reaches
    from gradcheck_kit._src.graph.reach import graph_nodes as graph_nodes
    from gradcheck_kit._src.manual import assert_matches_manual as assert_matches_manual
    from gradcheck_kit._src.manual import check_matches_manual as check_matches_manual
    from gradcheck_kit._src.results import GradcheckResult as GradcheckResult
    from gradcheck_kit._src.second_order import assert_second_order as assert_second_order
    from gradcheck_kit._src.second_order import check_second_order as check_second_order
    from gradcheck_kit._src.targets import CheckTarget as CheckTarget
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
    from gradcheck_kit._src.training.watcher import TrainingWatcher as TrainingWatcher
    from gradcheck_kit._src.training.watcher import watch_training as watch_training
    from gradcheck_kit._src.trajectories import assert_same_training as assert_same_training
    from gradcheck_kit._src.trajectories import check_same_training as check_same_training

__all__ = [
    "CheckTarget",
    "GradcheckError",
    "GradcheckResult",
    "GradientMismatchError",
    "InvalidArgument",
    "TrainingWatcher",
    "assert_autograd_function",
    "assert_ddp_gradients",
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
    "check_ddp_gradients",
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
    "CheckTarget": "gradcheck_kit._src.targets",
    "GradcheckError": "gradcheck_kit._src.errors",
    "GradcheckResult": "gradcheck_kit._src.results",
    "GradientMismatchError": "gradcheck_kit._src.errors",
    "InvalidArgument": "gradcheck_kit._src.errors",
    "TrainingWatcher": "gradcheck_kit._src.training.watcher",
    "assert_autograd_function": "gradcheck_kit._src.autograd_function",
    "assert_detached": "gradcheck_kit._src.graph.presence",
    "assert_device_parity": "gradcheck_kit._src.devices.parity",
    "assert_grad_is_none": "gradcheck_kit._src.graph.presence",
    "assert_gradients_close": "gradcheck_kit._src.asserts",
    "assert_graph_reaches": "gradcheck_kit._src.graph.reach",
    "assert_matches_manual": "gradcheck_kit._src.manual",
    "assert_module_gradients": "gradcheck_kit._src.asserts",
    "assert_no_graph": "gradcheck_kit._src.graph.presence",
    "assert_no_shared_memory": "gradcheck_kit._src.graph.memory",
    "assert_optimizer_tracks": "gradcheck_kit._src.training.assertions",
    "assert_params_frozen": "gradcheck_kit._src.training.assertions",
    "assert_params_updated": "gradcheck_kit._src.training.assertions",
    "assert_requires_grad": "gradcheck_kit._src.graph.presence",
    "assert_same_training": "gradcheck_kit._src.trajectories",
    "assert_ddp_gradients": "gradcheck_kit._src.distributed.ddp",
    "check_ddp_gradients": "gradcheck_kit._src.distributed.ddp",
    "assert_second_order": "gradcheck_kit._src.second_order",
    "assert_shares_memory": "gradcheck_kit._src.graph.memory",
    "assert_zero_grad_between_steps": "gradcheck_kit._src.training.assertions",
    "benchmark_devices": "gradcheck_kit._src.devices.benchmark",
    "check_autograd_function": "gradcheck_kit._src.autograd_function",
    "check_device_parity": "gradcheck_kit._src.devices.parity",
    "check_gradients": "gradcheck_kit._src.gradcheck",
    "check_matches_manual": "gradcheck_kit._src.manual",
    "check_module_gradients": "gradcheck_kit._src.gradcheck",
    "check_same_training": "gradcheck_kit._src.trajectories",
    "check_second_order": "gradcheck_kit._src.second_order",
    "gradcheck": "gradcheck_kit._src.dropin",
    "gradgradcheck": "gradcheck_kit._src.dropin",
    "graph_nodes": "gradcheck_kit._src.graph.reach",
    "resolve_target": "gradcheck_kit._src.targets",
    "save_failure_inputs": "gradcheck_kit._src.failure_inputs",
    "target": "gradcheck_kit._src.targets",
    "watch_training": "gradcheck_kit._src.training.watcher",
}

# Names public here in 0.1 that moved; each still resolves, with a DeprecationWarning.
_MOVED: dict[str, Moved] = {
    "AuditFinding": Moved("gradcheck_kit.results", "AuditFinding"),
    "AutogradFunctionError": Moved("gradcheck_kit.errors", "AutogradFunctionError"),
    "DeviceBenchmark": Moved("gradcheck_kit.results", "DeviceBenchmark"),
    "DeviceParityError": Moved("gradcheck_kit.errors", "DeviceParityError"),
    "DeviceParityResult": Moved("gradcheck_kit.results", "DeviceParityResult"),
    "DeviceTiming": Moved("gradcheck_kit.results", "DeviceTiming"),
    "DeviceUnavailableError": Moved("gradcheck_kit.errors", "DeviceUnavailableError"),
    "FunctionAuditResult": Moved("gradcheck_kit.results", "FunctionAuditResult"),
    "GradCheckResult": Moved("gradcheck_kit", "GradcheckResult"),
    "GradcheckKitError": Moved("gradcheck_kit.errors", "GradcheckKitError"),
    "GraphCheckError": Moved("gradcheck_kit.errors", "GraphCheckError"),
    "GraphCheckResult": Moved("gradcheck_kit.results", "GraphCheckResult"),
    "Hint": Moved("gradcheck_kit.results", "Hint"),
    "InvalidArgumentType": Moved("gradcheck_kit.errors", "InvalidArgumentType"),
    "JacobianTooLargeError": Moved("gradcheck_kit.errors", "JacobianTooLargeError"),
    "ManualCheckResult": Moved("gradcheck_kit.results", "ManualCheckResult"),
    "ManualPairResult": Moved("gradcheck_kit.results", "ManualPairResult"),
    "MemoryBudgetError": Moved("gradcheck_kit.errors", "MemoryBudgetError"),
    "NonFiniteOutputError": Moved("gradcheck_kit.errors", "NonFiniteOutputError"),
    "NondeterministicFunctionError": Moved("gradcheck_kit.errors", "NondeterministicFunctionError"),
    "OutputShapeChangedError": Moved("gradcheck_kit.errors", "OutputShapeChangedError"),
    "PairResult": Moved("gradcheck_kit.results", "PairResult"),
    "PerturbedEvaluationError": Moved("gradcheck_kit.errors", "PerturbedEvaluationError"),
    "ProbeResult": Moved("gradcheck_kit.results", "ProbeResult"),
    "Resolution": Moved("gradcheck_kit.results", "Resolution"),
    "RoutedCall": Moved("gradcheck_kit.results", "RoutedCall"),
    "SCHEMA_VERSION": Moved("gradcheck_kit.results", "SCHEMA_VERSION"),
    "SameTrainingResult": Moved("gradcheck_kit.results", "SameTrainingResult"),
    "SecondOrderResult": Moved("gradcheck_kit.results", "SecondOrderResult"),
    "TargetError": Moved("gradcheck_kit.errors", "TargetError"),
    "ThreeWayElement": Moved("gradcheck_kit.results", "ThreeWayElement"),
    "TorchGradcheckError": Moved("gradcheck_kit.errors", "TorchGradcheckError"),
    "TorchVerdict": Moved("gradcheck_kit.results", "TorchVerdict"),
    "TrainingDivergenceError": Moved("gradcheck_kit.errors", "TrainingDivergenceError"),
    "TrainingFinding": Moved("gradcheck_kit.results", "TrainingFinding"),
    "TrainingLoopError": Moved("gradcheck_kit.errors", "TrainingLoopError"),
    "TrainingLoopWarning": Moved("gradcheck_kit.errors", "TrainingLoopWarning"),
    "TrainingReport": Moved("gradcheck_kit.results", "TrainingReport"),
    "TrajectoryDivergence": Moved("gradcheck_kit.results", "TrajectoryDivergence"),
    "UnassertedCheckWarning": Moved("gradcheck_kit.errors", "UnassertedCheckWarning"),
    "UnsupportedInputError": Moved("gradcheck_kit.errors", "UnsupportedInputError"),
    "WorstElement": Moved("gradcheck_kit.results", "WorstElement"),
}

__getattr__, __dir__ = attach(
    __name__,
    globals(),
    _LAZY_IMPORTS,
    moved=_MOVED,
    submodules=frozenset({"errors", "results"}),
    listed=("__version__",),
)
