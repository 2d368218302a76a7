"""Publish every check's result to whoever listens (the pytest plugin, the CLI).

Checks call :func:`publish`; adapters :func:`subscribe`. Keeps core code free of
any knowledge of pytest or reports. Imports no torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["publish", "subscribe", "muted"]

_Listener = Callable[[Any], None]
_listeners: list[_Listener] = []


def subscribe(listener: _Listener) -> Callable[[], None]:
    """Call ``listener(result)`` for every result published from now on.

    Returns a function that removes the listener again.
    """
    _listeners.append(listener)

    def unsubscribe() -> None:
        if listener in _listeners:
            _listeners.remove(listener)

    return unsubscribe


def publish(result: Any) -> None:
    """Hand ``result`` to every current listener, in subscription order."""
    for listener in list(_listeners):
        listener(result)


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Keep the results published inside the block from the listeners.

    A composite check (second order, a Function audit) publishes one result of
    its own; the checks it runs inside are parts of it, not results of the test.
    """
    saved = list(_listeners)
    _listeners.clear()
    try:
        yield
    finally:
        _listeners[:] = saved
