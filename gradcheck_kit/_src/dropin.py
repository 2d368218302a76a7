"""gradcheck / gradgradcheck: drop-ins for torch.autograd.gradcheck and gradgradcheck.

Same signatures and defaults as torch 2.13's, same return values (True, or
False with ``raise_exception=False``), and on a wrong gradient an exception
that is both torch's ``GradcheckError`` and this package's
:class:`~gradcheck_kit.GradientMismatchError`, carrying this package's report.
The Jacobians are compared by this package's engine (with torch's absolute
``eps``, its ``atol``/``rtol`` plus each entry's finite-difference error
estimate); torch's other checks are mirrored by :mod:`.dropin_checks`.

Never calls torch's own gradcheck: ``pytest --gradcheck-torch`` may route
``torch.autograd.gradcheck`` here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd import forward_ad

from . import recording
from .dropin_checks import (
    batched_forward_grad_problem,
    batched_grad_problem,
    differentiable_outputs,
    forward_ad_problem,
    grad_dtype_problem,
    reentrant_problem,
    torch_style_inputs,
    undefined_grad_problem,
    zero_grad_output_problem,
)
from .dropin_errors import TorchGradcheckError
from .dropin_forward import forward_as_reverse
from .engine.gradient import GradientCheck
from .engine.options import CheckOptions
from .engine.run import captured_objects, check_scope, fn_name
from .engine.trees import InputTree
from .errors import InvalidArgument, NonFiniteOutputError, UnsupportedInputError
from .results import GradcheckResult, Hint
from .serial import one_at_a_time
from .validation import check_callable, check_nonnegative, check_positive

__all__ = ["gradcheck", "gradgradcheck"]

_Inputs = torch.Tensor | Sequence[torch.Tensor]
_Outputs = torch.Tensor | Sequence[torch.Tensor]


@one_at_a_time
def gradcheck(
    func: Callable[..., _Outputs],
    inputs: _Inputs,
    *,
    eps: float = 1e-06,
    atol: float = 1e-05,
    rtol: float = 0.001,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
    check_batched_grad: bool = False,
    check_batched_forward_grad: bool = False,
    check_forward_ad: bool = False,
    check_backward_ad: bool = True,
    fast_mode: bool = False,
    masked: bool | None = None,
) -> bool:
    """Drop-in for ``torch.autograd.gradcheck``: same arguments, same verdicts, better reports.

    Change one import (``from gradcheck_kit import gradcheck``) and every call keeps
    its meaning: ``eps`` is torch's absolute step, an entry passes when
    ``|analytic - numeric| <= atol + rtol * |numeric|`` (plus its own
    finite-difference error estimate, so float32 roundoff is no false alarm),
    ``fast_mode=True`` runs this package's fast mode and ``fast_mode=False`` its
    full mode. Inputs are checked in their own dtype, as torch does.

    Args:
        func: the function under test, called as ``func(*inputs)``.
        inputs: a tensor or a tuple of arguments; tensors with ``requires_grad``
            are checked.
        eps: finite-difference step, absolute (every entry moves by ``eps``).
        atol: absolute tolerance.
        rtol: relative tolerance.
        raise_exception: raise on failure (default) or return False.
        nondet_tol: how much two evaluations at the same point, and two backward
            passes of the same grad_output, may differ.
        check_undefined_grad: backward must treat undefined (None) grad_outputs as zero.
        check_grad_dtypes: gradients must have their inputs' dtypes and devices.
        check_batched_grad: backward under vmap must equal a loop of backward passes.
        check_batched_forward_grad: forward mode under vmap must equal a loop of jvps.
        check_forward_ad: forward-mode AD must run through ``func`` and agree with
            finite differences (where it runs it is checked anyway).
        check_backward_ad: compare reverse mode with finite differences; with False
            only forward mode is compared.
        fast_mode: random projections instead of whole Jacobians.
        masked: torch's option for sparse inputs; sparse inputs are not supported.

    Returns:
        True when every check passes; False on failure with ``raise_exception=False``.

    Raises:
        TorchGradcheckError: a check failed (both torch's ``GradcheckError``, a
            ``RuntimeError``, and :class:`~gradcheck_kit.GradientMismatchError`).
        InvalidArgument: contradictory options (``check_batched_grad`` without
            ``check_backward_ad``, ...) or no input requiring grad.
        UnsupportedInputError: sparse inputs (``masked``), complex inputs.

    Examples:
        >>> import torch
        >>> from gradcheck_kit import gradcheck
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> gradcheck(torch.sin, (x,))
        True
        >>> gradcheck(lambda t: t.detach() * t, (x,), raise_exception=False)
        False
    """
    __tracebackhide__ = True
    given = {k: v for k, v in locals().items() if k in _GRADCHECK_OPTIONS}
    result = _checked(
        func,
        inputs,
        _TorchOptions(**_check_options(given)),
        check="gradcheck",
        reproduce=_reproduce("gradcheck", gradcheck, func, given),
    )
    return _verdict(result, raise_exception)


@one_at_a_time
def gradgradcheck(
    func: Callable[..., _Outputs],
    inputs: _Inputs,
    grad_outputs: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    *,
    eps: float = 1e-06,
    atol: float = 1e-05,
    rtol: float = 0.001,
    gen_non_contig_grad_outputs: bool = False,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
    check_batched_grad: bool = False,
    check_fwd_over_rev: bool = False,
    check_rev_over_rev: bool = True,
    fast_mode: bool = False,
    masked: bool = False,
) -> bool:
    """Drop-in for ``torch.autograd.gradgradcheck``: second derivatives, torch's arguments.

    As torch does, checks the gradient map ``(inputs, grad_outputs) ->
    autograd.grad(func(inputs), inputs, grad_outputs, create_graph=True)`` with
    :func:`gradcheck`: its derivatives with respect to the inputs (double backward)
    and to the grad_outputs that require grad.

    Args:
        func: the function whose second derivatives are checked.
        inputs: a tensor or a tuple of arguments.
        grad_outputs: the grad_outputs; default random ones that require grad.
        eps: as in :func:`gradcheck`.
        atol: as in :func:`gradcheck`.
        rtol: as in :func:`gradcheck`.
        gen_non_contig_grad_outputs: make the random grad_outputs non-contiguous.
        raise_exception: as in :func:`gradcheck`.
        nondet_tol: as in :func:`gradcheck`.
        check_undefined_grad: as in :func:`gradcheck`, for the gradient map.
        check_grad_dtypes: as in :func:`gradcheck`.
        check_batched_grad: as in :func:`gradcheck`, for the gradient map.
        check_fwd_over_rev: forward mode over the gradient map must run and agree.
        check_rev_over_rev: compare double backward with finite differences.
        fast_mode: as in :func:`gradcheck`.
        masked: as in :func:`gradcheck`.

    Returns:
        True when every check passes; False on failure with ``raise_exception=False``.

    Raises:
        TorchGradcheckError: a check failed, as in :func:`gradcheck`.
        InvalidArgument: contradictory options, as in :func:`gradcheck`.
        UnsupportedInputError: sparse or complex inputs.

    Examples:
        >>> import torch
        >>> from gradcheck_kit import gradgradcheck
        >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
        >>> gradgradcheck(torch.tanh, (x,))
        True
    """
    __tracebackhide__ = True
    given = {k: v for k, v in locals().items() if k in _GRADGRADCHECK_OPTIONS}
    # validated before func makes the random grad_outputs
    options = _TorchOptions(check_batched_forward_grad=False, **_check_options(given))
    check_callable(func, "func", "pass the function to check first")
    tupled = torch_style_inputs(inputs)
    _reject_sparse(tupled, masked)
    with check_scope([inputs, *captured_objects(func)], 0):
        gouts = _grad_outputs(func, tupled, grad_outputs, gen_non_contig_grad_outputs)
    result = _checked(
        _GradientMap(func, tupled, len(gouts)),
        (*tupled, *gouts),
        options,
        check="gradgradcheck",
        reproduce=_reproduce("gradgradcheck", gradgradcheck, func, given),
        name=fn_name(func),
    )
    return _verdict(result, raise_exception)


# the keyword options, for the reproduce line of a failure
_GRADCHECK_OPTIONS = frozenset(
    list(inspect.signature(gradcheck).parameters)[2:]  # after func, inputs
)
_GRADGRADCHECK_OPTIONS = frozenset(list(inspect.signature(gradgradcheck).parameters)[3:])
# What gradgradcheck calls the options gradcheck then applies to the gradient map.
_GRADGRADCHECK_NAMES = {
    "check_fwd_over_rev": "check_forward_ad",
    "check_rev_over_rev": "check_backward_ad",
}
# Options the drop-ins act on themselves, not the check.
_OWN_OPTIONS = frozenset({"raise_exception", "gen_non_contig_grad_outputs"})


def _check_options(given: dict[str, Any]) -> dict[str, Any]:
    """A drop-in's options as :class:`_TorchOptions` names them."""
    return {_GRADGRADCHECK_NAMES.get(k, k): v for k, v in given.items() if k not in _OWN_OPTIONS}


@dataclass(frozen=True)
class _TorchOptions:
    """The options of torch's gradcheck that the drop-ins hand on to :func:`_check`."""

    eps: float
    atol: float
    rtol: float
    nondet_tol: float
    check_undefined_grad: bool
    check_grad_dtypes: bool
    check_batched_grad: bool
    check_batched_forward_grad: bool
    check_forward_ad: bool
    check_backward_ad: bool
    fast_mode: bool
    masked: bool | None

    def __post_init__(self) -> None:
        # misuse is raised here, before any evaluation: torch's options that contradict each
        # other, and numbers CheckOptions would refuse only later
        if not (self.check_forward_ad or self.check_backward_ad):
            raise InvalidArgument(
                "check_forward_ad=False and check_backward_ad=False leave nothing to check; set "
                "at least one of them to True."
            )
        if self.check_batched_grad and not self.check_backward_ad:
            raise InvalidArgument("check_batched_grad=True requires check_backward_ad=True.")
        if self.check_batched_forward_grad and not self.check_forward_ad:
            raise InvalidArgument("check_batched_forward_grad=True requires check_forward_ad=True.")
        check_positive(self.eps, "eps")
        for name in ("atol", "rtol", "nondet_tol"):
            check_nonnegative(getattr(self, name), name)


class _GradientMap:
    """``(*inputs, *grad_outputs) -> grad(func(*inputs), inputs, grad_outputs)``, as in torch."""

    def __init__(self, func: Callable[..., Any], inputs: Sequence[Any], n_outputs: int) -> None:
        self.func = func
        self.n_outputs = n_outputs
        # the inputs torch differentiates: those that require grad in the call
        self.positions = [
            k for k, x in enumerate(inputs) if isinstance(x, torch.Tensor) and x.requires_grad
        ]
        self.__name__ = f"grad({fn_name(func)})"
        self.__qualname__ = self.__name__

    def __call__(self, *args: Any) -> tuple[torch.Tensor, ...]:
        inputs, gouts = list(args[: -self.n_outputs]), args[-self.n_outputs :]
        with torch.enable_grad():
            for k in self.positions:
                # finite differences evaluate at plain tensors: make them differentiable here
                if not inputs[k].requires_grad:
                    inputs[k] = _differentiable(inputs[k])
            outs = differentiable_outputs(self.func(*inputs))
            diff = [inputs[k] for k in self.positions]
            grads = torch.autograd.grad(outs, diff, gouts, create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)


def _differentiable(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a tensor that requires grad, keeping a forward-mode tangent it carries."""
    primal, tangent = forward_ad.unpack_dual(x)
    if tangent is None:
        return x.detach().requires_grad_(True)
    dual: torch.Tensor = forward_ad.make_dual(primal.detach().requires_grad_(True), tangent)
    return dual


def _grad_outputs(
    func: Callable[..., Any],
    inputs: tuple[Any, ...],
    given: Any,
    non_contiguous: bool,
) -> tuple[torch.Tensor | None, ...]:
    if given is not None:
        return torch_style_inputs(given)
    with torch.enable_grad():
        outs = differentiable_outputs(func(*inputs))
    gen = torch.Generator().manual_seed(0)
    made = []
    for o in outs:
        dtype = o.dtype if o.is_floating_point() or o.is_complex() else torch.float64
        v = torch.rand(o.shape, generator=gen, dtype=torch.float64).mul_(2).sub_(1)
        v = v.to(dtype=dtype, device=o.device)
        if non_contiguous and v.numel() > 1:
            # every other entry of a twice-as-long last dimension, as torch's make_tensor
            v = v.repeat_interleave(2, dim=-1)[..., ::2] if v.dim() else v
        made.append(v.requires_grad_(True))
    return tuple(made)


def _checked(*args: Any, **kw: Any) -> GradcheckResult | _NonFinite:
    try:
        return _check(*args, **kw)
    except _NonFinite as exc:
        return exc


def _reject_sparse(inputs: Sequence[Any], masked: bool | None) -> None:
    for i, x in enumerate(inputs):
        if isinstance(x, torch.Tensor) and x.layout != torch.strided:
            raise UnsupportedInputError(
                f"input {i} is a {x.layout} tensor (masked={masked!r}): gradcheck_kit does not "
                f"check sparse or other non-strided inputs yet, with or without masked. Check "
                f"x.to_dense() instead, or keep torch.autograd.gradcheck for this call."
            )


def _check(
    func: Callable[..., Any],
    inputs: Any,
    t: _TorchOptions,
    *,
    check: str,
    reproduce: str,
    name: str | None = None,
) -> GradcheckResult:
    """The engine's comparison, then torch's other checks; the result, published once."""
    check_callable(func, "func", "pass the function to check first")
    tupled = torch_style_inputs(inputs)
    _reject_sparse(tupled, t.masked)
    # torch's eps is an absolute step, and inputs are checked in their own dtype
    opts = CheckOptions.create(
        mode="fast" if t.fast_mode else "full",
        dtype="native",
        eps=t.eps,
        atol=t.atol,
        rtol=t.rtol,
        eps_absolute=True,
        nondet_tol=t.nondet_tol,
    )
    preserve = [inputs, *captured_objects(func)]
    problem: str | None = None
    if t.check_forward_ad:
        with check_scope(preserve, 0):
            problem = forward_ad_problem(func, tupled)
    target = func if t.check_backward_ad else forward_as_reverse(func, tupled)
    try:
        with recording.muted():
            result = GradientCheck(
                target,
                InputTree(tupled),
                opts,
                name=name or fn_name(func),
                check=check,
                preserve=preserve,
            ).run()
    except NonFiniteOutputError as exc:
        # torch compares NaN with NaN and fails the check: a failure here too, not misuse
        raise _NonFinite(str(exc)) from exc
    if problem is None and result.passed:
        with check_scope(preserve, 0):
            problem = _torch_checks(func, tupled, t)
    if problem is not None:
        result = dataclasses.replace(
            result,
            passed=False,
            status="mismatch",
            hints=(Hint(kind="torch_option", text=problem), *result.hints),
        )
    if not result.passed:
        result = dataclasses.replace(result, reproduce=reproduce)
    recording.publish(result)
    return result


def _torch_checks(
    func: Callable[..., Any], inputs: tuple[Any, ...], t: _TorchOptions
) -> str | None:
    """Torch's checks beside the Jacobians, in torch's order; the first problem, or None."""
    checks: list[Callable[[], str | None]] = []
    if t.check_backward_ad:
        checks.append(lambda: reentrant_problem(func, inputs, t.nondet_tol))
        if t.check_grad_dtypes:
            checks.append(lambda: grad_dtype_problem(func, inputs))
    if t.check_batched_forward_grad:
        checks.append(lambda: batched_forward_grad_problem(func, inputs))
    if t.check_backward_ad:
        if t.check_batched_grad:
            checks.append(lambda: batched_grad_problem(func, inputs))
        checks.append(lambda: zero_grad_output_problem(func, inputs))
        if t.check_undefined_grad:
            checks.append(lambda: undefined_grad_problem(func, inputs))
    for run in checks:
        found = run()
        if found is not None:
            return found
    return None


def _reproduce(entry: str, api: Callable[..., Any], func: Any, given: dict[str, Any]) -> str:
    """``gradcheck_kit.gradcheck(f, inputs, <the options not at their defaults>)``."""
    params = inspect.signature(api).parameters
    changed = [f"{k}={v!r}" for k, v in given.items() if params[k].default != v]
    return f"gradcheck_kit.{entry}({', '.join([fn_name(func), 'inputs', *changed])})"


class _NonFinite(Exception):
    """A NaN or Inf output at the point: torch's gradcheck fails there, so does the drop-in."""


def _verdict(result: GradcheckResult | _NonFinite, raise_exception: bool) -> bool:
    __tracebackhide__ = True
    if isinstance(result, _NonFinite):
        if not raise_exception:
            return False
        raise TorchGradcheckError(f"[gradcheck] {result}") from result.__cause__
    if result.passed:
        return True
    if not raise_exception:
        return False
    raise TorchGradcheckError(result.summary(), result)
