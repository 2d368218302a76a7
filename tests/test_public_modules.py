"""The nouns' public modules, gradcheck_kit.errors and gradcheck_kit.results, and the moved names.

Every exception class and every record type the package defines is public in exactly
one of them; the names that moved out of the top level still resolve there, each
access warning once with the new home.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from test_public_api import type_checking_imports

import gradcheck_kit
import gradcheck_kit._src
from gradcheck_kit import errors, results
from gradcheck_kit._src.plain import PlainData

PUBLIC_MODULES = [errors, results]
# Raised and caught inside the engine, never out of a check: no user sees them.
ENGINE_SIGNALS = {"OutputChanged", "ForwardModeUnsupported"}


def _src_classes() -> dict[str, type]:
    """Every public class the _src modules define or re-export, by name (aliases merged)."""
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(gradcheck_kit._src.__path__, prefix="gradcheck_kit._src."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            home = getattr(value, "__module__", "")
            if (
                inspect.isclass(value)
                and not name.startswith("_")
                and (home.startswith("gradcheck_kit._src") or home == "gradcheck_kit.errors")
            ):
                found.setdefault(value.__name__, value)
    return found


def test_errors_cover_every_exception_class_of_the_package() -> None:
    exceptions = {
        name
        for name, cls in _src_classes().items()
        if issubclass(cls, BaseException) and name not in ENGINE_SIGNALS
    }
    assert exceptions == set(errors.__all__)
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert cls is _src_classes()[name]
        # tracebacks, reprs, warnings filters and pickle all use this name
        assert cls.__module__ == "gradcheck_kit.errors", name


def test_results_cover_every_record_class_of_the_package() -> None:
    records = {
        name
        for name, cls in _src_classes().items()
        if hasattr(cls, "to_dict") and cls is not PlainData  # the mixin, not a record
    }
    assert records == set(results.__all__) - {"SCHEMA_VERSION"}
    for name in records:
        assert getattr(results, name) is _src_classes()[name]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_public_module_tables_agree(module: Any) -> None:
    assert len(set(module.__all__)) == len(module.__all__)
    assert set(module._LAZY_IMPORTS) == set(module.__all__)
    assert type_checking_imports(Path(module.__file__)) == module._LAZY_IMPORTS
    assert sorted(module.__all__) == dir(module)
    for name in module.__all__:
        value = getattr(module, name)
        assert value is getattr(sys.modules[module._LAZY_IMPORTS[name]], name)
        if inspect.isclass(value):
            doc = inspect.getdoc(value) or ""
            assert "Examples:" in doc and ">>> " in doc.split("Examples:", 1)[1], name
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        module.Nope  # noqa: B018 - the attribute access is the test


def test_public_modules_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import gradcheck_kit.errors, gradcheck_kit.results\n"
        "from gradcheck_kit.errors import GradcheckError, TrainingLoopError\n"
        "from gradcheck_kit.results import Hint, GradcheckResult\n"
        "import gradcheck_kit\n"
        "gradcheck_kit.errors, gradcheck_kit.results, dir(gradcheck_kit)\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]


def test_the_top_level_keeps_the_verbs_and_a_few_types() -> None:
    nouns = {name for name in gradcheck_kit.__all__ if name[0].isupper()}
    assert nouns == {
        "CheckTarget",
        "GradcheckError",
        "GradcheckResult",
        "GradientMismatchError",
        "InvalidArgument",
        "TrainingWatcher",
    }
    for name in nouns & (set(errors.__all__) | set(results.__all__)):
        home = errors if name in errors.__all__ else results
        assert getattr(gradcheck_kit, name) is getattr(home, name)
    assert {"errors", "results"} <= set(dir(gradcheck_kit))
    assert gradcheck_kit.errors is errors and gradcheck_kit.results is results


@pytest.mark.parametrize("name", sorted(gradcheck_kit._MOVED))
def test_a_moved_name_warns_once_and_gives_the_same_object(name: str) -> None:
    moved = gradcheck_kit._MOVED[name]
    new = getattr(importlib.import_module(moved.module), moved.name)
    assert name not in gradcheck_kit.__all__ and name not in dir(gradcheck_kit)
    with pytest.warns(DeprecationWarning) as attribute:
        assert getattr(gradcheck_kit, name) is new
    namespace: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as imported:
        warnings.simplefilter("always")
        exec(f"from gradcheck_kit import {name}", namespace)
    assert namespace[name] is new
    for caught in (list(attribute), imported):
        assert len(caught) == 1, [str(w.message) for w in caught]
        (warning,) = caught
        assert warning.category is DeprecationWarning
        assert str(warning.message) == (
            f"gradcheck_kit.{name} is deprecated and will be removed in 0.3: "
            f"use {moved.module}.{moved.name} instead."
        )
    assert attribute[0].filename == __file__  # points at the user's line, not ours
    # never cached: every later use warns again
    with pytest.warns(DeprecationWarning):
        getattr(gradcheck_kit, name)


def test_every_name_that_left_the_top_level_moved_somewhere() -> None:
    # the 0.1 top level: what is public now, plus what moved, less what was added since
    added_since = {"check_ddp_gradients", "assert_ddp_gradients"}
    assert added_since <= set(gradcheck_kit.__all__)
    kept = set(gradcheck_kit.__all__) - added_since
    assert len(gradcheck_kit._MOVED) + len(kept) == 81
    assert gradcheck_kit._MOVED["GradCheckResult"].replacement == "gradcheck_kit.GradcheckResult"
    for name, moved in gradcheck_kit._MOVED.items():
        home = importlib.import_module(moved.module)
        assert moved.name in home.__all__, name
