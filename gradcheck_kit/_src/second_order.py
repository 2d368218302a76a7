"""check_second_order / assert_second_order: double backward against finite differences.

Second derivatives are first derivatives of the gradient. The gradient map
``inputs -> grad fn(inputs)`` (computed with ``create_graph=True``) is handed to
the core checker: its autograd Jacobian is the Hessian by double backward, its
finite differences are differences of the gradient, in full or fast mode, with
the core's tolerances, hints and leave-no-trace. A double backward that raises
(``@once_differentiable``, a saved tensor modified in place) is reported as a
failed check with the reason, not as a crash.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils import _pytree as pytree

from . import coverage, recording
from .engine.evaluation import FALLBACK_NOTE_PREFIX
from .engine.options import CheckOptions, GradientOptions
from .engine.run import call_on_copies, captured_objects, fn_name
from .engine.tolerances import machine_eps, resolve_tolerances
from .engine.trees import InputTree, flatten_outputs
from .errors import InvalidArgument
from .gradcheck import check_gradients
from .raising import Msg, fail_unless_passed, gradient_error
from .results import GradcheckResult, Hint, SecondOrderResult
from .serial import one_at_a_time
from .state.rng import seed_everything
from .state.snapshot import preserved
from .undo import undoing_writes
from .validation import check_callable, check_keywords

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["check_second_order", "assert_second_order"]

_NO_GRAPH = (
    "the gradient of fn carries no graph, so autograd cannot differentiate it again and "
    "gives 0 for every second derivative: a backward marked @once_differentiable, or one "
    "computed with non-differentiable operations (.detach(), .data, .numpy(), torch.no_grad(), "
    "a tensor saved inside forward that is neither an input nor an output)?"
)


class _GradientMap:
    """``fn``'s gradient as a function of the same inputs, differentiable once more.

    Called by the core like ``fn`` (``g(x)``, ``g(*args)`` or ``g(**kwargs)``);
    returns one gradient per checked input. A vector-valued ``fn`` is reduced
    with a fixed cotangent per output (``<v, fn(x)>``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        tree: InputTree,
        cotangents: Sequence[torch.Tensor] | None,
    ) -> None:
        self.fn = fn
        self.style = tree.call_style
        self.positions = [k for k, leaf in enumerate(tree.leaves) if leaf.checked]
        self.cotangents = cotangents
        self.__name__ = f"grad({fn_name(fn)})"
        self.__qualname__ = self.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        container: Any = kwargs if self.style == "kwargs" else args
        flat, spec = pytree.tree_flatten(container)
        with torch.enable_grad():
            xs = []
            for p in self.positions:
                x = flat[p]
                # finite differences evaluate at plain tensors: make them differentiable here
                xs.append(x if x.requires_grad else x.detach().requires_grad_(True))
                flat[p] = xs[-1]
            rebuilt = pytree.tree_unflatten(flat, spec)
            out = self.fn(**rebuilt) if self.style == "kwargs" else self.fn(*rebuilt)
            # fn's own graph: the gradient's graph holds its backward's operations, not its nodes
            coverage.note_outputs(out)
            scalar = _reduce(out, self.cotangents)
            if not scalar.requires_grad:
                return tuple(torch.zeros_like(x) for x in xs)
            return _differentiable_grads(scalar, xs)


class _GradOutputMap:
    """``v -> grad <v, fn(x)>`` at fixed inputs: its Jacobian is ``J^T``.

    Autograd differentiates it through the backward formulas' dependence on
    their grad_output, which a gradient penalty on an inner layer relies on and
    which a backward that detaches or ignores grad_output gets wrong, however
    right its derivative with respect to the inputs is.
    """

    def __init__(self, fn: Callable[..., Any], tree: InputTree, base: list[Any]) -> None:
        self.fn = fn
        self.tree = tree
        self.base = base
        self.__name__ = f"grad_output_map({fn_name(fn)})"
        self.__qualname__ = self.__name__

    def __call__(self, *vs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            xs = [
                self.base[i].detach().requires_grad_(True)
                for i, leaf in enumerate(self.tree.leaves)
                if leaf.checked
            ]
            out = self.tree.call(self.fn, self.base, xs)
            return _differentiable_grads(_reduce(out, list(vs)), xs)


def _merge_grad_output(
    result: SecondOrderResult,
    part: GradcheckResult,
    mapping: dict[str, str],
    n_cotangents: int,
) -> SecondOrderResult:
    """``result`` with the grad_output check's pairs, probes, hints and verdict added."""
    names = (
        {"input": "grad_output"}
        if n_cotangents == 1
        else {f"inputs[{k}]": f"grad_output[{k}]" for k in range(n_cotangents)}
    )
    both = {**mapping, **names}
    pairs = tuple(
        dataclasses.replace(
            p, output=mapping.get(p.output, p.output), input=names.get(p.input, p.input)
        )
        for p in part.pairs
    )
    hints = tuple(
        dataclasses.replace(
            h,
            text=f"with respect to grad_output: {_rename(h.text, both)}",
            output=mapping.get(h.output, h.output) if h.output else h.output,
            input=names.get(h.input, h.input) if h.input else h.input,
        )
        for h in part.hints
    )
    status = result.status if not result.passed else part.status
    return dataclasses.replace(
        result,
        passed=result.passed and part.passed,
        status=status,
        pairs=result.pairs + pairs,
        probes=result.probes + part.probes,
        hints=result.hints + hints,
        evaluations=result.evaluations + part.evaluations,
    )


def _differentiable_grads(
    scalar: torch.Tensor, xs: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """``d scalar / d xs`` with a graph (``create_graph``), one per input."""
    grads = torch.autograd.grad(
        scalar, list(xs), create_graph=True, allow_unused=True, materialize_grads=True
    )
    # A gradient without a graph would be dropped by the core as "not differentiable";
    # a zero-valued leaf keeps it in the comparison, where its zero Hessian shows.
    anchor = torch.zeros((), dtype=scalar.dtype, device=scalar.device, requires_grad=True)
    return tuple(g if g.requires_grad else g + anchor.to(g.dtype) for g in grads)


def _reduce(out: Any, cotangents: Sequence[torch.Tensor] | None) -> torch.Tensor:
    leaves, _ = flatten_outputs(out)
    if cotangents is None:
        return leaves[0].tensor.sum()
    total = None
    for leaf, v in zip(leaves, cotangents, strict=True):
        term = (leaf.tensor * v.to(dtype=leaf.tensor.dtype, device=leaf.tensor.device)).sum()
        total = term if total is None else total + term.to(total.dtype)
    if total is None:  # pragma: no cover - flatten_outputs refuses an output without leaves
        raise InvalidArgument("fn returned no floating-point tensor.")
    return total


def _double_backward_text(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    head = f"double backward raised {type(exc).__name__}: {message[:200]}"
    if "differentiate twice" in message or "once_differentiable" in message:
        cause = (
            "a backward is marked @once_differentiable and has no second derivative; remove "
            "the decorator and write that backward with differentiable torch operations if "
            "second derivatives are needed (gradient penalties, Hessian-vector products)"
        )
    elif "inplace operation" in message or "in-place operation" in message:
        cause = (
            "a tensor saved for backward is modified in place (after ctx.save_for_backward in "
            "forward, or inside backward): clone it before modifying it"
        )
    elif "saved" in message or "freed" in message:
        cause = (
            "a backward uses saved tensors that are freed or unpacked twice; use "
            "ctx.save_for_backward (not ctx attributes) for inputs and outputs"
        )
    else:
        cause = (
            "the backward of some operation (a custom autograd.Function?) cannot be differentiated"
        )
    return f"{head} — {cause}."


def _preflight(
    fn: Callable[..., Any], tree: InputTree, opts: CheckOptions, seed: int
) -> tuple[list[torch.Tensor] | None, BaseException | None, bool, torch.dtype]:
    """One forward, backward and double backward on copies.

    Returns the cotangents for a vector-valued fn (None for a scalar one), the
    exception double backward raised (or None), whether the gradient carries a
    graph, and the dtype the check will run in.
    """
    work_dtype = torch.float64 if opts.dtype == "float64" else None
    base = tree.working_copies(work_dtype)
    xs = []
    for i, leaf in enumerate(tree.leaves):
        if leaf.checked:
            base[i] = base[i].requires_grad_(True)
            xs.append(base[i])
    with torch.enable_grad():
        out = call_on_copies(fn, tree, base, xs, opts)
        leaves, _ = flatten_outputs(out)
        cotangents: list[torch.Tensor] | None = None
        if len(leaves) != 1 or leaves[0].tensor.numel() != 1:
            gen = torch.Generator().manual_seed(seed)
            cotangents = [
                torch.randn(leaf.tensor.shape, generator=gen, dtype=torch.float64)
                for leaf in leaves
            ]
        dtypes = [x.dtype for x in xs] + [leaf.tensor.dtype for leaf in leaves]
        worst = max(dtypes, key=machine_eps)
        scalar = _reduce(out, cotangents)
        if not scalar.requires_grad:
            return cotangents, None, True, worst
        grads = torch.autograd.grad(
            scalar, xs, create_graph=True, allow_unused=True, materialize_grads=True
        )
        live = [g for g in grads if g.requires_grad]
        if not live:
            return cotangents, None, False, worst
        try:
            total = torch.stack([g.sum() for g in live]).sum()
            torch.autograd.grad(total, xs, allow_unused=True)
        except RuntimeError as exc:
            return cotangents, exc, True, worst
    return cotangents, None, True, worst


def _rename(text: str, mapping: dict[str, str]) -> str:
    if not mapping:
        return text
    pattern = "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True))
    return re.sub(pattern, lambda m: mapping[m.group(0)], text)


def _as_second_order(
    result: GradcheckResult, mapping: dict[str, str], **kw: Any
) -> SecondOrderResult:
    fields = {
        f.name: getattr(result, f.name) for f in dataclasses.fields(GradcheckResult) if f.init
    }
    fields["pairs"] = tuple(
        dataclasses.replace(p, output=mapping.get(p.output, p.output)) for p in result.pairs
    )
    fields["hints"] = tuple(
        dataclasses.replace(
            h,
            text=_rename(h.text, mapping),
            output=mapping.get(h.output, h.output) if h.output else h.output,
        )
        for h in result.hints
    )
    fields["notes"] = tuple(_rename(n, mapping) for n in result.notes)
    fields["check"] = "check_second_order"
    fields.update(kw)
    return SecondOrderResult(**fields)


# inference_mode(False): called inside torch.inference_mode(), the check still needs autograd
@torch.inference_mode(False)
@one_at_a_time
@coverage.exercising
def check_second_order(
    fn: Callable[..., Any], inputs: Any, **options: Unpack[GradientOptions]
) -> SecondOrderResult:
    """Compare second derivatives by double backward with finite differences of the gradient.

    The gradient of ``fn`` (a vector-valued ``fn`` is first reduced to ``<v,
    fn(inputs)>`` with a fixed random ``v`` drawn from ``seed``) is checked like
    any function by :func:`check_gradients`: in ``"full"`` mode the whole
    Hessian, in ``"fast"`` mode random Hessian-vector products ``u^T H w``. Its
    outputs are named ``grad[<input>]``. First derivatives are assumed right:
    check them with :func:`check_gradients`.

    Args:
        fn: the function whose second derivatives are checked.
        inputs: a tensor, a tuple/list of arguments or a dict of keyword arguments.
        **options: the options of :func:`check_gradients` (``mode``, ``dtype``, ``eps``,
            ``atol``, ``rtol``, ``seed``, ``rng``, ``n_probes``, ``max_memory``, ``name``,
            ``empty``), read one order up: ``atol`` and ``rtol`` apply per Hessian entry,
            and ``seed`` also draws ``v``.

    Returns:
        A :class:`SecondOrderResult`. When double backward raises
        (``@once_differentiable``, a saved tensor modified in place) the result
        fails with a ``double_backward`` hint naming the reason.

    Raises:
        InvalidArgument: bad arguments or inputs, as in :func:`check_gradients`.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> gk.check_second_order(lambda x: (x ** 3).sum(), x).passed
        True
        >>> gk.check_second_order(torch.tanh, x, mode="fast").mode
        'fast'
    """
    check_keywords(options, GradientOptions, "check_second_order")
    opts = CheckOptions.create(**options)
    check_callable(fn, "fn", "pass the function to check first")
    tree = InputTree(inputs)
    label = opts.name or fn_name(fn)
    seed = opts.seed
    start = time.perf_counter()
    with preserved(inputs, *captured_objects(fn)), undoing_writes():
        seed_everything(seed)
        cotangents, problem, has_graph, worst = _preflight(fn, tree, opts, seed)
    mapping = {f"output[{k}]": f"grad[{leaf.path}]" for k, leaf in enumerate(tree.checked)}
    if problem is not None:
        tol = resolve_tolerances(worst, eps=opts.eps, atol=opts.atol, rtol=opts.rtol)
        text = _double_backward_text(problem)
        final = SecondOrderResult(
            name=label,
            passed=False,
            status="mismatch",
            mode=opts.mode,
            mode_requested=opts.mode,
            dtype=str(worst).removeprefix("torch."),
            dtype_policy=opts.dtype,
            eps=tol.eps,
            atol=tol.atol,
            rtol=tol.rtol,
            seed=seed,
            rng=opts.rng,
            hints=(Hint(kind="double_backward", text=text),),
            duration_s=time.perf_counter() - start,
        )
        recording.publish(final)
        return final

    # The gradient maps are checked with the caller's options, the budget resolved from its
    # old name, and this check's label; an empty gradient is this check's to judge.
    options.pop("max_jacobian_bytes", None)
    options.pop("empty", None)
    options["max_memory"] = opts.max_memory
    options["name"] = label

    def core_check(gradient_map: Callable[..., Any], checked: Any) -> GradcheckResult:
        with recording.muted(), preserved(inputs, *captured_objects(fn)):
            return check_gradients(gradient_map, checked, **options)

    inner = core_check(_GradientMap(fn, tree, cotangents), inputs)
    result = _as_second_order(inner, mapping)
    if inner.status != "nondeterministic":
        # The gradient's derivative with respect to grad_output, as torch's gradgradcheck
        # checks it: the random v of a vector-valued fn, the 1 of a scalar one.
        v_dtype = torch.float64 if opts.dtype == "float64" else worst
        vs = tuple(c.to(v_dtype).requires_grad_(True) for c in (cotangents or [torch.ones(())]))
        base = tree.working_copies(torch.float64 if opts.dtype == "float64" else None)
        part = core_check(_GradOutputMap(fn, tree, base), vs if len(vs) > 1 else vs[0])
        result = _merge_grad_output(result, part, mapping, len(vs))
    result = dataclasses.replace(result, duration_s=time.perf_counter() - start)
    # autograd.grad does not run under vmap, so the core evaluated the gradient map point by
    # point; say so plainly instead of passing on functorch's error text
    notes = [
        "finite differences of the gradient were evaluated one point at a time (the gradient "
        "map calls autograd.grad, which does not run under vmap)"
        if n.startswith(FALLBACK_NOTE_PREFIX)
        else n
        for n in result.notes
    ]
    if cotangents is not None:
        notes.append(
            f"fn is vector-valued: checked the second derivatives of <v, fn(inputs)> for a "
            f"fixed random v (seed={seed})"
        )
    hints = list(result.hints)
    if not has_graph and not result.passed:
        hints.insert(0, Hint(kind="double_backward", text=_NO_GRAPH))
    final = dataclasses.replace(result, notes=tuple(notes), hints=tuple(hints))
    recording.publish(final)
    return final


def assert_second_order(
    fn: Callable[..., Any], inputs: Any, *, msg: Msg = None, **options: Unpack[GradientOptions]
) -> SecondOrderResult:
    """Assert that ``fn``'s second derivatives (double backward) agree with finite differences.

    Takes the arguments of :func:`check_second_order`, plus ``msg`` (a string
    put before the report, or a callable that rewrites it).

    Returns:
        The passing :class:`SecondOrderResult`.

    Raises:
        GradientMismatchError: a second derivative is wrong, or double backward
            raises; the message says where, by how much and the likely cause.
        NondeterministicFunctionError: ``fn`` is stochastic (try ``rng="replay"``).
        InvalidArgument: misuse, as in :func:`check_second_order`.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
        >>> _ = gk.assert_second_order(lambda x: (x @ x).sin().sum(), x)
    """
    __tracebackhide__ = True
    result = check_second_order(fn, inputs, **options)
    return fail_unless_passed(result, gradient_error(result.status), msg)
