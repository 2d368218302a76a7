"""A steady clock for the engine, for tests that count what a check did.

The engine chooses from measured time: a loop or one vmapped call, and how many rows
of a batch its memory budget allows (a call that ran longer may have allocated more).
On a loaded machine a real clock changes those choices, and with them the evaluation
counts a result records. Under :func:`steady_engine_clock` every reading advances a
fixed 0.1 ms, so the choices are the same at every run.
"""

from __future__ import annotations

import importlib
import itertools
import types

import pytest

__all__ = ["TIMED_MODULES", "steady_engine_clock"]

# The modules whose decisions read time.perf_counter.
TIMED_MODULES = (
    "gradcheck_kit._src.engine.run",
    "gradcheck_kit._src.engine.jacobian",
    "gradcheck_kit._src.engine.fast",
    "gradcheck_kit._src.engine.auto",
    "gradcheck_kit._src.second_order",
    "gradcheck_kit._src.routing",
)


def steady_engine_clock(monkeypatch: pytest.MonkeyPatch, tick: float = 1e-4) -> None:
    """Make every engine clock reading advance ``tick`` seconds, until ``monkeypatch`` undoes it.

    Examples:
        >>> mp = pytest.MonkeyPatch()
        >>> steady_engine_clock(mp)
        >>> run = importlib.import_module("gradcheck_kit._src.engine.run")
        >>> round(run.time.perf_counter() - run.time.perf_counter(), 6)
        -0.0001
        >>> mp.undo()
    """
    ticks = itertools.count()
    clock = types.SimpleNamespace(perf_counter=lambda: next(ticks) * tick)
    for name in TIMED_MODULES:
        module = importlib.import_module(name)
        # the engine reads time.perf_counter through the module: replace that attribute
        assert isinstance(module.time, types.ModuleType), name
        monkeypatch.setattr(module, "time", clock)
