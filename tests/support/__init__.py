"""Code only the tests and benchmarks use, kept out of the installed package.

* :mod:`.samples` — synthetic records of every kind and whole documents, for the
  report's tests, its benchmark and demos.
* :mod:`.clock` — a steady clock for the engine, for tests that count evaluations.
* :mod:`.fingerprint` — a hashable picture of the state a check promises to leave
  alone, and what changed between two, for the leave-no-trace tests.

The tests import it as ``support`` (``tests/`` is on ``sys.path`` under pytest, as
for ``_schemas``); the benchmarks, run as scripts, put the repository root on
``sys.path`` and import ``tests.support``.
"""
