"""The gradcheck plugin's own hooks, for a project's ``conftest.py`` (or a plugin) to implement.

``plugin.py`` registers these specifications in ``pytest_addoption``; pytest then
checks every ``pytest_gradcheck_*`` function of a conftest against them, so a
misspelt argument is an error at start-up, not a hook silently never called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy
import pytest

__all__ = ["pytest_gradcheck_record"]

# pluggy's marker rather than `pytest.hookspec`, which pytest 7 does not have.
hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_gradcheck_record(
    record: Mapping[str, Any], item: pytest.Item | None, config: pytest.Config
) -> Mapping[str, Any] | None:
    """Return fields to add to one check's record, or ``None`` to add nothing.

    Called with ``--gradcheck`` for each record once its test has finished, so
    ``record["test"]["outcome"]`` is known, and before it goes into the JSON file
    and the HTML report. What an implementation returns is stored under the
    record's ``extra`` key, which the results schema keeps open for this (every
    other key of a record is the check's own). Every implementation is called; where
    two return the same key, the one pytest calls first wins: a ``conftest.py``
    closer to the test beats one further up, and both beat a plugin. A conftest
    hook applies only to the tests below it. Values are stored as JSON (tuples
    as lists, other objects as their ``str()``).

    It runs in the process that ran the test: under pytest-xdist on the worker
    (where ``item`` is), before the record is sent to the controller, so a
    conftest's code runs in every worker. Records published outside any test (in
    a session-scoped fixture, say) are offered once at the end of the session,
    with ``item=None``. An implementation that raises, or returns something
    other than a mapping, costs its record the extra fields and the run a
    warning, nothing more.

    Args:
        record: The record as it will be written (read-only): ``kind``, ``name``,
            ``passed``, ``test_id``, ``test`` and the fields of its kind.
        item: The test that made the check; ``None`` for a record made outside
            any test.
        config: The run's config.

    Returns:
        A mapping of text keys to JSON-ready values, or ``None``.

    Examples:
        >>> # conftest.py
        >>> import os
        >>> def pytest_gradcheck_record(record, item, config):
        ...     team = item.get_closest_marker("team") if item is not None else None
        ...     return {
        ...         "git_sha": os.environ.get("GITHUB_SHA", "unknown"),
        ...         "team": team.args[0] if team else None,
        ...     }
        >>> from types import SimpleNamespace
        >>> pytest_gradcheck_record({"name": "sin"}, None, SimpleNamespace())["team"] is None
        True
    """
