"""Presence checks: whether tensors carry a graph, require grad, hold a gradient.

* :func:`assert_no_graph` — an evaluation (or a result) builds no autograd graph
  and leaves every ``.grad`` alone; names the first operation that recorded one.
* :func:`assert_detached`, :func:`assert_requires_grad`, :func:`assert_grad_is_none`.

Each raises a :class:`GraphCheckError` whose message names the tensor, what was
expected, what was found, the likely cause and the fix.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import InvalidArgumentType
from .common import (
    Msg,
    callable_name,
    check_msg,
    compose,
    conclude,
    describe,
    grad_fn_text,
    iter_tensors,
    listed,
    named_tensors,
    op_name,
    short_op,
)
from .modes import OpWatcher
from .sites import SourceSite, local_names, user_site

__all__ = ["assert_no_graph", "assert_detached", "assert_requires_grad", "assert_grad_is_none"]


def _stored_grad(t: torch.Tensor) -> torch.Tensor | None:
    # A non-leaf keeps no .grad unless it retains one; reading it would only warn.
    return t.grad if (t.is_leaf or t.retains_grad) else None


def _leaf_grad_state(t: torch.Tensor) -> tuple[int | None, int]:
    grad = _stored_grad(t)
    return (None, 0) if grad is None else (id(grad), grad._version)


def _assert_each(
    check: str,
    tensors: tuple[Any, ...],
    msg: Msg,
    *,
    header: str,
    failure: Callable[[str, torch.Tensor], str | None],
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    counted: bool = True,
    started: float | None = None,
) -> None:
    """Judge each tensor alone: ``failure`` gives the line for a bad one, None for a good one.

    The message is ``before``, one line per bad tensor, then ``after``. A caller
    that has checked ``msg`` already passes the time it ``started``.
    """
    __tracebackhide__ = True
    if started is None:
        check_msg(msg)
        started = time.perf_counter()
    named = named_tensors(tensors, check)
    names = [name for name, _ in named]
    bad = [(name, line) for name, t in named if (line := failure(name, t)) is not None]
    if not bad:
        conclude(check, listed(names), names, (), None, started)
        return
    lines = [*before, *(line for _, line in bad), *after]
    label = f"{check}, {len(bad)} of {len(named)} tensors" if counted else check
    text = compose(header, label, lines, msg)
    conclude(check, listed(names), names, [name for name, _ in bad], text, started)


class _GraphRecorder(OpWatcher):
    """Notes the first operation that records autograd history, backward calls, and leaves used."""

    def __init__(self) -> None:
        super().__init__()
        self.graph_ops = 0
        self.first_op: tuple[str, str, SourceSite | None] | None = None
        self.backward_sites: list[tuple[str, SourceSite | None]] = []
        # id -> (leaf, its .grad identity and version when first seen)
        self.leaves: dict[int, tuple[torch.Tensor, tuple[int | None, int]]] = {}

    def on_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``func``, noting what the check needs of the call (:class:`OpWatcher`)."""
        name = op_name(func)
        short = short_op(name)
        if short in ("backward", "autograd.backward", "autograd.grad"):
            self.backward_sites.append((name, user_site()))
        for t in iter_tensors((args, kwargs)):
            if t.is_leaf and t.requires_grad and id(t) not in self.leaves:
                self.leaves[id(t)] = (t, _leaf_grad_state(t))
        out = func(*args, **kwargs)
        for t in iter_tensors(out):
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
    _assert_each(
        "assert_no_graph",
        (fn_or_tensors,),
        msg,
        header="Tensors carry an autograd graph!",
        failure=_carried_graph,
        after=(
            "Expected: requires_grad=False and grad_fn=None, as for a result computed "
            "under torch.no_grad() or torch.inference_mode().",
            "Likely cause: it was computed with grad mode on, from a tensor that requires "
            "grad (a parameter, or a tensor created with requires_grad=True).",
            "Fix: compute it inside `with torch.no_grad():` (or @torch.no_grad() on the "
            "evaluation function), or take `.detach()` of it.",
        ),
        counted=False,
        started=started,
    )
    return fn_or_tensors


def _carried_graph(name: str, t: torch.Tensor) -> str | None:
    if not (t.requires_grad or t.grad_fn is not None):
        return None
    return f"{name!r} requires grad (grad_fn={grad_fn_text(t)}): it carries an autograd graph."


def _assert_fn_builds_no_graph(
    fn: Callable[..., Any], args: tuple[Any, ...], msg: Msg, started: float
) -> Any:
    __tracebackhide__ = True
    watched: list[tuple[str, torch.Tensor, tuple[int | None, int]]] = []
    local = local_names()
    for index, arg in enumerate(args):
        if isinstance(arg, nn.Module):
            watched += [(n, p, _leaf_grad_state(p)) for n, p in arg.named_parameters()]
        else:
            for t in iter_tensors(arg):
                if t.is_leaf and t.requires_grad:
                    name = local.get(id(t), f"argument {index}")
                    watched.append((name, t, _leaf_grad_state(t)))
    recorder = _GraphRecorder()
    with recorder:
        result = fn(*args)
    names = {id(t): name for name, t, _ in watched}
    for key, (leaf, state) in recorder.leaves.items():
        if key not in names:
            watched.append((local.get(key, f"a leaf {describe(leaf)}"), leaf, state))
            names[key] = watched[-1][0]
    lines: list[str] = []
    if recorder.first_op is not None:
        op, node, site = recorder.first_op
        where = f" at {site}" if site else ""
        lines.append(
            f"{recorder.graph_ops} operation(s) recorded autograd history; the first: "
            f"{op} created {node}{where}."
        )
    outputs = [t for t in iter_tensors(result) if t.requires_grad or t.grad_fn is not None]
    if outputs:
        lines.append(
            f"{len(outputs)} output tensor(s) require grad (grad_fn={grad_fn_text(outputs[0])})."
        )
    for op, site in recorder.backward_sites:
        lines.append(f"{op} ran during the evaluation" + (f" at {site}." if site else "."))
    changed = [name for name, t, before in watched if _leaf_grad_state(t) != before]
    if changed:
        lines.append(f".grad changed during the evaluation for {listed(changed, quoted=True)}.")
    subject, examined = callable_name(fn), [name for name, _, _ in watched]
    if not lines:
        conclude("assert_no_graph", subject, examined, (), None, started)
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
    text = compose("The evaluation built an autograd graph!", "assert_no_graph", lines, msg)
    conclude("assert_no_graph", subject, examined, changed, text, started)
    return result  # pragma: no cover - conclude raised


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

        ``b.detach()`` returns a new tensor; rebinding the name is the fix:

        >>> b = b.detach()
        >>> assert_detached(b)
    """
    __tracebackhide__ = True
    _assert_each(
        "assert_detached",
        tensors,
        msg,
        header="Tensors are not detached!",
        failure=_attached,
        after=(
            "Expected: requires_grad=False and grad_fn=None.",
            "Likely cause: `t.detach()` returns a new tensor and leaves `t` as it was: a bare "
            "`b.detach()` statement, or using the original name after `c = b.detach()`.",
            "Fix: rebind the name (`b = b.detach()`), detach in place (`b.detach_()`, leaves and "
            "views of them excepted), or compute the value under torch.no_grad().",
        ),
    )


def _attached(name: str, t: torch.Tensor) -> str | None:
    if t.grad_fn is not None:
        return f"{name!r} is part of an autograd graph (grad_fn={grad_fn_text(t)})."
    if t.requires_grad:
        return f"{name!r} is a leaf that requires grad ({describe(t)})."
    return None


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
    _assert_each(
        "assert_requires_grad",
        tensors,
        msg,
        header="Tensors do not require grad!",
        failure=_untracked,
        before=("Expected: requires_grad=True for every tensor below.",),
    )


def _untracked(name: str, t: torch.Tensor) -> str | None:
    if t.requires_grad:
        return None
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
    return f"{name!r} ({describe(t)}): requires_grad=False; {why}. Fix: {fix}."


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

        ``w`` took part in the backward pass, so it holds a gradient now:

        >>> assert_grad_is_none(w)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.GraphCheckError: [gradcheck] Tensors have a gradient! ...
    """
    __tracebackhide__ = True
    _assert_each(
        "assert_grad_is_none",
        tensors,
        msg,
        header="Tensors have a gradient!",
        failure=_holds_grad,
        before=("Expected: .grad is None for every tensor below.",),
        after=(
            "Likely cause: the tensor requires grad (created with requires_grad=True, or a "
            "parameter) and a backward() reached it; or a stale gradient from an earlier "
            "backward() was never cleared.",
            "Fix: create inputs and targets without requires_grad, `.detach()` what must not "
            "learn before using it, and clear gradients with `t.grad = None` or "
            "optimizer.zero_grad().",
        ),
    )


def _holds_grad(name: str, t: torch.Tensor) -> str | None:
    grad = _stored_grad(t)
    if grad is None:
        return None
    return (
        f"{name!r}.grad is a {str(grad.dtype).removeprefix('torch.')} tensor of shape "
        f"{tuple(grad.shape)} (requires_grad={t.requires_grad})."
    )
