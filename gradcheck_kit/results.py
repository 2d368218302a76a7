"""Every result and record type of gradcheck_kit, importable from one place.

What the ``check_*`` functions return (and ``assert_*`` return when they pass):
frozen data, with ``passed`` as the verdict where there is one, ``summary()``
for people and ``to_dict()`` / ``from_dict()`` for the JSON form that the
pytest plugin writes (``SCHEMA_VERSION``). ``GradcheckResult``, which
``check_gradients`` returns, is importable from :mod:`gradcheck_kit` as well.

* Gradients: ``GradcheckResult`` (its ``pairs`` are ``PairResult`` s with a
  ``WorstElement`` and an ``ErrorMap``, its ``probes`` fast mode's ``ProbeResult`` s,
  its ``hints`` ``Hint`` s, its ``resolution`` ``Resolution`` s, and ``routed`` a
  ``RoutedCall`` with a ``TorchVerdict`` under ``--gradcheck-torch``);
  ``SecondOrderResult`` one order up.
* Hand-written derivatives: ``ManualCheckResult`` of ``ManualPairResult`` s of
  ``ThreeWayElement`` s. Custom Functions: ``FunctionAuditResult`` of ``AuditFinding`` s.
* Training: ``TrainingReport`` of ``TrainingFinding`` s; ``SameTrainingResult``
  with its ``TrajectoryDivergence``. Graphs: ``GraphCheckResult``.
  Distributed: ``DdpCheckResult`` of ``DdpLeaf`` s.
* Devices: ``DeviceParityResult`` of ``ParityLeaf`` s; ``DeviceBenchmark`` of
  ``DeviceTiming`` s of ``PhaseTiming`` s.

Each name is imported on first use, so this module imports no torch.

Examples:
    >>> from gradcheck_kit.results import GradcheckResult, Hint
    >>> Hint(kind="sign", text="analytic ≈ −1 × numeric").to_dict()["kind"]
    'sign'
    >>> GradcheckResult.__name__
    'GradcheckResult'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradcheck_kit._src.lazy import attach

if TYPE_CHECKING:
    from gradcheck_kit._src.devices.benchmark_results import DeviceBenchmark as DeviceBenchmark
    from gradcheck_kit._src.devices.benchmark_results import DeviceTiming as DeviceTiming
    from gradcheck_kit._src.devices.benchmark_results import PhaseTiming as PhaseTiming
    from gradcheck_kit._src.devices.parity import DeviceParityResult as DeviceParityResult
    from gradcheck_kit._src.devices.parity import ParityLeaf as ParityLeaf
    from gradcheck_kit._src.results import SCHEMA_VERSION as SCHEMA_VERSION
    from gradcheck_kit._src.results import AuditFinding as AuditFinding
    from gradcheck_kit._src.results import DdpCheckResult as DdpCheckResult
    from gradcheck_kit._src.results import DdpLeaf as DdpLeaf
    from gradcheck_kit._src.results import ErrorMap as ErrorMap
    from gradcheck_kit._src.results import FunctionAuditResult as FunctionAuditResult
    from gradcheck_kit._src.results import GradcheckResult as GradcheckResult
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
    from gradcheck_kit._src.training.findings import TrainingFinding as TrainingFinding
    from gradcheck_kit._src.training.findings import TrainingReport as TrainingReport

__all__ = [
    "SCHEMA_VERSION",
    # gradients
    "GradcheckResult",
    "SecondOrderResult",
    "PairResult",
    "WorstElement",
    "ErrorMap",
    "ProbeResult",
    "Hint",
    "Resolution",
    "RoutedCall",
    "TorchVerdict",
    # hand-written derivatives and custom Functions
    "ManualCheckResult",
    "ManualPairResult",
    "ThreeWayElement",
    "FunctionAuditResult",
    "AuditFinding",
    # training and graphs
    "TrainingReport",
    "TrainingFinding",
    "SameTrainingResult",
    "TrajectoryDivergence",
    "GraphCheckResult",
    "DdpCheckResult",
    "DdpLeaf",
    # devices
    "DeviceParityResult",
    "ParityLeaf",
    "DeviceBenchmark",
    "DeviceTiming",
    "PhaseTiming",
]

# Public name -> the module that defines it. A test checks it against __all__, the
# TYPE_CHECKING block and every record class the package defines.
_LAZY_IMPORTS: dict[str, str] = {
    "SCHEMA_VERSION": "gradcheck_kit._src.results",
    "GradcheckResult": "gradcheck_kit._src.results",
    "SecondOrderResult": "gradcheck_kit._src.results",
    "PairResult": "gradcheck_kit._src.results",
    "WorstElement": "gradcheck_kit._src.results",
    "ErrorMap": "gradcheck_kit._src.results",
    "ProbeResult": "gradcheck_kit._src.results",
    "Hint": "gradcheck_kit._src.results",
    "Resolution": "gradcheck_kit._src.results",
    "RoutedCall": "gradcheck_kit._src.results",
    "TorchVerdict": "gradcheck_kit._src.results",
    "ManualCheckResult": "gradcheck_kit._src.results",
    "ManualPairResult": "gradcheck_kit._src.results",
    "ThreeWayElement": "gradcheck_kit._src.results",
    "FunctionAuditResult": "gradcheck_kit._src.results",
    "AuditFinding": "gradcheck_kit._src.results",
    "TrainingReport": "gradcheck_kit._src.training.findings",
    "TrainingFinding": "gradcheck_kit._src.training.findings",
    "SameTrainingResult": "gradcheck_kit._src.results",
    "TrajectoryDivergence": "gradcheck_kit._src.results",
    "GraphCheckResult": "gradcheck_kit._src.results",
    "DdpCheckResult": "gradcheck_kit._src.results",
    "DdpLeaf": "gradcheck_kit._src.results",
    "DeviceParityResult": "gradcheck_kit._src.devices.parity",
    "ParityLeaf": "gradcheck_kit._src.devices.parity",
    "DeviceBenchmark": "gradcheck_kit._src.devices.benchmark_results",
    "DeviceTiming": "gradcheck_kit._src.devices.benchmark_results",
    "PhaseTiming": "gradcheck_kit._src.devices.benchmark_results",
}

# Not cached in globals(): doctest would take a cached class for this module's own
# (its __module__ may say so) and run its examples without their lazy neighbours.
__getattr__, __dir__ = attach(__name__, None, _LAZY_IMPORTS)
