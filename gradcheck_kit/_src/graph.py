"""Graph and grad-mode checks: which tensors get gradients, which build graphs, which share memory.

The assertions about ``requires_grad``, ``backward``, ``detach``, ``no_grad``
and the NumPy bridge, and the graph connectivity check of a training loop,
each raising a :class:`GraphCheckError` whose message names the tensor, what
was expected, what was found, the likely cause and the fix:

* :func:`assert_no_graph` — an evaluation (or a result) builds no autograd graph
  and leaves every ``.grad`` alone; names the first operation that recorded one.
* :func:`assert_detached`, :func:`assert_requires_grad`, :func:`assert_grad_is_none`.
* :func:`assert_graph_reaches` — every parameter is connected to the loss; given
  a function instead of its output, it also finds *where* the path was cut
  (a ``detach()``, ``.data``, an operation under ``no_grad``, ``.item()``...).
* :func:`assert_shares_memory` / :func:`assert_no_shared_memory` — for tensors,
  parameters and NumPy arrays.
* :func:`graph_nodes` — the autograd node types of a graph, for tests that pin its shape.

Tensors are named by the caller's own variable names where it has one for them
(``'x'``, ``'b'``), by their qualified names for a module's parameters, or by the
keys of a dict passed in. This module knows nothing of training loops;
:mod:`gradcheck_kit._src.training` uses its :func:`user_site` helper.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
import time
import types
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode, resolve_name

from . import recording
from .errors import GraphCheckError, InvalidArgument, InvalidArgumentType
from .messages import PREFIX
from .results import GraphCheckResult

__all__ = [
    "Msg",
    "SourceSite",
    "apply_msg",
    "check_msg",
    "user_site",
    "graph_nodes",
    "assert_no_graph",
    "assert_detached",
    "assert_requires_grad",
    "assert_grad_is_none",
    "assert_graph_reaches",
    "assert_shares_memory",
    "assert_no_shared_memory",
]

Msg = str | Callable[[str], str] | None

# Frames in these files are the toolkit's or torch's, never the user's line.
_LIBRARY_DIRS: Final = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
)
_LIBRARY_FILES: Final = frozenset({os.path.abspath(contextlib.__file__)})
# Tensor methods through which a value leaves autograd as a Python or NumPy value.
_EXITS: Final = frozenset(
    {"item", "tolist", "numpy", "__float__", "__int__", "__complex__", "__index__", "__array__"}
)
_DETACHING: Final = frozenset({"detach", "detach_", "data.__get__"})
_MAX_NAMES_SHOWN: Final = 6


# --------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class SourceSite:
    """A line of the user's code: where a hook fired or an operation ran.

    Examples:
        >>> site = SourceSite("train.py", 12, "train", "loss.backward()")
        >>> str(site)
        'train.py:12 in train: `loss.backward()`'
    """

    filename: str
    lineno: int
    function: str
    code: str | None = None

    def __str__(self) -> str:
        where = f"{_short_path(self.filename)}:{self.lineno} in {self.function}"
        return f"{where}: `{self.code}`" if self.code else where


def _short_path(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
    return filename if rel.startswith(".." + os.sep) else rel


def _is_library_file(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_LIBRARY_DIRS) or path in _LIBRARY_FILES


def _user_frame(depth: int = 1) -> types.FrameType | None:
    frame: types.FrameType | None = sys._getframe(depth + 1)
    while frame is not None and _is_library_file(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def user_site() -> SourceSite | None:
    """The innermost frame of the call stack outside gradcheck_kit, torch and contextlib.

    Called from a hook, this is the user's ``loss.backward()`` or
    ``optimizer.step()`` line. Costs a walk up the stack: call it when
    something is to be reported, not on every hook call.

    Returns:
        A :class:`SourceSite`, or ``None`` when every frame is library code
        (e.g. a backward pass running on an autograd device thread).

    Examples:
        >>> user_site().function
        '<module>'
    """
    frame = _user_frame(1)
    if frame is None:
        return None
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip() or None
    return SourceSite(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, code)


# --------------------------------------------------------------------------- naming


def _local_names() -> dict[int, str]:
    """Map id -> variable name, for the tensors and arrays bound in the calling user frame."""
    frame = _user_frame(1)
    if frame is None:
        return {}
    names: dict[int, str] = {}
    for key, value in frame.f_locals.items():
        if isinstance(value, (torch.Tensor, np.ndarray)) and not key.startswith("_"):
            names.setdefault(id(value), key)
    return names


def _named_tensors(items: tuple[Any, ...], what: str) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs from tensors, modules (their parameters), dicts and sequences."""
    local = _local_names()
    out: list[tuple[str, torch.Tensor]] = []

    def visit(value: Any, label: str, named: bool = False) -> None:
        if isinstance(value, torch.Tensor):
            # A dict key is the caller's own name for it; otherwise the caller's variable's.
            out.append((label if named else local.get(id(value), label), value))
        elif isinstance(value, nn.Module):
            params = list(value.named_parameters())
            if not params:
                raise InvalidArgument(f"{label}: {type(value).__name__} has no parameters.")
            out.extend(params)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                visit(item, str(key), named=True)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{label}[{index}]")
        else:
            raise InvalidArgumentType(
                f"{label}={value!r} must be a torch.Tensor, an nn.Module, or a dict, list "
                f"or tuple of them, not {type(value).__name__}."
            )

    if not items:
        raise InvalidArgument(f"{what} needs at least one tensor.")
    for index, item in enumerate(items):
        visit(item, f"argument {index}")
    return out


def _quote(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_NAMES_SHOWN])
    more = len(names) - _MAX_NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _describe(t: torch.Tensor) -> str:
    kind = "Parameter" if isinstance(t, nn.Parameter) else "tensor"
    dtype = str(t.dtype).removeprefix("torch.")
    return f"{dtype} {kind} of shape {tuple(t.shape)} on {t.device}"


def _grad_fn_text(t: torch.Tensor) -> str:
    fn = t.grad_fn
    return "None" if fn is None else f"<{type(fn).__name__}>"


def apply_msg(text: str, msg: Msg) -> str:
    r"""Put ``msg`` before ``text``, or let a callable ``msg`` rewrite it (assert_close's ``msg``).

    Examples:
        >>> apply_msg("Tensors share memory!", "after step 3")
        'after step 3\n\nTensors share memory!'
    """
    if callable(msg):
        return msg(text)
    return f"{msg}\n\n{text}" if msg is not None else text


def _finish(header: str, check: str, lines: list[str], msg: Msg) -> str:
    return apply_msg("\n".join([f"{PREFIX} {header} ({check})", "", *lines]), msg)


def _subject(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    more = len(names) - _MAX_NAMES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _conclude(
    check: str,
    subject: str,
    tensors: Sequence[str],
    offending: Sequence[str],
    text: str | None,
    started: float,
) -> None:
    """Publish the assertion's :class:`GraphCheckResult`; raise it when ``text`` says it failed.

    Passed assertions are published too: a report counts every check a test made.
    """
    __tracebackhide__ = True
    result = GraphCheckResult(
        name=f"{check}({subject})",
        check=check,
        passed=text is None,
        tensors=tuple(tensors),
        offending=tuple(offending),
        message=text or "",
        duration_s=time.perf_counter() - started,
    )
    recording.publish(result)
    # Read after publishing: a listener then sees that the assertion acted on its verdict.
    if not result.passed:
        raise GraphCheckError(result.message, result)


def check_msg(msg: object) -> None:
    """Raise InvalidArgumentType unless ``msg`` is a string, a callable or None."""
    if msg is not None and not isinstance(msg, str) and not callable(msg):
        raise InvalidArgumentType(
            f"msg={msg!r} must be a string, a callable taking the message, or None."
        )


def _iter_tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _iter_tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _iter_tensors(item)


def _op_name(func: Callable[..., Any]) -> str:
    name = resolve_name(func)
    if name is None:
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    return str(name) if name else repr(func)


def _callable_name(fn: Any) -> str:
    """A short name for a function or module (a module's repr spans lines)."""
    return type(fn).__name__ if isinstance(fn, nn.Module) else _short_op(_op_name(fn))


def _short_op(name: str) -> str:
    """``torch.Tensor.detach`` -> ``detach``; ``torch.Tensor.data.__get__`` -> ``data.__get__``."""
    for prefix in ("torch.Tensor.", "torch.nn.functional.", "torch."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


# --------------------------------------------------------------------------- graph_nodes


def graph_nodes(output: torch.Tensor) -> list[str]:
    """The type names of the autograd nodes behind ``output``, from the output back to the leaves.

    Each node appears once, after every node that consumes it (a topological
    order, ties broken by autograd's own edge order), so a test can pin the
    shape of a graph. Leaves that require grad show as ``AccumulateGrad``.

    Args:
        output: a tensor; one without ``grad_fn`` (a leaf, or computed under
            ``no_grad``) has an empty graph.

    Returns:
        A list of node type names such as ``"MeanBackward0"``.

    Raises:
        InvalidArgumentType: ``output`` is not a tensor.

    Examples:
        >>> import torch
        >>> x = torch.ones(2, 2, requires_grad=True)
        >>> y = x + 2
        >>> out = (y * y * 3).mean()
        >>> graph_nodes(out)
        ['MeanBackward0', 'MulBackward0', 'MulBackward0', 'AddBackward0', 'AccumulateGrad']
        >>> with torch.no_grad():
        ...     graph_nodes(x * 2)
        []
    """
    if not isinstance(output, torch.Tensor):
        raise InvalidArgumentType(
            f"output={output!r} must be a torch.Tensor, not {type(output).__name__}."
        )
    root = output.grad_fn
    if root is None:
        return []
    indegree: dict[Any, int] = {root: 0}
    stack = [root]
    while stack:
        node = stack.pop()
        for child, _ in node.next_functions:
            if child is None:
                continue
            if child not in indegree:
                indegree[child] = 0
                stack.append(child)
            indegree[child] += 1
    names: list[str] = []
    ready = [root]
    while ready:
        node = ready.pop(0)
        names.append(type(node).__name__)
        for child, _ in node.next_functions:
            if child is None:
                continue
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    return names


def _reached_leaves(outputs: list[torch.Tensor]) -> tuple[set[int], set[Any]]:
    """Ids of the leaf tensors and the set of nodes autograd would visit from ``outputs``."""
    leaves: set[int] = set()
    nodes: set[Any] = set()
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    for t in outputs:
        if t.grad_fn is None and t.requires_grad:
            leaves.add(id(t))
    while stack:
        node = stack.pop()
        if node in nodes:
            continue
        nodes.add(node)
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            leaves.add(id(variable))
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return leaves, nodes


# --------------------------------------------------------------------------- grad mode


def _leaf_grad_state(t: torch.Tensor) -> tuple[int | None, int]:
    grad = t.grad if (t.is_leaf or t.retains_grad) else None
    return (None, 0) if grad is None else (id(grad), grad._version)


class _GraphRecorder(TorchFunctionMode):
    """Notes the first operation that records autograd history, backward calls, and leaves used."""

    def __init__(self) -> None:
        super().__init__()
        self.graph_ops = 0
        self.first_op: tuple[str, str, SourceSite | None] | None = None
        self.backward_sites: list[tuple[str, SourceSite | None]] = []
        # id -> (leaf, its .grad identity and version when first seen)
        self.leaves: dict[int, tuple[torch.Tensor, tuple[int | None, int]]] = {}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = _op_name(func)
        short = _short_op(name)
        if short in ("backward", "autograd.backward", "autograd.grad"):
            self.backward_sites.append((name, user_site()))
        for t in _iter_tensors((args, kwargs)):
            if t.is_leaf and t.requires_grad and id(t) not in self.leaves:
                self.leaves[id(t)] = (t, _leaf_grad_state(t))
        out = func(*args, **kwargs)
        for t in _iter_tensors(out):
            if t.grad_fn is not None:
                self.graph_ops += 1
                if self.first_op is None:
                    self.first_op = (name, type(t.grad_fn).__name__, user_site())
                break
        return out


def assert_no_graph(
    fn_or_tensors: Callable[..., Any] | torch.Tensor | Any, *args: Any, msg: Msg = None
) -> Any:
    """Assert that an evaluation builds no autograd graph and leaves every ``.grad`` untouched.

    Two forms:

    * ``assert_no_graph(tensors)`` — each tensor (or every tensor in a dict,
      list or tuple) has no ``grad_fn`` and does not require grad: it was
      computed under ``torch.no_grad()`` / ``torch.inference_mode()``.
    * ``assert_no_graph(fn, *args)`` — calls ``fn(*args)`` and checks that no
      operation during the call recorded autograd history (not even one whose
      result was later detached), that no ``backward()`` / ``autograd.grad``
      ran, that the outputs carry no graph, and that the ``.grad`` of every leaf
      it used (parameters included) is the same object with the same contents.

    Args:
        fn_or_tensors: a callable (a function, a module in eval mode...) or tensors.
        *args: the arguments for ``fn`` (tensors only form: none).
        msg: text put before the message, or a callable that rewrites it.

    Returns:
        What ``fn(*args)`` returned (the tensors in the first form).

    Raises:
        GraphCheckError: a graph was built or a ``.grad`` changed; the message names
            the first operation that recorded history and the line that ran it.
        InvalidArgumentType: tensors given with ``args``, or not tensors.

    Examples:
        >>> import torch
        >>> w = torch.randn(4, 1, requires_grad=True)
        >>> x = torch.randn(3, 4)
        >>> with torch.no_grad():
        ...     y_eval = x @ w
        >>> _ = assert_no_graph(y_eval)
        >>> @torch.no_grad()
        ... def evaluate(x):
        ...     return x @ w
        >>> _ = assert_no_graph(evaluate, x)
        >>> assert_no_graph(lambda: x @ w)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] The evaluation built an ...
    """
    __tracebackhide__ = True
    check_msg(msg)
    started = time.perf_counter()
    if callable(fn_or_tensors) and not isinstance(fn_or_tensors, torch.Tensor):
        return _assert_fn_builds_no_graph(fn_or_tensors, args, msg, started)
    if args:
        raise InvalidArgumentType(
            "assert_no_graph(tensors) takes no further arguments; to check a call, "
            f"pass the function first: assert_no_graph(fn, *args) (got {len(args)} extra)."
        )
    named = _named_tensors((fn_or_tensors,), "assert_no_graph")
    names = [name for name, _ in named]
    bad = [(name, t) for name, t in named if t.requires_grad or t.grad_fn is not None]
    if bad:
        lines = [
            f"{name!r} requires grad (grad_fn={_grad_fn_text(t)}): it carries an autograd graph."
            for name, t in bad
        ]
        lines += [
            "Expected: requires_grad=False and grad_fn=None, as for a result computed "
            "under torch.no_grad() or torch.inference_mode().",
            "Likely cause: it was computed with grad mode on, from a tensor that requires "
            "grad (a parameter, or a tensor created with requires_grad=True).",
            "Fix: compute it inside `with torch.no_grad():` (or @torch.no_grad() on the "
            "evaluation function), or take `.detach()` of it.",
        ]
        text = _finish("Tensors carry an autograd graph!", "assert_no_graph", lines, msg)
        _conclude("assert_no_graph", _subject(names), names, [n for n, _ in bad], text, started)
    _conclude("assert_no_graph", _subject(names), names, (), None, started)
    return fn_or_tensors


def _assert_fn_builds_no_graph(
    fn: Callable[..., Any], args: tuple[Any, ...], msg: Msg, started: float
) -> Any:
    __tracebackhide__ = True
    watched: list[tuple[str, torch.Tensor, tuple[int | None, int]]] = []
    local = _local_names()
    for index, arg in enumerate(args):
        if isinstance(arg, nn.Module):
            watched += [(n, p, _leaf_grad_state(p)) for n, p in arg.named_parameters()]
        else:
            for t in _iter_tensors(arg):
                if t.is_leaf and t.requires_grad:
                    name = local.get(id(t), f"argument {index}")
                    watched.append((name, t, _leaf_grad_state(t)))
    recorder = _GraphRecorder()
    with recorder:
        result = fn(*args)
    names = {id(t): name for name, t, _ in watched}
    for key, (leaf, state) in recorder.leaves.items():
        if key not in names:
            watched.append((local.get(key, f"a leaf {_describe(leaf)}"), leaf, state))
            names[key] = watched[-1][0]
    lines: list[str] = []
    if recorder.first_op is not None:
        op, node, site = recorder.first_op
        where = f" at {site}" if site else ""
        lines.append(
            f"{recorder.graph_ops} operation(s) recorded autograd history; the first: "
            f"{op} created {node}{where}."
        )
    outputs = [t for t in _iter_tensors(result) if t.requires_grad or t.grad_fn is not None]
    if outputs:
        lines.append(
            f"{len(outputs)} output tensor(s) require grad (grad_fn={_grad_fn_text(outputs[0])})."
        )
    for op, site in recorder.backward_sites:
        lines.append(f"{op} ran during the evaluation" + (f" at {site}." if site else "."))
    changed = [name for name, t, before in watched if _leaf_grad_state(t) != before]
    if changed:
        lines.append(f".grad changed during the evaluation for {_quote(changed)}.")
    subject, examined = _callable_name(fn), [name for name, _, _ in watched]
    if not lines:
        _conclude("assert_no_graph", subject, examined, (), None, started)
        return result
    lines += [
        "Expected: no autograd graph (every operation under torch.no_grad() or "
        "torch.inference_mode()) and every .grad left as it was.",
        "Likely cause: the evaluation does not run under torch.no_grad(), or part of it "
        "re-enables grad mode (torch.enable_grad(), a decorator); a graph costs memory for "
        "every activation it saves, and a backward() in evaluation changes .grad.",
        "Fix: wrap the evaluation in `with torch.no_grad():` (or decorate it with "
        "@torch.no_grad() / @torch.inference_mode()), and call no backward() in it.",
    ]
    text = _finish("The evaluation built an autograd graph!", "assert_no_graph", lines, msg)
    _conclude("assert_no_graph", subject, examined, changed, text, started)
    return result  # pragma: no cover - _conclude raised


def assert_detached(*tensors: Any, msg: Msg = None) -> None:
    """Assert that each tensor is cut off from autograd: no ``grad_fn``, ``requires_grad=False``.

    What ``t.detach()`` returns, or a result computed under ``torch.no_grad()``.

    Args:
        *tensors: tensors, modules (their parameters), or dicts/lists/tuples of them;
            dict keys name them in the message.
        msg: text put before the message, or a callable that rewrites it.

    Raises:
        GraphCheckError: a tensor still requires grad or carries a graph.
        InvalidArgument: no tensor given (:class:`InvalidArgumentType` for a non-tensor).

    Examples:
        >>> import torch
        >>> b = torch.randn(1, requires_grad=True)
        >>> assert_detached(b.detach())
        >>> assert_detached(b)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] Tensors are not detached! ...
    """
    __tracebackhide__ = True
    check_msg(msg)
    started = time.perf_counter()
    named = _named_tensors(tensors, "assert_detached")
    names = [name for name, _ in named]
    bad = [(name, t) for name, t in named if t.requires_grad or t.grad_fn is not None]
    if not bad:
        _conclude("assert_detached", _subject(names), names, (), None, started)
        return
    lines = []
    for name, t in bad:
        if t.grad_fn is not None:
            lines.append(f"{name!r} is part of an autograd graph (grad_fn={_grad_fn_text(t)}).")
        else:
            lines.append(f"{name!r} is a leaf that requires grad ({_describe(t)}).")
    lines += [
        "Expected: requires_grad=False and grad_fn=None.",
        "Likely cause: `t.detach()` returns a new tensor and leaves `t` as it was: a bare "
        "`b.detach()` statement, or using the original name after `c = b.detach()`.",
        "Fix: rebind the name (`b = b.detach()`), detach in place (`b.detach_()`, leaves and "
        "views of them excepted), or compute the value under torch.no_grad().",
    ]
    text = _finish(
        "Tensors are not detached!",
        f"assert_detached, {len(bad)} of {len(named)} tensors",
        lines,
        msg,
    )
    _conclude("assert_detached", _subject(names), names, [b[0] for b in bad], text, started)


def assert_requires_grad(*tensors: Any, msg: Msg = None) -> None:
    """Assert that autograd tracks each tensor: ``requires_grad=True``.

    Args:
        *tensors: tensors, modules (every parameter must require grad), or
            dicts/lists/tuples of them; dict keys name them in the message.
        msg: text put before the message, or a callable that rewrites it.

    Raises:
        GraphCheckError: a tensor does not require grad; the message says why
            (created without ``requires_grad=True``, frozen, computed under
            ``no_grad``/``inference_mode``, or detached).
        InvalidArgument: no tensor given (:class:`InvalidArgumentType` for a non-tensor).

    Examples:
        >>> import torch
        >>> w = torch.randn(4, 1, requires_grad=True)
        >>> assert_requires_grad(w, {"layer": torch.nn.Linear(2, 2)})
        >>> x = torch.randn(4, 4)
        >>> assert_requires_grad(x)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] Tensors do not require ...
    """
    __tracebackhide__ = True
    check_msg(msg)
    started = time.perf_counter()
    named = _named_tensors(tensors, "assert_requires_grad")
    names = [name for name, _ in named]
    bad = [(name, t) for name, t in named if not t.requires_grad]
    if not bad:
        _conclude("assert_requires_grad", _subject(names), names, (), None, started)
        return
    lines = []
    for name, t in bad:
        if t.is_inference():
            why = "it was created under torch.inference_mode(), which autograd never tracks"
            fix = "create it outside inference_mode (use torch.no_grad() there instead)"
        elif isinstance(t, nn.Parameter):
            why = "it is a frozen parameter (requires_grad_(False) was called on it)"
            fix = f"unfreeze it with `{name}.requires_grad_()` if it should learn"
        elif t.is_leaf:
            why = (
                "it is a leaf created without requires_grad=True (torch.tensor, torch.randn, "
                "... default to False), computed under torch.no_grad(), or detached"
            )
            fix = f"create it with requires_grad=True or call `{name}.requires_grad_()`"
        else:  # pragma: no cover - a non-leaf always requires grad
            why, fix = "unknown", "check how it is computed"
        lines.append(f"{name!r} ({_describe(t)}): requires_grad=False; {why}. Fix: {fix}.")
    lines.insert(0, "Expected: requires_grad=True for every tensor below.")
    text = _finish(
        "Tensors do not require grad!",
        f"assert_requires_grad, {len(bad)} of {len(named)} tensors",
        lines,
        msg,
    )
    _conclude("assert_requires_grad", _subject(names), names, [b[0] for b in bad], text, started)


def assert_grad_is_none(*tensors: Any, msg: Msg = None) -> None:
    """Assert that no gradient was stored in any of the tensors: ``t.grad is None``.

    Inputs and targets (``x``, ``y``) of a regression never get one; a detached
    tensor neither. A non-leaf tensor that does not ``retain_grad()`` never has
    one, and is read without torch's warning.

    Args:
        *tensors: tensors, modules (every parameter), or dicts/lists/tuples of them.
        msg: text put before the message, or a callable that rewrites it.

    Raises:
        GraphCheckError: a tensor has a ``.grad``; the message names it and its size.
        InvalidArgument: no tensor given (:class:`InvalidArgumentType` for a non-tensor).

    Examples:
        >>> import torch
        >>> x, w = torch.randn(4, 4), torch.randn(4, 1, requires_grad=True)
        >>> (x @ w).sum().backward()
        >>> assert_grad_is_none(x)
        >>> assert_grad_is_none(w)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] Tensors have a gradient! ...
    """
    __tracebackhide__ = True
    check_msg(msg)
    started = time.perf_counter()
    named = _named_tensors(tensors, "assert_grad_is_none")
    names = [name for name, _ in named]
    bad = []
    for name, t in named:
        grad = t.grad if (t.is_leaf or t.retains_grad) else None
        if grad is not None:
            bad.append((name, t, grad))
    if not bad:
        _conclude("assert_grad_is_none", _subject(names), names, (), None, started)
        return
    lines = ["Expected: .grad is None for every tensor below."]
    for name, t, grad in bad:
        lines.append(
            f"{name!r}.grad is a {str(grad.dtype).removeprefix('torch.')} tensor of shape "
            f"{tuple(grad.shape)} (requires_grad={t.requires_grad})."
        )
    lines += [
        "Likely cause: the tensor requires grad (created with requires_grad=True, or a "
        "parameter) and a backward() reached it; or a stale gradient from an earlier "
        "backward() was never cleared.",
        "Fix: create inputs and targets without requires_grad, `.detach()` what must not "
        "learn before using it, and clear gradients with `t.grad = None` or "
        "optimizer.zero_grad().",
    ]
    text = _finish(
        "Tensors have a gradient!",
        f"assert_grad_is_none, {len(bad)} of {len(named)} tensors",
        lines,
        msg,
    )
    _conclude("assert_grad_is_none", _subject(names), names, [b[0] for b in bad], text, started)


# --------------------------------------------------------------------------- reachability


@dataclass(frozen=True)
class _Event:
    op: str
    site: SourceSite | None
    reason: str  # a key of _CUT_TEXT


# The frame of `Function.apply` marks a custom autograd.Function's forward on the stack.
_FUNCTION_APPLY_CODE: Final = torch.autograd.Function.apply.__func__.__code__  # type: ignore[attr-defined]


def _custom_function_frame() -> types.FrameType | None:
    """The innermost ``autograd.Function.apply`` frame on the stack, if one is running.

    Its ``forward`` runs with grad mode off by design: the Function's own node
    records the result, so nothing done inside it cuts a path.
    """
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _FUNCTION_APPLY_CODE:
            return frame
        frame = frame.f_back
    return None


def _function_call(frame: types.FrameType) -> tuple[str, SourceSite | None]:
    """``'Swish.apply'`` and the user's line that called it, from an ``apply`` frame."""
    cls = frame.f_locals.get("cls")
    name = f"{getattr(cls, '__name__', 'Function')}.apply"
    caller = frame.f_back
    while caller is not None and _is_library_file(caller.f_code.co_filename):
        caller = caller.f_back
    if caller is None:
        return name, None
    code = linecache.getline(caller.f_code.co_filename, caller.f_lineno).strip() or None
    return name, SourceSite(caller.f_code.co_filename, caller.f_lineno, caller.f_code.co_name, code)


class _FlowTracer(TorchFunctionMode):
    """Follows which targets each tensor depends on, by value and through autograd.

    A target whose value reaches an operation's output while its autograd
    dependency does not was cut there; the first such operation is kept.

    Inside a custom ``autograd.Function``'s forward, grad mode is off by design
    and the Function's node carries the gradient: dependencies are carried
    through its operations as if recorded, and the tensors made there are
    *pending* until used outside it. Used then without ``requires_grad``, the
    Function itself cut the path (an output marked non-differentiable, or the
    call ran under ``no_grad``).
    """

    def __init__(self, targets: list[torch.Tensor]) -> None:
        super().__init__()
        self._deps: dict[int, tuple[weakref.ref[torch.Tensor], frozenset[int], frozenset[int]]] = {}
        for index, t in enumerate(targets):  # a tensor named twice carries both indices
            data, through = self._lookup(t)
            tracked = frozenset({index}) if t.requires_grad else frozenset()
            self._deps[id(t)] = (weakref.ref(t), data | {index}, through | tracked)
        self.used: set[int] = set()
        self.cuts: dict[int, _Event] = {}
        # id -> (tensor made inside a Function's forward, 'Cls.apply', the line calling it)
        self._pending: dict[int, tuple[weakref.ref[torch.Tensor], str, SourceSite | None]] = {}

    def _lookup(self, t: torch.Tensor) -> tuple[frozenset[int], frozenset[int]]:
        entry = self._deps.get(id(t))
        if entry is None or entry[0]() is not t:
            return frozenset(), frozenset()
        return entry[1], entry[2]

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        data: frozenset[int] = frozenset()
        through: frozenset[int] = frozenset()
        unresolved: list[tuple[frozenset[int], str, SourceSite | None]] = []
        for t in _iter_tensors((args, kwargs)):
            d, g = self._lookup(t)
            data |= d
            if t.requires_grad:
                through |= g
            elif g and id(t) in self._pending:
                unresolved.append((g, *self._pending_call(t)))
        if not data:
            return out
        self.used |= data
        outs = list(_iter_tensors(out))
        # Walking the stack costs: only when a path would be cut here.
        cutting = unresolved or (through and any(not o.requires_grad for o in outs))
        function = _custom_function_frame() if cutting else None
        if function is None:
            for lost_inside, op, site in unresolved:  # the Function's output has no graph
                self._cut(lost_inside, op, "function", site)
        else:  # still inside the forward: the Function's output will decide
            for g, _, _ in unresolved:
                through |= g
        short = _short_op(_op_name(func))
        if not outs:
            # Inside a Function's forward a Python number is fine: its node carries the gradient.
            if short in _EXITS and _custom_function_frame() is None:
                self._cut(data, short, "left_autograd")
            return out
        for o in outs:
            kept = through if o.requires_grad else frozenset()
            lost = through - kept
            if lost and function is not None:
                self._pending[id(o)] = (weakref.ref(o), *_function_call(function))
                kept, lost = through, frozenset()
            if lost:
                if short in _DETACHING:
                    reason = "detached"
                elif not torch.is_grad_enabled():
                    reason = "no_grad"
                elif not (o.is_floating_point() or o.is_complex()):
                    reason = "not_differentiable"
                else:
                    reason = "cut"
                self._cut(lost, short, reason)
            self._deps[id(o)] = (weakref.ref(o), data, kept)
        return out

    def _pending_call(self, t: torch.Tensor) -> tuple[str, SourceSite | None]:
        ref, op, site = self._pending[id(t)]
        return (op, site) if ref() is t else ("an autograd.Function", None)

    def _cut(
        self, indices: frozenset[int], op: str, reason: str, site: SourceSite | None = None
    ) -> None:
        fresh = [i for i in indices if i not in self.cuts]
        if fresh:
            event = _Event(op, site or user_site(), reason)
            for i in fresh:
                self.cuts[i] = event


_CUT_TEXT: Final = {
    "detached": (
        "{op} returns a tensor without autograd history",
        "remove the .detach() / .data on the path from these tensors to the output "
        "(keep it only where gradients must stop on purpose)",
    ),
    "no_grad": (
        "{op} ran with grad mode off (inside torch.no_grad(), torch.inference_mode() or "
        "set_grad_enabled(False))",
        "move that computation out of the no_grad block",
    ),
    "not_differentiable": (
        "{op} gives an integer or boolean result, which has no gradient",
        "use a differentiable stand-in (softmax for argmax, a soft mask for a comparison)",
    ),
    "left_autograd": (
        "the value left autograd through .{op}() (a Python number or NumPy array) and "
        "came back as a new tensor",
        "keep the computation in torch operations on tensors",
    ),
    "function": (
        "{op} returned a tensor that does not require grad (an output marked with "
        "ctx.mark_non_differentiable, or the call ran under torch.no_grad())",
        "call it with grad mode on and return a differentiable output from its forward",
    ),
    "cut": (
        "{op} returned a tensor that does not require grad",
        "check that operation: it does not propagate gradients to these inputs",
    ),
}


def assert_graph_reaches(
    output: torch.Tensor | Callable[[], Any], targets: Any, *, msg: Msg = None
) -> None:
    """Assert that every target tensor is connected to ``output`` through autograd.

    A backward from ``output`` then gives each of them a gradient. For a module,
    every parameter that requires grad is a target (frozen ones are skipped);
    tensors named explicitly are all targets.

    Pass a zero-argument function that computes the output
    (``lambda: loss_fn(model(x))``) instead of the output itself to learn *where*
    the path of an unreached target was cut: the function is run once under a
    tracer that follows values and autograd dependencies through every torch
    operation, and the message names the operation (``detach``, ``.data``, an
    operation under ``no_grad``, ``argmax``, ``.item()``...) and its source line.

    Args:
        output: a tensor (or tuple/list of tensors), or a function returning one.
        targets: an ``nn.Module``, a tensor, or a dict/list/tuple of tensors.
        msg: text put before the message, or a callable that rewrites it.

    Raises:
        GraphCheckError: some targets are not reached; names each, and where
            known the operation and line that cut it.
        InvalidArgument: bad ``output`` or ``targets`` (a module without trainable
            parameters, a non-tensor output).

    Examples:
        >>> import torch
        >>> x = torch.randn(4, 4)
        >>> w = torch.randn(4, 1, requires_grad=True)
        >>> b = torch.randn(1, requires_grad=True)
        >>> loss = (x @ w + b).pow(2).sum()
        >>> assert_graph_reaches(loss, {"w": w, "b": b})
        >>> cut = lambda: (x @ w + b.detach()).pow(2).sum()
        >>> assert_graph_reaches(cut, {"w": w, "b": b})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] The output's graph does ...
    """
    __tracebackhide__ = True
    check_msg(msg)
    started = time.perf_counter()
    if isinstance(targets, nn.Module):
        named: list[tuple[str, torch.Tensor]] = [
            (n, p) for n, p in targets.named_parameters() if p.requires_grad
        ]
        if not named:
            raise InvalidArgument(
                f"targets: {type(targets).__name__} has no parameter that requires grad."
            )
        what = "parameters"
    else:
        named = _named_tensors((targets,), "assert_graph_reaches")
        what = "tensors"
    tracer: _FlowTracer | None = None
    output_fn: Callable[[], Any] | None = None
    if callable(output) and not isinstance(output, torch.Tensor):
        output_fn = output
        tracer = _FlowTracer([t for _, t in named])
        with tracer:
            output = output()
    outputs = list(_iter_tensors(output))
    if not outputs:
        raise InvalidArgumentType(
            f"output={output!r} must be a tensor, a list or tuple of tensors, or a function "
            "returning one."
        )
    leaves, nodes = _reached_leaves(outputs)
    missing = [
        (index, name, t)
        for index, (name, t) in enumerate(named)
        if not (id(t) in leaves or (t.grad_fn is not None and t.grad_fn in nodes))
    ]
    names = [name for name, _ in named]
    subject = _callable_name(output_fn) if output_fn is not None else _subject(names)
    if not missing:
        _conclude("assert_graph_reaches", subject, names, (), None, started)
        return
    has_graph = any(t.grad_fn is not None or t.requires_grad for t in outputs)
    groups: dict[tuple[str, str], list[str]] = {}
    for index, name, t in missing:
        groups.setdefault(_why_unreached(index, t, tracer, has_graph), []).append(name)
    lines = []
    for (found, fix), names in groups.items():
        lines.append(f"{_quote(names)}: {found}.")
        lines.append(f"  Fix: {fix}.")
    lines.append(
        "Expected: a backward from the output reaches each of them (each gets a .grad); "
        "an unreached parameter never learns."
    )
    if tracer is None and has_graph:
        lines.append(
            "To see where the path is cut, pass a function instead of the output: "
            "assert_graph_reaches(lambda: loss_fn(model(x)), model)."
        )
    header = f"The output's graph does not reach {len(missing)} of {len(named)} {what}!"
    text = _finish(header, "assert_graph_reaches", lines, msg)
    _conclude("assert_graph_reaches", subject, names, [n for _, n, _ in missing], text, started)


def _why_unreached(
    index: int, t: torch.Tensor, tracer: _FlowTracer | None, has_graph: bool
) -> tuple[str, str]:
    if not t.requires_grad:
        return (
            "requires_grad=False, so autograd does not track it",
            "call .requires_grad_() on it if it should learn, or leave it out of the check",
        )
    if tracer is not None:  # what the trace saw is the most specific answer
        event = tracer.cuts.get(index)
        if event is not None:
            found, fix = _CUT_TEXT[event.reason]
            where = f" at {event.site}" if event.site else ""
            return found.format(op=event.op) + where, fix
        if index not in tracer.used:
            return (
                "no operation in the computation read it (is its module called in forward()?)",
                "use it in the forward pass, or freeze it (requires_grad_(False)) / remove it",
            )
    if not has_graph:
        return (
            "the output has no autograd graph at all (requires_grad=False): it was computed "
            "under torch.no_grad() / torch.inference_mode(), or detached",
            "compute the loss with grad mode on, from the model's output (not a detached copy)",
        )
    if tracer is None:
        return (
            "not connected to the output's graph: unused by the forward pass, or its path "
            "cut by .detach(), .data, torch.no_grad() or .item()",
            "find the cut by passing a function instead of the output",
        )
    return (
        "its value is read, but nothing derived from it reaches the output",
        "check that the result computed from it is used in the output",
    )


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class _Memory:
    name: str
    what: str
    device: str
    start: int
    end: int  # exclusive; start == end for an empty tensor
    array: np.ndarray[Any, Any] | None  # a NumPy view for an exact overlap test, when possible
    storage: int | None


def _extent(
    ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int
) -> tuple[int, int]:
    if any(s == 0 for s in shape):
        return ptr, ptr
    low = sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s < 0)
    high = sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s > 0)
    return ptr + low, ptr + high + itemsize


# np.shares_memory's budget; past it the answer falls back to the byte ranges.
_SHARES_MEMORY_WORK: Any = 1_000_000
_INT_BY_ITEMSIZE: Final = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _numpy_view(t: torch.Tensor) -> np.ndarray[Any, Any] | None:
    if t.device.type != "cpu" or t.layout != torch.strided or t.is_neg():
        return None
    try:
        if t.is_conj():
            t = t.conj()
        if t.is_complex():
            t = torch.view_as_real(t)
        return t.view(_INT_BY_ITEMSIZE[t.element_size()]).numpy()
    except (RuntimeError, KeyError, TypeError):
        return None


def _memory(value: Any, name: str) -> _Memory:
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.layout != torch.strided or t.is_meta:
            raise InvalidArgument(
                f"{name!r} is a {t.layout} tensor; only dense tensors have memory."
            )
        start, end = _extent(
            t.data_ptr(),
            tuple(t.shape),
            tuple(s * t.element_size() for s in t.stride()),
            t.element_size(),
        )
        return _Memory(
            name,
            _describe(value),
            str(t.device),
            start,
            end,
            _numpy_view(t),
            t.untyped_storage().data_ptr(),
        )
    if isinstance(value, np.ndarray):
        ptr = int(value.__array_interface__["data"][0])
        start, end = _extent(ptr, tuple(value.shape), tuple(value.strides), value.itemsize)
        what = f"{value.dtype} NumPy array of shape {tuple(value.shape)}"
        return _Memory(name, what, "cpu", start, end, value, None)
    raise InvalidArgumentType(
        f"{name}={value!r} must be a torch.Tensor, an nn.Parameter or a NumPy array, "
        f"not {type(value).__name__}."
    )


def _overlap(a: _Memory, b: _Memory) -> int:
    """Bytes of overlap between the two extents (0: no shared memory)."""
    if a.device != b.device or a.start == a.end or b.start == b.end:
        return 0
    overlap = min(a.end, b.end) - max(a.start, b.start)
    if overlap <= 0:
        return 0
    if a.array is not None and b.array is not None:
        try:
            if not np.shares_memory(a.array, b.array, max_work=_SHARES_MEMORY_WORK):
                return 0
        except np.exceptions.TooHardError:
            pass
    return overlap


def _two(a: Any, b: Any) -> tuple[_Memory, _Memory]:
    local = _local_names()
    return _memory(a, local.get(id(a), "a")), _memory(b, local.get(id(b), "b"))


def assert_shares_memory(a: Any, b: Any, *, msg: Msg = None) -> None:
    """Assert that ``a`` and ``b`` are views of the same memory: writing one changes the other.

    For tensors, ``nn.Parameter``s and NumPy arrays in any combination: the
    NumPy bridge (``t.numpy()``, ``torch.from_numpy(a)``) shares memory, and so
    does a parameter with what an optimizer holds as long as nobody re-assigned
    it with ``nn.Parameter(...)``. Element-exact on the CPU (two interleaved
    slices of one buffer do not share), by byte range elsewhere.

    Args:
        a: a tensor, parameter or NumPy array.
        b: another.
        msg: text put before the message, or a callable that rewrites it.

    Raises:
        GraphCheckError: they do not share memory.
        InvalidArgumentType: one is neither a tensor nor a NumPy array.

    Examples:
        >>> import torch
        >>> t = torch.ones(3)
        >>> assert_shares_memory(t, t.numpy())
        >>> assert_shares_memory(t, t.clone())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] Tensors do not share ...
    """
    __tracebackhide__ = True
    check_msg(msg)
    started = time.perf_counter()
    ma, mb = _two(a, b)
    names = [ma.name, mb.name]
    if a is b or _overlap(ma, mb):
        _conclude("assert_shares_memory", _subject(names), names, (), None, started)
        return
    lines = [
        f"{ma.name!r}: {ma.what}, bytes [{ma.start:#x}, {ma.end:#x}).",
        f"{mb.name!r}: {mb.what}, bytes [{mb.start:#x}, {mb.end:#x}).",
        "Expected: one memory seen through both, so that writing one changes the other.",
        "Found: separate memory; writing one leaves the other as it was.",
        "Likely cause: a copy was made: nn.Parameter(...) assigned to a module attribute "
        "(the optimizer keeps the old tensor), .clone(), .copy(), torch.tensor(array), "
        "or .to() another dtype or device.",
        "Fix: share instead of copying: write parameters through `p.data = ...` or "
        "`p.copy_(...)` under torch.no_grad(); use torch.from_numpy() / Tensor.numpy() "
        "for the NumPy bridge; .view() / .detach() for tensors.",
    ]
    text = _finish("Tensors do not share memory!", "assert_shares_memory", lines, msg)
    _conclude("assert_shares_memory", _subject(names), names, names, text, started)


def assert_no_shared_memory(a: Any, b: Any, *, msg: Msg = None) -> None:
    """Assert that ``a`` and ``b`` use separate memory: writing one cannot change the other.

    Args:
        a: a tensor, parameter or NumPy array.
        b: another.
        msg: text put before the message, or a callable that rewrites it.

    Raises:
        GraphCheckError: they share memory; the message says how many bytes overlap.
        InvalidArgumentType: one is neither a tensor nor a NumPy array.

    Examples:
        >>> import torch
        >>> t = torch.ones(3)
        >>> assert_no_shared_memory(t, t.clone())
        >>> assert_no_shared_memory(t, t.numpy())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] Tensors share memory! ...
    """
    __tracebackhide__ = True
    check_msg(msg)
    started = time.perf_counter()
    ma, mb = _two(a, b)
    names = [ma.name, mb.name]
    overlap = ma.end - ma.start if a is b else _overlap(ma, mb)
    if not overlap:
        _conclude("assert_no_shared_memory", _subject(names), names, (), None, started)
        return
    how = (
        "they are the same object"
        if a is b
        else f"{overlap} bytes of their extents overlap, at [{max(ma.start, mb.start):#x}, "
        f"{min(ma.end, mb.end):#x})"
    )
    lines = [
        f"{ma.name!r}: {ma.what}.",
        f"{mb.name!r}: {mb.what}.",
        "Expected: separate memory.",
        f"Found: shared memory: {how}; writing one changes the other.",
        "Likely cause: Tensor.numpy() and torch.from_numpy() share memory with the tensor; "
        ".detach(), .data, .view(), slicing and transposes are views of it.",
        "Fix: take a copy: .clone() for a tensor, .copy() for a NumPy array, or "
        "torch.tensor(array), which copies.",
    ]
    text = _finish("Tensors share memory!", "assert_no_shared_memory", lines, msg)
    _conclude("assert_no_shared_memory", _subject(names), names, names, text, started)
