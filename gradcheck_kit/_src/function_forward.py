"""The forward-mode part of an autograd.Function audit: ``jvp`` against ``backward``.

Both are analytic derivatives, so they must agree up to their own roundoff:
the whole Jacobian is built once by forward mode (one column per input entry)
and once by backward (one row per output entry) and compared entry by entry.
:func:`gradcheck_kit.check_autograd_function` runs it after the backward check,
which decides whose fault a disagreement is.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd import forward_ad

from .engine.diagnose import Block, diagnose
from .engine.evaluation import first_line
from .engine.judging import PairTally
from .engine.options import CheckOptions
from .engine.tolerances import machine_eps, resolve_tolerances
from .results import AuditFinding, Hint

__all__ = ["FunctionClass", "audit_forward_mode", "function_outputs"]

FunctionClass = type[torch.autograd.Function]

# The forward-mode audit builds whole Jacobians one column (forward pass) and one row
# (backward pass) at a time: meant for the small inputs an audit runs on.
_MAX_FORWARD_AUDIT_ENTRIES = 1 << 16
# Two analytic derivatives (jvp and backward) differ by their own roundoff only.
_ANALYTIC_ROUNDOFF_ULPS = 64


def function_outputs(raw: Any) -> list[Any]:
    """What ``Function.apply`` returned, as a list (a single output is a list of one).

    Examples:
        >>> import torch
        >>> len(function_outputs(torch.ones(2))), len(function_outputs((1, 2)))
        (1, 2)
    """
    return list(raw) if isinstance(raw, (tuple, list)) else [raw]


def audit_forward_mode(
    function: FunctionClass,
    args: list[Any],
    opts: CheckOptions,
    *,
    paths: Sequence[str],
    out_paths: Sequence[str],
    marked: Sequence[int],
    backward_right: bool,
) -> tuple[AuditFinding, list[Hint]]:
    """The ``forward_mode`` finding for ``function`` at ``args`` (fresh copies), and its hints.

    ``paths``/``out_paths`` name forward's inputs and outputs, ``marked`` the
    outputs marked non-differentiable; ``backward_right`` whether backward
    agreed with finite differences, which decides whose fault a disagreement is.

    Examples:
        >>> import torch
        >>> from gradcheck_kit._src.engine.options import CheckOptions
        >>> class Double(torch.autograd.Function):  # no jvp
        ...     forward = staticmethod(lambda ctx, x: 2 * x)
        ...     backward = staticmethod(lambda ctx, grad: 2 * grad)
        >>> x = torch.ones(2, dtype=torch.float64, requires_grad=True)
        >>> finding, hints = audit_forward_mode(Double, [x], CheckOptions(), paths=["input"],
        ...     out_paths=["output"], marked=[], backward_right=True)
        >>> finding.status, hints
        ('skipped', [])
    """
    if function.jvp is torch.autograd.Function.jvp:
        return AuditFinding(
            "forward_mode",
            "skipped",
            "no jvp staticmethod: forward-mode AD (torch.func.jvp, torch.autograd.forward_ad) "
            "raises on this Function; define jvp (with ctx.save_for_forward) to support it",
        ), []
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    xs = [args[i] for i in positions]
    with torch.enable_grad():
        raw = function_outputs(function.apply(*args))
    differentiable = [
        (o, p)
        for o, p in zip(raw, out_paths, strict=True)
        if isinstance(o, torch.Tensor) and o.requires_grad
    ]
    outs = [o for o, _ in differentiable]
    m = sum(int(o.numel()) for o in outs)
    n = sum(int(x.numel()) for x in xs)
    if m * n > _MAX_FORWARD_AUDIT_ENTRIES:
        return AuditFinding(
            "forward_mode",
            "skipped",
            f"the Jacobian has {m} x {n} entries, too many for the forward-mode audit "
            f"(up to {_MAX_FORWARD_AUDIT_ENTRIES}); audit on smaller inputs",
        ), []
    try:
        # forward AD warns about internals on first use (as the core, hide that)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fwd = _forward_columns(function, args, positions, marked, len(outs))
    except Exception as exc:
        text = f"jvp raised {first_line(exc, 200)}"
        if "unpack" in str(exc) or "saved" in str(exc):
            text += (
                " — in forward mode ctx.saved_tensors holds only what "
                "ctx.save_for_forward(...) saved: save the tensors jvp needs with it"
            )
        return AuditFinding("forward_mode", "failed", text), []
    rev = _reverse_rows(outs, xs)
    tol = resolve_tolerances(
        torch.float64 if opts.dtype == "float64" else xs[0].dtype, atol=opts.atol, rtol=opts.rtol
    )
    failures = []
    blocks = []
    for j, (o, opath) in enumerate(differentiable):
        for i, x in enumerate(xs):
            A, R = fwd[j][i], rev[j][i]
            slack = _ANALYTIC_ROUNDOFF_ULPS * machine_eps(x.dtype) * torch.maximum(A.abs(), R.abs())
            allowed = tol.atol + tol.rtol * R.abs() + slack
            tally = PairTally(opath, paths[positions[i]], tuple(o.shape), tuple(x.shape))
            mismatch = tally.add(0, 0, A, R, allowed)
            pair = tally.result()
            if not pair.passed:
                failures.append(pair)
                values = x.detach().reshape(-1).to(torch.float64)
                blocks.append(
                    Block(
                        pair.output,
                        pair.input,
                        pair.output_shape,
                        pair.input_shape,
                        A,
                        R,
                        mismatch,
                        values,
                    )
                )
    if not failures:
        return AuditFinding(
            "forward_mode", "passed", f"jvp agrees with backward on all {m * n} Jacobian entries"
        ), []
    pair = failures[0]
    w = pair.worst[0]
    culprit = (
        "jvp is wrong (backward agrees with finite differences)"
        if backward_right
        else "backward disagrees with finite differences too: fix it first"
    )
    finding = AuditFinding(
        "forward_mode",
        "failed",
        f"jvp disagrees with backward at output '{pair.output}' index {w.output_index}, "
        f"input '{pair.input}' index {w.input_index}: jvp gives {w.analytic:.6g}, backward "
        f"{w.numeric:.6g} ({pair.mismatched} of {pair.total} entries differ); {culprit}",
        output=pair.output,
        input=pair.input,
    )
    hints = []
    for h in diagnose(blocks):
        text = h.text.replace("analytic", "jvp", 1).replace("numeric", "backward", 1)
        text = text.replace(" in the backward?", " in jvp?")
        hints.append(Hint(h.kind, text, h.factor, h.output, h.input))
    return finding, hints


def _forward_columns(
    function: FunctionClass,
    args: list[Any],
    positions: list[int],
    marked: Sequence[int],
    n_outs: int,
) -> list[list[torch.Tensor]]:
    """``J`` by forward mode, one input entry at a time: [output][input] -> (m_j, n_i)."""
    cols: list[list[list[torch.Tensor]]] = [[[] for _ in positions] for _ in range(n_outs)]
    for i, p in enumerate(positions):
        x = args[p]
        for e in range(int(x.numel())):
            tangent = torch.zeros_like(x.detach())
            tangent.view(-1)[e] = 1.0
            with forward_ad.dual_level():
                dual_args = list(args)
                dual_args[p] = forward_ad.make_dual(x.detach(), tangent)
                for q in positions:
                    if q != p:
                        dual_args[q] = args[q].detach()
                outs = [
                    o
                    for o in function_outputs(function.apply(*dual_args))
                    if isinstance(o, torch.Tensor) and o.is_floating_point()
                ]
                kept = [o for k, o in enumerate(outs) if k not in marked]
                for j, o in enumerate(kept[:n_outs]):
                    t = forward_ad.unpack_dual(o).tangent
                    col = (
                        torch.zeros(o.numel(), dtype=torch.float64)
                        if t is None
                        else (t.detach().reshape(-1).to(torch.float64).cpu())
                    )
                    cols[j][i].append(col)
    return [[torch.stack(c, dim=1) for c in per_out] for per_out in cols]


def _reverse_rows(outs: list[torch.Tensor], xs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``J`` by backward, one output entry at a time: [output][input] -> (m_j, n_i)."""
    result: list[list[torch.Tensor]] = []
    for o in outs:
        rows: list[list[torch.Tensor]] = [[] for _ in xs]
        for e in range(int(o.numel())):
            cot = torch.zeros_like(o.detach())
            cot.view(-1)[e] = 1.0
            grads = torch.autograd.grad(
                o,
                xs,
                grad_outputs=cot,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
            for i, g in enumerate(grads):
                rows[i].append(g.detach().reshape(-1).to(torch.float64).cpu())
        result.append([torch.stack(r) for r in rows])
    return result
