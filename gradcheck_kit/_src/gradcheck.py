"""check_gradients / check_module_gradients: autograd against finite differences.

Thin front doors to the engine (:mod:`.engine`): they validate the call, lay
out the inputs (a module's parameters through ``torch.func.functional_call``)
and run one :class:`~.engine.gradient.GradientCheck`. Never raise on a wrong
gradient; raise :class:`InvalidArgument` on misuse.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import nn

from .engine.gradient import GradientCheck
from .engine.options import CheckOptions, GradientOptions
from .engine.run import captured_objects, fn_name
from .engine.trees import InputTree
from .errors import InvalidArgument
from .failure_inputs import Subject
from .results import GradcheckResult
from .serial import one_at_a_time
from .state.snapshot import preserved
from .validation import check_callable, check_choice, check_keywords

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Wrt", "check_gradients", "check_module_gradients"]

Wrt = Literal["parameters", "inputs", "both"]
_WRT = get_args(Wrt)


@one_at_a_time
def check_gradients(
    fn: Callable[..., Any], inputs: Any, **options: Unpack[GradientOptions]
) -> GradcheckResult:
    """Compare ``fn``'s autograd gradients with finite differences.

    ``fn`` is called as ``fn(x)`` for a tensor, ``fn(*inputs)`` for a tuple or
    list and ``fn(**inputs)`` for a dict; it returns a tensor or a pytree of
    tensors. Floating tensors with ``requires_grad=True`` are checked, other
    leaves pass through. The check runs on copies and restores every tensor,
    ``.grad``, flag, mode and RNG state it could touch.

    Args:
        fn: the function under test.
        inputs: a tensor, a tuple/list of arguments or a dict of keyword arguments.
        mode: ``"full"`` compares whole Jacobians; ``"fast"`` compares random
            projections ``u^T J v`` by reverse mode, forward mode and finite
            differences at about the cost of ``torch.autograd.gradcheck(fast_mode=True)``;
            ``"auto"`` runs fast mode, then full mode too where its cost, predicted
            from fast mode's timed batches, is at most 2 ms or as much again as fast
            mode (``result.notes`` say which and why).
        dtype: ``"float64"`` checks float64 copies (most precise); ``"native"``
            checks in the tensors' own dtype with steps and tolerances from a
            floating-point error model.
        eps: base finite-difference step (scaled by ``max(1, |x|)``); default by dtype.
        atol: absolute tolerance per Jacobian entry; default by dtype.
        rtol: relative tolerance per Jacobian entry; default by dtype.
        seed: seeds the RNGs for the check and the random probes of fast mode.
        rng: ``"fixed"`` seeds once (a stochastic ``fn`` is reported as
            nondeterministic); ``"replay"`` gives every evaluation the same RNG state.
        n_probes: number of random projections in fast mode (default 1: its weights
            from [1, 2) let no wrong entry hide; each more probe costs two evaluations
            of ``fn`` and one row of the batched backward).
        max_memory: bytes the check may use beyond one plain forward and backward
            pass of ``fn`` (default 1 GiB): batches of evaluations are sized from the
            measured peak of one, and full mode judges a Jacobian of any size in blocks.
        name: label for messages and reports (default: ``fn``'s qualified name).
        max_jacobian_bytes: the old name of ``max_memory`` (deprecated).
        empty: ``"pass"`` (default) lets a check whose Jacobian has no entries (every
            checked input, or every output, is empty) pass with the note "nothing to
            check", as ``torch.autograd.gradcheck`` does; ``"error"`` raises
            :class:`InvalidArgument` instead.

    Returns:
        A :class:`GradcheckResult`; ``result.passed`` is the verdict.

    Raises:
        InvalidArgument: bad arguments, nothing requiring grad, empty inputs,
            non-tensor or non-floating outputs, NaN/Inf outputs.
        MemoryBudgetError: not even one evaluation fits within ``max_memory``.
        PerturbedEvaluationError: ``fn`` raised at a point the finite differences
            need (the step left its domain); the message names the input and step.
        UnsupportedInputError: sparse or complex tensors.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x = torch.randn(4, dtype=torch.float64, requires_grad=True)
        >>> gk.check_gradients(lambda t: (t ** 3).sum(), x).passed
        True
        >>> gk.check_gradients(torch.tanh, x.float(), dtype="native").dtype
        'float32'
    """
    check_keywords(options, GradientOptions, "check_gradients")
    opts = CheckOptions.create(**options)
    check_callable(fn, "fn", "pass the function to check first")
    tree = InputTree(inputs)
    preserve = [inputs, *captured_objects(fn)]
    return GradientCheck(
        fn,
        tree,
        opts,
        name=opts.name or fn_name(fn),
        check="check_gradients",
        preserve=preserve,
        subject=Subject(fn, inputs, "assert_gradients_close"),
    ).run()


def _module_call(
    work: nn.Module, names: list[str], loss_fn: Callable[[Any], Any] | None
) -> Callable[..., Any]:
    def call(params: dict[str, torch.Tensor], args: tuple[Any, ...]) -> Any:
        out = torch.func.functional_call(work, params, args)
        return loss_fn(out) if loss_fn is not None else out

    return call


@one_at_a_time
def check_module_gradients(
    module: nn.Module,
    inputs: Any,
    *,
    loss_fn: Callable[[Any], Any] | None = None,
    wrt: Wrt = "parameters",
    **options: Unpack[GradientOptions],
) -> GradcheckResult:
    """Check a module's gradients with respect to its parameters, its inputs, or both.

    Runs on a deep copy through :func:`torch.func.functional_call`, so the
    module, its parameters, buffers, ``.grad`` and mode are never touched.
    Parameters with ``requires_grad=False`` (frozen) are not checked.

    Args:
        module: the ``nn.Module`` under test.
        inputs: its forward arguments: a tensor, a tuple/list or a dict.
        loss_fn: optional ``loss_fn(output) -> tensor`` applied to the output
            (close over targets); without it the output itself is checked.
        wrt: ``"parameters"`` (default), ``"inputs"`` or ``"both"``.
        **options: the options of :func:`check_gradients` (``mode``, ``dtype``, ``eps``,
            ``atol``, ``rtol``, ``seed``, ``rng``, ``n_probes``, ``max_memory``, ``name``,
            ``empty``): ``dtype="float64"`` checks a float64 copy of the module,
            ``rng="replay"`` checks dropout in train mode, and ``name`` defaults to the
            module's class name.

    Returns:
        A :class:`GradcheckResult` whose parameter leaves are named ``params/<qualified name>``.

    Raises:
        InvalidArgument: as in :func:`check_gradients`, or a module without
            trainable parameters when they are to be checked.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
        >>> result = gk.check_module_gradients(net, torch.randn(4, 3), mode="full")
        >>> result.passed, result.pairs[0].input
        (True, 'params/0.weight')
    """
    if not isinstance(module, nn.Module):
        raise InvalidArgument(
            f"module must be a torch.nn.Module, got {type(module).__name__}; for a plain "
            f"function use check_gradients(fn, inputs)."
        )
    check_choice(wrt, _WRT, "wrt")
    if loss_fn is not None:
        check_callable(loss_fn, "loss_fn")
    check_keywords(options, GradientOptions, "check_module_gradients")
    opts = CheckOptions.create(**options)
    named = dict(module.named_parameters())
    named_buffers = dict(module.named_buffers())
    trainable = [n for n, p in named.items() if p.requires_grad]
    if wrt in ("parameters", "both") and not trainable:
        raise InvalidArgument(
            f"{type(module).__name__} has no trainable parameters (requires_grad=True) to check; "
            f"pass wrt='inputs' to check gradients with respect to its inputs."
        )
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    if isinstance(inputs, dict):
        raise InvalidArgument(
            "check_module_gradients passes inputs positionally; give a tensor or a tuple of "
            "forward arguments (wrap keyword arguments in a small nn.Module or use "
            "check_gradients)."
        )
    with preserved(module, inputs):
        work = copy.deepcopy(module)
    want_params = wrt in ("parameters", "both")
    want_inputs = wrt in ("inputs", "both")
    param_ids = {id(p) for n, p in named.items() if p.requires_grad}
    checked_params = {id(p) for n, p in named.items() if p.requires_grad}

    def select(t: torch.Tensor) -> bool:
        if id(t) in param_ids:
            return want_params and id(t) in checked_params
        return want_inputs and t.requires_grad

    state: dict[str, Any] = {**named, **named_buffers}
    tree = InputTree({"params": state, "args": tuple(args)}, root="", select=select)
    call = _module_call(work, list(state), loss_fn)

    def fn(params: dict[str, torch.Tensor], args: tuple[Any, ...]) -> Any:
        return call(params, args)

    # readable paths: params/<name> and inputs[i]
    for idx, leaf in enumerate(tree.leaves):
        path = leaf.path
        if path.startswith("['params']"):
            path = "params/" + path[len("['params']") :].strip("[]'\"")
        elif path.startswith("['args']"):
            path = "inputs" + path[len("['args']") :]
        tree.leaves[idx] = type(leaf)(path, leaf.original, leaf.checked)
    return GradientCheck(
        fn,
        tree,
        opts,
        name=opts.name or type(module).__name__,
        check="check_module_gradients",
        preserve=[module, inputs],
        subject=Subject(
            module,
            inputs,
            "assert_module_gradients",
            binds="module",
            objects={} if loss_fn is None else {"loss_fn": loss_fn},
            literals={} if wrt == "parameters" else {"wrt": wrt},
            state=module.state_dict(),
        ),
    ).run()
