"""Publish every check's result to whoever listens (the pytest plugin, the CLI).

Checks call :func:`publish`; adapters :func:`subscribe`. Keeps core code free of
any knowledge of pytest or reports. Imports no torch.

A listener may also :func:`watch` a published result to learn later whether
anybody read it (:func:`was_read`): the pytest plugin tells a failed check that
its test asserted on (and expected) from one that nothing ever looked at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Observable", "publish", "subscribe", "muted", "watch", "was_read"]

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


# Kept in the result's own __dict__ (frozen dataclasses refuse setattr, not the dict):
# absent = not watched, False = watched and unread, True = read since.
_READ_KEY = "_gradcheck_kit_read"


class Observable:
    """Base of published results: notices a read of a public attribute once watched.

    Reading anything public (``passed``, ``summary()``, ``bool(result)``, a
    field) after :func:`watch` counts, so does an ``assert_*`` helper reading
    ``passed`` to decide to raise. Before :func:`watch` nothing is tracked, so
    the check's own work on its result never counts.
    """

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        if name[:1] != "_":
            state = object.__getattribute__(self, "__dict__")
            if state.get(_READ_KEY) is False:
                state[_READ_KEY] = True
        return object.__getattribute__(self, name)


def watch(result: Any) -> None:
    """Start noticing reads of ``result`` (an :class:`Observable`); others are ignored."""
    if isinstance(result, Observable):
        object.__getattribute__(result, "__dict__")[_READ_KEY] = False


def was_read(result: Any) -> bool | None:
    """Whether ``result`` was read since :func:`watch`; ``None`` if it was never watched.

    Examples:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Result(Observable):
        ...     passed: bool
        >>> result = Result(passed=False)
        >>> watch(result); was_read(result)
        False
        >>> result.passed, was_read(result)
        (False, True)
    """
    if not isinstance(result, Observable):
        return None
    value = object.__getattribute__(result, "__dict__").get(_READ_KEY)
    return None if value is None else bool(value)
