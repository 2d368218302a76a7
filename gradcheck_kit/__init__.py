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
    from gradcheck_kit._src.errors import GradcheckError as GradcheckError
    from gradcheck_kit._src.errors import GradcheckKitError as GradcheckKitError
    from gradcheck_kit._src.errors import GradientMismatchError as GradientMismatchError
    from gradcheck_kit._src.errors import InvalidArgument as InvalidArgument
    from gradcheck_kit._src.errors import JacobianTooLargeError as JacobianTooLargeError
    from gradcheck_kit._src.errors import (
        NondeterministicFunctionError as NondeterministicFunctionError,
    )
    from gradcheck_kit._src.errors import NonFiniteOutputError as NonFiniteOutputError
    from gradcheck_kit._src.errors import UnsupportedInputError as UnsupportedInputError
    from gradcheck_kit._src.gradcheck import check_gradients as check_gradients
    from gradcheck_kit._src.gradcheck import check_module_gradients as check_module_gradients
    from gradcheck_kit._src.results import SCHEMA_VERSION as SCHEMA_VERSION
    from gradcheck_kit._src.results import GradCheckResult as GradCheckResult
    from gradcheck_kit._src.results import Hint as Hint
    from gradcheck_kit._src.results import PairResult as PairResult
    from gradcheck_kit._src.results import ProbeResult as ProbeResult
    from gradcheck_kit._src.results import WorstElement as WorstElement

__all__ = [
    "SCHEMA_VERSION",
    "GradCheckResult",
    "GradcheckError",
    "GradcheckKitError",
    "GradientMismatchError",
    "Hint",
    "InvalidArgument",
    "JacobianTooLargeError",
    "NonFiniteOutputError",
    "NondeterministicFunctionError",
    "PairResult",
    "ProbeResult",
    "UnsupportedInputError",
    "WorstElement",
    "assert_gradients_close",
    "assert_module_gradients",
    "check_gradients",
    "check_module_gradients",
]

try:
    __version__: str = _distribution_version("gradcheck-kit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

# Public name -> the module that defines it. Kept beside __all__; a test checks they agree.
_LAZY_IMPORTS: dict[str, str] = {
    "check_gradients": "gradcheck_kit._src.gradcheck",
    "check_module_gradients": "gradcheck_kit._src.gradcheck",
    "assert_gradients_close": "gradcheck_kit._src.asserts",
    "assert_module_gradients": "gradcheck_kit._src.asserts",
    "GradCheckResult": "gradcheck_kit._src.results",
    "PairResult": "gradcheck_kit._src.results",
    "ProbeResult": "gradcheck_kit._src.results",
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
