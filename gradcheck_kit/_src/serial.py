"""One check at a time in a process: checks from several threads run one after another.

A check flips process-wide state for its duration: torch's RNG (seeded, and
replayed under ``rng="replay"``), TF32 flags, modules put in other modes and
parameters perturbed in place. Two checks interleaved in two threads would see
each other's seeds and perturbations, so :func:`one_at_a_time` makes every
public check take one re-entrant lock (a check that runs another check inside,
as ``check_second_order`` does, takes it again in the same thread).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["one_at_a_time", "check_lock"]

P = ParamSpec("P")
R = TypeVar("R")

# Re-entrant: checks call checks (second order, the Function audit) in the same thread.
_LOCK = threading.RLock()


def check_lock() -> threading.RLock:
    """The lock every check holds while it runs (for tests and for code that must wait).

    Examples:
        >>> with check_lock():
        ...     pass
    """
    return _LOCK


def one_at_a_time(check: Callable[P, R]) -> Callable[P, R]:
    """Decorate a public check so that it runs while holding the process's check lock.

    Examples:
        >>> @one_at_a_time
        ... def my_check(x: int) -> int:
        ...     return x + 1
        >>> my_check(1)
        2
    """

    @functools.wraps(check)
    def serialised(*args: P.args, **kwargs: P.kwargs) -> R:
        __tracebackhide__ = True
        with _LOCK:
            return check(*args, **kwargs)

    return serialised
