"""Every example in the package's docstrings runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import gradcheck_kit

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(gradcheck_kit.__path__, prefix="gradcheck_kit.")
    if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hypothesis warns about .example() outside tests
        for test in finder.find(module, name):
            runner.run(test, out=lambda text: None)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, (
        f"{results.failed} of {results.attempted} docstring examples in {name} fail: "
        f"python -m pytest --doctest-modules {module.__file__}"
    )


@pytest.mark.parametrize("name", ["support.samples", "support.fingerprint"])
def test_test_support_examples_run(name: str) -> None:
    # tests/support/ is test code, outside the package walk above; its examples run too.
    module = importlib.import_module(name)

    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, module.__name__):
        runner.run(test, out=lambda text: None)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples fail"
