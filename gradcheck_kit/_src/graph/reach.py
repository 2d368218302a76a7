"""Reach: whether a backward from an output gets to each target, and where a path was cut.

* :func:`assert_graph_reaches` — every parameter is connected to the loss; given
  a function instead of its output, it also finds *where* the path was cut
  (a ``detach()``, ``.data``, an operation under ``no_grad``, ``.item()``...).
* :func:`graph_nodes` — the autograd node types of a graph, for tests that pin its shape.
"""

from __future__ import annotations

import sys
import time
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import nn

from ..errors import InvalidArgument, InvalidArgumentType
from .common import (
    Msg,
    callable_name,
    check_msg,
    compose,
    conclude,
    iter_tensors,
    listed,
    named_tensors,
    op_name,
    short_op,
)
from .modes import OpWatcher
from .sites import SourceSite, is_library_file, site_of, user_site

__all__ = ["graph_nodes", "assert_graph_reaches"]

# Tensor methods through which a value leaves autograd as a Python or NumPy value.
_EXITS: Final = frozenset(
    {"item", "tolist", "numpy", "__float__", "__int__", "__complex__", "__index__", "__array__"}
)
_DETACHING: Final = frozenset({"detach", "detach_", "data.__get__"})


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
    while caller is not None and is_library_file(caller.f_code.co_filename):
        caller = caller.f_back
    if caller is None:
        return name, None
    return name, site_of(caller)


class _FlowTracer(OpWatcher):
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

    def on_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``func``, noting what the check needs of the call (:class:`OpWatcher`)."""
        out = func(*args, **kwargs)
        data: frozenset[int] = frozenset()
        through: frozenset[int] = frozenset()
        unresolved: list[tuple[frozenset[int], str, SourceSite | None]] = []
        for t in iter_tensors((args, kwargs)):
            d, g = self._lookup(t)
            data |= d
            if t.requires_grad:
                through |= g
            elif g and id(t) in self._pending:
                unresolved.append((g, *self._pending_call(t)))
        if not data:
            return out
        self.used |= data
        outs = list(iter_tensors(out))
        # Walking the stack costs: only when a path would be cut here.
        cutting = unresolved or (through and any(not o.requires_grad for o in outs))
        function = _custom_function_frame() if cutting else None
        if function is None:
            for lost_inside, op, site in unresolved:  # the Function's output has no graph
                self._cut(lost_inside, op, "function", site)
        else:  # still inside the forward: the Function's output will decide
            for g, _, _ in unresolved:
                through |= g
        short = short_op(op_name(func))
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
        named = named_tensors((targets,), "assert_graph_reaches")
        what = "tensors"
    tracer: _FlowTracer | None = None
    output_fn: Callable[[], Any] | None = None
    if callable(output) and not isinstance(output, torch.Tensor):
        output_fn = output
        tracer = _FlowTracer([t for _, t in named])
        with tracer:
            output = output()
    outputs = list(iter_tensors(output))
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
    subject = callable_name(output_fn) if output_fn is not None else listed(names)
    if not missing:
        conclude("assert_graph_reaches", subject, names, (), None, started)
        return
    has_graph = any(t.grad_fn is not None or t.requires_grad for t in outputs)
    groups: dict[tuple[str, str], list[str]] = {}
    for index, name, t in missing:
        groups.setdefault(_why_unreached(index, t, tracer, has_graph), []).append(name)
    lines = []
    for (found, fix), unreached in groups.items():
        lines.append(f"{listed(unreached, quoted=True)}: {found}.")
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
    text = compose(header, "assert_graph_reaches", lines, msg)
    conclude("assert_graph_reaches", subject, names, [n for _, n, _ in missing], text, started)


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
