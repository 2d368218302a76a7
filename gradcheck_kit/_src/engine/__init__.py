"""The engine every gradient check runs on: evaluations, Jacobians, judging, budgets.

Modules here are public inside the package (no leading underscores on the names
other modules use) and private outside it. This package imports nothing from
the checks that use it, and its ``__init__`` imports nothing, so that ``state``
can reach ``engine.precision`` without a cycle.
"""
