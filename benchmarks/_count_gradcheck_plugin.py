"""A pytest plugin that counts and times every ``torch.autograd`` gradcheck call of a run.

Used by ``real_project_gradcheck.py`` in its ``plain`` mode, to measure a third-party
project's suite as it is, without gradcheck_kit: how many ``torch.autograd.gradcheck`` and
``torch.autograd.gradgradcheck`` calls its tests make at run time, what they return and how
long torch takes for them.

Load it with ``-p _count_gradcheck_plugin`` (its folder on ``PYTHONPATH``) and name the JSON
file with ``--count-gradcheck-json PATH``::

    PYTHONPATH=benchmarks python -m pytest tests/ -p _count_gradcheck_plugin \\
        --count-gradcheck-json calls.json

The wrappers are installed in ``pytest_configure``, before any test module is imported,
so that ``from torch.autograd import gradcheck`` at the top of a test file binds the
wrapper. Both names are replaced where a test can reach them: ``torch.autograd.gradcheck``
(the function re-exported by ``torch.autograd``) and the attributes of the module
``torch.autograd.gradcheck`` (``from torch.autograd.gradcheck import gradcheck``). Only
outermost calls are counted: torch's ``gradgradcheck`` calls ``gradcheck`` inside, and that
inner call is part of the outer one's time. The originals are put back in
``pytest_unconfigure``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_NAMES = ("gradcheck", "gradgradcheck")


class GradcheckCounter:
    """Wraps torch's gradcheck functions for one run and keeps one record per outer call."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.current_test = "<collection>"
        self._depth = 0
        self._saved: list[tuple[object, str, object]] = []

    def install(self) -> None:
        """Replace both functions on ``torch.autograd`` and on its ``gradcheck`` module."""
        import torch.autograd

        module = sys.modules["torch.autograd.gradcheck"]
        for name in _NAMES:
            original = getattr(module, name)
            wrapper = self._wrap(name, original)
            for owner in (torch.autograd, module):
                self._saved.append((owner, name, getattr(owner, name)))
                setattr(owner, name, wrapper)

    def uninstall(self) -> None:
        """Put the original functions back, in reverse order of replacement."""
        while self._saved:
            owner, name, value = self._saved.pop()
            setattr(owner, name, value)

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._depth:  # inner call of gradgradcheck: timed as part of the outer one
                return original(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            outcome = "raised"
            error = None
            try:
                result = original(*args, **kwargs)
                outcome = "pass" if result else "fail"
                return result
            except BaseException as exc:
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                raise
            finally:
                self._depth -= 1
                self.records.append(
                    {
                        "test": self.current_test,
                        "function": name,
                        "seconds": time.perf_counter() - start,
                        "outcome": outcome,
                        "error": error,
                        "keywords": sorted(kwargs),
                    }
                )

        return counted


_counter_key = pytest.StashKey[GradcheckCounter]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("count-gradcheck")
    group.addoption(
        "--count-gradcheck-json",
        metavar="PATH",
        default="gradcheck_calls.json",
        help="where to write one record per torch gradcheck call (default: %(default)s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    counter = GradcheckCounter()
    counter.install()
    config.stash[_counter_key] = counter


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    counter = item.config.stash[_counter_key]
    counter.current_test = item.nodeid
    try:
        return (yield)
    finally:
        counter.current_test = "<outside a test call>"


def pytest_unconfigure(config: pytest.Config) -> None:
    counter = config.stash.get(_counter_key, None)
    if counter is None:
        return
    counter.uninstall()
    records = counter.records
    by_function = {name: [r for r in records if r["function"] == name] for name in _NAMES}
    summary = {
        "calls": len(records),
        "seconds": sum(r["seconds"] for r in records),
        "by_function": {
            name: {"calls": len(rs), "seconds": sum(r["seconds"] for r in rs)}
            for name, rs in by_function.items()
        },
        "outcomes": {
            o: sum(1 for r in records if r["outcome"] == o) for o in ("pass", "fail", "raised")
        },
        "tests_with_calls": len({r["test"] for r in records}),
    }
    path = Path(config.getoption("--count-gradcheck-json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"summary": summary, "calls": records}, indent=1))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    counter = config.stash.get(_counter_key, None)
    if counter is None:
        return
    records = counter.records
    seconds = sum(r["seconds"] for r in records)
    terminalreporter.write_line(
        f"torch gradcheck calls: {len(records)} in {seconds:.1f} s "
        f"({sum(r['function'] == 'gradgradcheck' for r in records)} gradgradcheck), "
        f"outcomes: {sum(r['outcome'] == 'pass' for r in records)} pass, "
        f"{sum(r['outcome'] == 'fail' for r in records)} fail, "
        f"{sum(r['outcome'] == 'raised' for r in records)} raised"
    )
