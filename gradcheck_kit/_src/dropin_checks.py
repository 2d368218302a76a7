"""The checks torch.autograd.gradcheck runs beside the Jacobian comparison, for the drop-in.

Each one takes ``fn`` and torch-style inputs (a tensor or a tuple whose tensors
that require grad are checked), runs on fresh copies, and returns a sentence
saying what is wrong, or None: the core returns error data, the drop-in turns
it into its failure. They mirror torch's own options:

* :func:`undefined_grad_problem` (``check_undefined_grad``): backward with
  undefined grad_outputs treats them as zero;
* :func:`zero_grad_output_problem`: backward of a zero grad_output is zero;
* :func:`grad_dtype_problem` (``check_grad_dtypes``): gradients have the
  inputs' dtypes and devices;
* :func:`reentrant_problem` (``nondet_tol``): two backward passes agree;
* :func:`batched_grad_problem` (``check_batched_grad``): backward under vmap
  equals a loop of backward passes;
* :func:`forward_ad_problem` (``check_forward_ad``): forward-mode AD runs;
* :func:`batched_forward_grad_problem` (``check_batched_forward_grad``):
  forward mode under vmap equals a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd import forward_ad

from .engine.evaluation import first_line

__all__ = [
    "torch_style_inputs",
    "differentiable_outputs",
    "undefined_grad_problem",
    "zero_grad_output_problem",
    "grad_dtype_problem",
    "reentrant_problem",
    "batched_grad_problem",
    "forward_ad_problem",
    "batched_forward_grad_problem",
]

# Rows of the batched checks: torch uses two as well, enough to tell a batched rule
# that mixes up rows from a right one.
_BATCH = 2


def torch_style_inputs(inputs: Any) -> tuple[Any, ...]:
    """The inputs as a tuple, as torch.autograd.gradcheck unpacks them.

    Examples:
        >>> import torch
        >>> len(torch_style_inputs(torch.ones(2)))
        1
    """
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def _copies(inputs: Sequence[Any]) -> tuple[list[Any], list[torch.Tensor]]:
    """Fresh leaves for the checked inputs (others pass as they are), and those leaves."""
    args: list[Any] = []
    diff: list[torch.Tensor] = []
    for x in inputs:
        if isinstance(x, torch.Tensor) and x.requires_grad:
            leaf = x.detach().clone().requires_grad_(True)
            args.append(leaf)
            diff.append(leaf)
        else:
            args.append(x)
    return args, diff


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [o for o in out if isinstance(o, torch.Tensor)]


def differentiable_outputs(out: Any) -> list[torch.Tensor]:
    """The outputs autograd can differentiate (torch's ``_differentiable_outputs``).

    Examples:
        >>> import torch
        >>> x = torch.ones(2, requires_grad=True)
        >>> len(differentiable_outputs((x * 2, x.detach())))
        1
    """
    return [o for o in _outputs(out) if o.requires_grad]


def _call(fn: Callable[..., Any], inputs: Sequence[Any]) -> tuple[list[torch.Tensor], list[Any]]:
    args, diff = _copies(inputs)
    with torch.enable_grad():
        outs = differentiable_outputs(fn(*args))
    return outs, diff


def _grads(
    outs: Sequence[torch.Tensor],
    diff: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor | None],
    **kw: Any,
) -> tuple[torch.Tensor | None, ...]:
    return torch.autograd.grad(
        list(outs), list(diff), list(grad_outputs), retain_graph=True, allow_unused=True, **kw
    )


def _first_nonzero(grads: Sequence[torch.Tensor | None]) -> int | None:
    """The index of the first gradient with a nonzero entry, or None."""
    return next((i for i, g in enumerate(grads) if g is not None and not bool(g.eq(0).all())), None)


def undefined_grad_problem(fn: Callable[..., Any], inputs: Sequence[Any]) -> str | None:
    """Backward with every (then each one) grad_output undefined must treat it as zero.

    A custom Function with ``ctx.set_materialize_grads(False)`` receives ``None``
    there; its backward must not crash and must return None or zeros.
    """
    outs, diff = _call(fn, inputs)
    if not outs or not diff:
        return None
    patterns = [list(range(len(outs)))]
    if len(outs) > 1:
        patterns += [[k] for k in range(len(outs))]
    for undefined in patterns:
        outs, diff = _call(fn, inputs)
        marked: list[torch.Tensor] = [
            torch._C._functions.UndefinedGrad()(o) if k in undefined else o  # type: ignore[misc]
            for k, o in enumerate(outs)
        ]
        # zeros: the grad_outputs of the outputs marked undefined reach backward as None
        zeros = [torch.zeros_like(o) for o in marked]
        which = "every output" if len(undefined) == len(outs) else f"output {undefined[0]}"
        try:
            grads = _grads(marked, diff, zeros)
        except Exception as exc:
            return (
                f"backward raised with an undefined (None) grad_output for {which}: "
                f"{first_line(exc)}. A backward must treat an undefined grad_output as zero "
                f"(test it for None when the Function calls ctx.set_materialize_grads(False)); "
                f"or pass check_undefined_grad=False."
            )
        i = _first_nonzero(grads)
        if i is not None:
            return (
                f"backward returned a nonzero gradient for input {i} when the grad_output "
                f"of {which} was undefined (zero); the gradient of zero must be zero or "
                f"None. Pass check_undefined_grad=False to skip this check."
            )
    return None


def zero_grad_output_problem(fn: Callable[..., Any], inputs: Sequence[Any]) -> str | None:
    """Backward of zero grad_outputs must give zero gradients (it multiplies by grad_output)."""
    outs, diff = _call(fn, inputs)
    if not outs or not diff:
        return None
    i = _first_nonzero(_grads(outs, diff, [torch.zeros_like(o) for o in outs]))
    if i is None:
        return None
    return (
        f"backward is not multiplied by grad_output: a zero grad_output gave a nonzero "
        f"gradient for input {i}."
    )


def grad_dtype_problem(fn: Callable[..., Any], inputs: Sequence[Any]) -> str | None:
    """Each gradient must have its input's dtype and device (``check_grad_dtypes``)."""
    outs, diff = _call(fn, inputs)
    if not outs or not diff:
        return None
    grads = _grads(outs, diff, [torch.ones_like(o) for o in outs])
    for i, (g, x) in enumerate(zip(grads, diff, strict=True)):
        if g is not None and (g.dtype != x.dtype or g.device != x.device):
            return (
                f"the gradient of input {i} is {g.dtype} on {g.device}, but the input is "
                f"{x.dtype} on {x.device} (check_grad_dtypes=True): return gradients in the "
                f"inputs' dtypes and devices."
            )
    return None


def reentrant_problem(
    fn: Callable[..., Any], inputs: Sequence[Any], nondet_tol: float
) -> str | None:
    """Two backward passes of the same grad_outputs must agree within ``nondet_tol``."""
    outs, diff = _call(fn, inputs)
    if not outs or not diff:
        return None
    gen = torch.Generator().manual_seed(0)
    cots = [
        torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype).to(o.device)
        for o in outs
    ]
    first = _grads(outs, diff, cots)
    second = _grads(outs, diff, cots)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        if a is None or b is None:
            continue
        worst = float((a.detach() - b.detach()).abs().max()) if a.numel() else 0.0
        if worst > nondet_tol:
            return (
                f"backward is not reentrant: two backward passes with the same grad_output "
                f"give gradients of input {i} differing by {worst:.3g}, more than "
                f"nondet_tol={nondet_tol:g}. Make backward deterministic "
                f"(torch.use_deterministic_algorithms(True)) or pass a nondet_tol that allows it."
            )
    return None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=True))


def batched_grad_problem(fn: Callable[..., Any], inputs: Sequence[Any]) -> str | None:
    """Backward vmapped over a batch of grad_outputs must equal a loop of backward passes."""
    outs, diff = _call(fn, inputs)
    if not outs or not diff:
        return None
    gen = torch.Generator().manual_seed(0)
    for k, o in enumerate(outs):
        cots = torch.randn((_BATCH, *o.shape), generator=gen, dtype=torch.float64)
        cots = cots.to(o.dtype).to(o.device)
        loop = [_grads([o], diff, [c]) for c in cots]
        try:
            batched = _grads([o], diff, [cots], is_grads_batched=True)
        except Exception as exc:
            return (
                f"backward of output {k} does not run under vmap (check_batched_grad=True): "
                f"{first_line(exc)}. Give the Function a vmap rule (generate_vmap_rule=True "
                f"or a vmap staticmethod) or pass check_batched_grad=False."
            )
        for i, b in enumerate(batched):
            rows = [row[i] for row in loop]
            if b is None or any(r is None for r in rows):
                continue
            expected = torch.stack([r for r in rows if r is not None])
            if not _close(b, expected):
                return (
                    f"the batched backward (vmap over grad_outputs) of output {k} gives another "
                    f"gradient for input {i} than a loop of backward passes "
                    f"(check_batched_grad=True): the Function's vmap rule is wrong."
                )
    return None


def _jvp(
    fn: Callable[..., Any], inputs: Sequence[Any], tangents: Sequence[torch.Tensor]
) -> list[torch.Tensor | None]:
    args: list[Any] = []
    it = iter(tangents)
    with forward_ad.dual_level():
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.requires_grad:
                args.append(forward_ad.make_dual(x.detach(), next(it)))
            else:
                args.append(x)
        outs = _outputs(fn(*args))
        return [forward_ad.unpack_dual(o).tangent for o in outs]


def _diff_inputs(inputs: Sequence[Any]) -> list[torch.Tensor]:
    return [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]


def forward_ad_problem(fn: Callable[..., Any], inputs: Sequence[Any]) -> str | None:
    """Forward-mode AD must run through ``fn`` (``check_forward_ad=True``)."""
    diff = _diff_inputs(inputs)
    if not diff:
        return None
    try:
        with torch.no_grad():
            tangents = _jvp(fn, inputs, [torch.ones_like(x) for x in diff])
    except Exception as exc:
        return (
            f"forward-mode AD does not run through fn (check_forward_ad=True): "
            f"{first_line(exc)}. Give the Function a jvp staticmethod, or pass "
            f"check_forward_ad=False."
        )
    if any(t is None for t in tangents) and all(t is None for t in tangents):
        return (
            "forward-mode AD gives no tangent for any output (check_forward_ad=True): fn does "
            "not propagate forward-mode derivatives."
        )
    return None


def batched_forward_grad_problem(fn: Callable[..., Any], inputs: Sequence[Any]) -> str | None:
    """Forward mode vmapped over a batch of tangents must equal a loop of jvps, input by input.

    Uses the vmap that forward-mode duals run under (``torch._vmap_internals``), as
    torch's own check does: ``torch.func.vmap`` has no batching rule for ``make_dual``.
    """
    from torch._vmap_internals import _vmap

    gen = torch.Generator().manual_seed(0)
    for i, x in enumerate(inputs):
        if not (isinstance(x, torch.Tensor) and x.requires_grad):
            continue

        def jvp(tangent: torch.Tensor, i: int = i) -> tuple[torch.Tensor, ...]:
            with forward_ad.dual_level():
                args = [
                    forward_ad.make_dual(a.detach(), tangent)
                    if k == i
                    else (a.detach() if isinstance(a, torch.Tensor) else a)
                    for k, a in enumerate(inputs)
                ]
                found = []
                for o in _outputs(fn(*args)):
                    primal, t = forward_ad.unpack_dual(o)
                    found.append(t if t is not None else torch.zeros_like(primal))
                return tuple(found)

        batch = torch.randn((_BATCH, *x.shape), generator=gen, dtype=torch.float64)
        batch = batch.to(x.dtype).to(x.device)
        with torch.no_grad():
            loop = [jvp(t) for t in batch]
            try:
                batched = _vmap(jvp)(batch)
            except Exception as exc:
                return (
                    f"forward mode does not run under vmap for input {i} "
                    f"(check_batched_forward_grad=True): {first_line(exc)}. Give the Function a "
                    f"vmap rule or pass check_batched_forward_grad=False."
                )
        for k, b in enumerate(batched):
            if not _close(b, torch.stack([row[k] for row in loop])):
                return (
                    f"forward mode under vmap gives another tangent for output {k} along input "
                    f"{i} than a loop of jvps (check_batched_forward_grad=True): the vmap rule "
                    f"is wrong."
                )
    return None
