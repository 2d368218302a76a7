"""Which custom autograd Functions and ``nn.Module`` classes the gradient checks exercise.

Every check enters :func:`exercised` for its whole span and hands what the user's
code returned to :func:`note_outputs`. Nothing is recorded, and nothing costs
anything, unless a listener is present (:func:`listen`; the pytest plugin's
``--gradcheck-cov``). Then, inside a check:

* a custom Function counts when its backward node is in the autograd graph of
  an output: the node's class is ``<Name>Backward``, whose ``_forward_cls`` is
  the Function. The check differentiated through it, so its ``backward`` was
  judged. A Function that only ran where no graph is recorded (inside another
  Function's ``forward``, or in a ``backward`` without ``create_graph``) does
  not count: nothing checked its derivative. The walk costs one visit per graph
  node of each output, nothing per operation;
* an ``nn.Module`` counts when it is called: torch's global forward pre-hook is
  installed by the outermost check of a run that listens, and removed once the
  user's code was called :data:`WATCHED_CALLS` times (or the check ends). Later
  calls repeat the first at nearby points; a module that only a later call
  reaches (a branch taken only at some perturbed point) is missed.

Only the thread that runs the check records: a module called by another thread
meanwhile is not exercised by this check.

A new check gets all of this for free when it runs through the engine
(``engine.run.check_scope`` enters :func:`exercised`, ``InputTree.call`` notes
the outputs) or through another check. One that calls the user's code itself
enters :func:`exercised` (or wraps its entry point in :func:`exercising`) and
passes each output to :func:`note_outputs`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal, ParamSpec, TypeVar

import torch
from torch.utils import _pytree as pytree

__all__ = [
    "FUNCTION",
    "MODULE",
    "WATCHED_CALLS",
    "Kind",
    "Listener",
    "exercised",
    "exercising",
    "functions_in_graph",
    "listen",
    "note_function",
    "note_outputs",
]

Kind = Literal["function", "module"]
FUNCTION: Final[Kind] = "function"
MODULE: Final[Kind] = "module"
Listener = Callable[[Kind, type], None]

_listeners: list[Listener] = []
_lock = threading.Lock()
# Calls of the user's code per check during which modules are watched. The global hook
# sends every module call down torch's slow path (a module check of 20 layers took twice
# as long); the modules a check calls are all called in its first calls.
WATCHED_CALLS: Final = 3
# Threads whose running check still watches module calls: the hook lives while there is one.
_watching_threads = 0
_module_hook: Any = None


class _ThreadState(threading.local):
    depth = 0
    # calls of the user's code noted in this thread's outermost check
    calls = 0
    watching = False
    # (kind, class) already told to the listeners in this thread's outermost check
    told: set[tuple[str, type]]

    def __init__(self) -> None:
        self.told = set()


_state = _ThreadState()


def listen(listener: Listener) -> Callable[[], None]:
    """Call ``listener(kind, cls)`` for each class a check exercises from now on.

    ``kind`` is ``"function"`` or ``"module"``. Each class is told at most once
    per check. Returns a function that removes the listener again.

    Examples:
        >>> seen = []
        >>> stop = listen(lambda kind, cls: seen.append((kind, cls.__name__)))
        >>> with exercised():
        ...     _ = torch.nn.Linear(2, 1)(torch.ones(2))
        >>> stop()
        >>> seen
        [('module', 'Linear')]
    """
    with _lock:
        _listeners.append(listener)

    def stop() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return stop


def _recording() -> bool:
    return _state.depth > 0 and bool(_listeners)


def _tell(kind: Kind, cls: type) -> None:
    key = (kind, cls)
    if key in _state.told:
        return
    _state.told.add(key)
    for listener in list(_listeners):
        listener(kind, cls)


def _module_called(module: torch.nn.Module, args: Any) -> None:
    if _recording():
        _tell(MODULE, type(module))


def _watch_modules() -> None:
    global _watching_threads, _module_hook
    _state.watching = True
    with _lock:
        _watching_threads += 1
        if _module_hook is None:
            _module_hook = torch.nn.modules.module.register_module_forward_pre_hook(_module_called)


def _stop_watching_modules() -> None:
    global _watching_threads, _module_hook
    if not _state.watching:
        return
    _state.watching = False
    with _lock:
        _watching_threads -= 1
        if _watching_threads == 0 and _module_hook is not None:
            _module_hook.remove()
            _module_hook = None


@contextlib.contextmanager
def exercised() -> Iterator[None]:
    """The span of one check: what the user's code runs in it counts as exercised.

    Checks nest (a second-order check runs first-order ones); the outermost
    span watches module calls (until the user's code was called
    :data:`WATCHED_CALLS` times) and forgets, on exit, which classes it told.
    Without a listener it does nothing.

    Examples:
        >>> with exercised():
        ...     pass  # a check calls the user's function here
    """
    if not _listeners:
        yield
        return
    if _state.depth == 0:
        _state.calls = 0
        _watch_modules()
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            _state.told.clear()
            _stop_watching_modules()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def exercising(check: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run every call of ``check`` inside :func:`exercised`; for checks that are one function.

    Examples:
        >>> @exercising
        ... def check_something(fn):
        ...     return fn()
        >>> check_something(lambda: 1)
        1
    """

    @functools.wraps(check)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with exercised():
            return check(*args, **kwargs)

    return run


def functions_in_graph(outputs: Any) -> set[type]:
    """The custom Function classes whose backward nodes the graph of ``outputs`` holds.

    Args:
        outputs: A tensor or a pytree of them (other leaves are ignored).

    Returns:
        Every ``torch.autograd.Function`` subclass met on the way from the
        outputs' ``grad_fn`` back to the leaves.

    Examples:
        >>> class Double(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         return 2 * x
        ...     @staticmethod
        ...     def backward(ctx, g):
        ...         return 2 * g
        >>> x = torch.ones(2, requires_grad=True)
        >>> [cls.__name__ for cls in functions_in_graph((Double.apply(x).sin(), "label"))]
        ['Double']
    """
    stack = [
        leaf.grad_fn
        for leaf in pytree.tree_leaves(outputs)
        if isinstance(leaf, torch.Tensor) and leaf.grad_fn is not None
    ]
    # The nodes themselves are kept, not only their ids: a node's Python object may be
    # made afresh on each access, and a freed one's id could come back for another node.
    seen: dict[int, Any] = {}
    found: set[type] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        forward_cls = getattr(type(node), "_forward_cls", None)
        if isinstance(forward_cls, type):
            found.add(forward_cls)
        stack.extend(parent for parent, _ in node.next_functions if parent is not None)
    return found


def note_outputs(outputs: Any) -> None:
    """Record the custom Functions in the graph of what the user's code returned.

    Called by the checks on every output of the function under test; free
    outside a check or without a listener. Outputs of an evaluation under a
    ``torch.func`` transform are skipped: they repeat a plain call, and their
    wrapped tensors hide the graph.
    """
    if not _recording():
        return
    _state.calls += 1
    if _state.calls >= WATCHED_CALLS:
        _stop_watching_modules()
    if torch._C._are_functorch_transforms_active():
        return
    for cls in functions_in_graph(outputs):
        _tell(FUNCTION, cls)


def note_function(cls: type) -> None:
    """Record ``cls`` as exercised: the subject of a Function audit, checked as a whole."""
    if _recording():
        _tell(FUNCTION, cls)
