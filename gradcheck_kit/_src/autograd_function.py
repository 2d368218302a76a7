"""check_autograd_function / assert_autograd_function: audit a custom torch.autograd.Function.

A hand-written ``backward`` can be wrong in ways a gradient check alone does
not name: it returns a gradient for a float argument, one value too few, a
float32 gradient for a float64 input (autograd casts it silently), a gradient
of a broadcast shape (autograd sums it silently), or it mutates a saved tensor
so that a second call differs. The audit runs the Function once through a
recording subclass to see exactly what ``backward`` returned, then checks
backward against finite differences, ``jvp`` against backward, outputs marked
non-differentiable against finite differences, and double backward (with the
core checker and :func:`check_second_order`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from . import coverage, recording
from .engine.evaluation import first_line
from .engine.gradient import argument_name
from .engine.options import AuditOptions, CheckOptions
from .engine.tolerances import machine_eps
from .engine.trees import InputTree, describe_tensor
from .errors import AutogradFunctionError, InvalidArgument
from .function_forward import FunctionClass, audit_forward_mode, function_outputs
from .gradcheck import check_gradients
from .raising import Msg, fail_unless_passed
from .results import AuditFinding, FunctionAuditResult, GradcheckResult, Hint
from .second_order import check_second_order
from .serial import one_at_a_time
from .state.rng import seed_everything
from .state.snapshot import preserved
from .undo import undoing_writes
from .validation import check_bool, check_keywords

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["check_autograd_function", "assert_autograd_function"]

_BASE = torch.autograd.Function


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return describe_tensor(value)
    return f"{type(value).__name__} {value!r:.40}"


def _returned_problems(path: str, arg: Any, g: Any) -> tuple[list[tuple[str, str]], str | None]:
    """What is wrong with ``g``, backward's value for the input ``arg``: (check, text) pairs.

    The second item is a note for a value autograd tolerates (None for an input that
    requires grad, a gradient for one that cannot have one).
    """
    if not isinstance(arg, torch.Tensor):
        if g is None:
            return [], None
        text = (
            f"backward returned {_describe(g)} for {path}, which is a {type(arg).__name__} "
            f"({arg!r:.40}), not a tensor; return None in its place (autograd raises otherwise)"
        )
        return [("non_tensor_gradient", text)], None
    if g is None:
        return (
            [],
            f"backward returned None for {path}: autograd uses 0" if arg.requires_grad else None,
        )
    if not isinstance(g, torch.Tensor):
        text = (
            f"backward returned {_describe(g)} for {path}; a gradient is a tensor shaped like its "
            f"input ({describe_tensor(arg)}) or None"
        )
        return [("gradient_type", text)], None
    if not arg.is_floating_point():
        return [], (
            f"backward returned a gradient for {path} ({describe_tensor(arg)}), which cannot have "
            f"one; autograd ignores it: return None"
        )
    problems = []
    if tuple(g.shape) != tuple(arg.shape):
        try:
            summed = torch.broadcast_shapes(tuple(arg.shape), tuple(g.shape)) == g.shape
        except RuntimeError:
            summed = False
        fate = (
            "autograd sums it down to the input's shape without a word, which hides a missing "
            "reduction or a wrong broadcast"
            if summed
            else "autograd rejects it"
        )
        problems.append(
            (
                "gradient_shape",
                f"backward returned a gradient of shape {tuple(g.shape)} for {path}, which has "
                f"shape {tuple(arg.shape)}; {fate}. Return exactly the input's shape.",
            )
        )
    if g.dtype != arg.dtype:
        problems.append(
            (
                "gradient_dtype",
                f"backward returned {str(g.dtype).removeprefix('torch.')} for {path}, which is "
                f"{str(arg.dtype).removeprefix('torch.')}; autograd casts it silently and the "
                f"precision is lost. Create tensors in backward with dtype=x.dtype "
                f"(torch.*_like(...)) instead of the default dtype.",
            )
        )
    if g.device != arg.device:
        problems.append(
            (
                "gradient_device",
                f"backward returned a gradient on {g.device} for {path}, which is on {arg.device}",
            )
        )
    return problems, None


def is_once_differentiable(function: FunctionClass) -> bool:
    """Whether ``function``'s backward is wrapped by torch's ``once_differentiable``.

    ``functools.wraps`` gives the wrapper the user's name; its code object
    still belongs to torch's ``wrapper``.
    """
    backward = function.backward if function.backward is not _BASE.backward else function.vjp
    code = getattr(backward, "__code__", None)
    return (
        hasattr(backward, "__wrapped__")
        and code is not None
        and code.co_name == "wrapper"
        and code.co_filename.replace("\\", "/").endswith("torch/autograd/function.py")
    )


def _intermediates(
    saved: Sequence[torch.Tensor], args: Sequence[Any], outs: Sequence[Any]
) -> list[tuple[int, ...]]:
    """Shapes of saved tensors that share memory with no input and no output of forward."""
    known = [t for t in (*args, *outs) if isinstance(t, torch.Tensor)]
    found = []
    for t in saved:
        if not any(t.untyped_storage().data_ptr() == k.untyped_storage().data_ptr() for k in known):
            found.append(tuple(t.shape))
    return found


def _recording_subclass(function: FunctionClass, records: list[Any]) -> FunctionClass:
    """``function`` with its backward (or vjp) recording what it returns to autograd."""
    attr = "backward" if function.backward is not _BASE.backward else "vjp"
    original = getattr(function, attr)

    def recorded(ctx: Any, *grads: Any) -> Any:
        try:
            saved = [t for t in ctx.saved_tensors if isinstance(t, torch.Tensor)]
        except Exception:  # saved tensors freed, or hooks that refuse a second unpack
            saved = []
        out = original(ctx, *grads)
        records.append((out, saved))
        return out

    namespace = {
        attr: staticmethod(recorded),
        "__module__": function.__module__,
        "__qualname__": function.__qualname__,
    }
    subclass: FunctionClass = type(function.__name__, (function,), namespace)
    return subclass


class _Audit:
    """One audit over prepared arguments; collects findings in the order examined."""

    def __init__(
        self,
        function: FunctionClass,
        inputs: Any,
        opts: CheckOptions,
        nested: AuditOptions,
        *,
        second_order: bool | None,
    ) -> None:
        self.function = function
        self.inputs = inputs
        self.single = isinstance(inputs, torch.Tensor)
        self.args: tuple[Any, ...] = (inputs,) if self.single else tuple(inputs)
        self.paths = ["input"] if self.single else [f"inputs[{i}]" for i in range(len(self.args))]
        self.opts = opts
        self.name = opts.name or function.__name__
        # the options of the checks of backward and double backward
        self.nested = nested
        self.second_order = second_order
        self.findings: list[AuditFinding] = []
        self.hints: list[Hint] = []
        self.notes: list[str] = []
        self.gradient: GradcheckResult | None = None
        self.second: GradcheckResult | None = None
        self.intermediates: list[tuple[int, ...]] = []
        self.forward_writes: list[str | None] = []

    def add(self, check: str, status: str, text: str, **where: str | None) -> None:
        self.findings.append(AuditFinding(check, status, text, **where))

    def run(self) -> FunctionAuditResult:
        start = time.perf_counter()
        with (
            torch.inference_mode(False),
            preserved(self.inputs),
            undoing_writes(),
            coverage.exercised(),
        ):
            coverage.note_function(self.function)
            seed_everything(self.opts.seed)
            runs_cleanly = self._structure()
            if runs_cleanly and self.forward_writes:
                # Finite differences need a function of its inputs; one that rewrites them
                # answers differently on each call, which would read as randomness.
                self.add(
                    "backward",
                    "skipped",
                    f"not compared with finite differences: forward modifies "
                    f"{', '.join(str(p) for p in self.forward_writes)} in place (see "
                    f"inputs_unchanged), so no two calls see the same input; fix that first",
                )
            elif runs_cleanly:
                self._backward_check()
                self._forward_mode()
                self._double_backward()
        failed = any(f.status == "failed" for f in self.findings)
        result = FunctionAuditResult(
            name=self.name,
            passed=not failed,
            dtype=self.dtype_name,
            dtype_policy=self.opts.dtype,
            seed=self.opts.seed,
            findings=tuple(self.findings),
            gradient=self.gradient,
            second_order=self.second,
            hints=tuple(self.hints),
            notes=tuple(self.notes),
            duration_s=time.perf_counter() - start,
        )
        recording.publish(result)
        return result

    # -- what backward returns -----------------------------------------------------------
    def _copies(self) -> list[Any]:
        work = torch.float64 if self.opts.dtype == "float64" else None
        out: list[Any] = []
        for a in self.args:
            if isinstance(a, torch.Tensor):
                floating = a.is_floating_point()
                c = a.detach().to(dtype=work if (work and floating) else a.dtype, copy=True)
                out.append(c.requires_grad_(bool(a.requires_grad and floating)))
            else:
                out.append(a)
        return out

    def _structure(self) -> bool:
        """Run forward and backward once through the recording subclass; judge the return.

        Returns whether backward runs cleanly (the checks that call it again need that).
        """
        records: list[Any] = []
        probe = _recording_subclass(self.function, records)
        args = self._copies()
        xs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        dtypes = [x.dtype for x in xs] or [torch.get_default_dtype()]
        self.dtype_name = str(max(dtypes, key=machine_eps)).removeprefix("torch.")
        before = [a.detach().clone() if isinstance(a, torch.Tensor) else None for a in args]
        # A write that leaves the values as they were (clamp_ of positive values) still
        # bumps the version counter, and autograd's saved-tensor checks then fail.
        versions = [a._version if isinstance(a, torch.Tensor) else None for a in args]
        with torch.enable_grad():
            try:
                raw = probe.apply(*args)
            except Exception as exc:
                if hasattr(exc, "add_note"):
                    exc.add_note(
                        f"gradcheck_kit: raised by {self.name}.forward on copies of the inputs "
                        f"(dtype={self.opts.dtype!r})"
                    )
                raise
        outs = function_outputs(raw)
        self._changed_inputs(args, before, outs, "forward", versions)
        self.forward_writes = [f.input for f in self.failed() if f.check == "inputs_unchanged"]
        self.marked = [
            k
            for k, o in enumerate(outs)
            if isinstance(o, torch.Tensor) and o.is_floating_point() and not o.requires_grad
        ]
        self.out_paths = (
            ["output"]
            if not isinstance(raw, (tuple, list))
            else [f"output[{k}]" for k in range(len(outs))]
        )
        diff = [o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad]
        if not diff:
            self.add(
                "backward",
                "skipped",
                "no output requires grad (no input requires grad, or every output is marked "
                "non-differentiable): backward never runs",
            )
            self._non_differentiable(outs)
            return False
        gen = torch.Generator().manual_seed(self.opts.seed)
        cots = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in diff]
        error: BaseException | None = None
        grads: list[tuple[torch.Tensor, ...]] = []
        for _ in range(2):
            try:
                grads.append(
                    torch.autograd.grad(
                        diff, xs, grad_outputs=cots, retain_graph=True, allow_unused=True
                    )
                )
            except Exception as exc:
                error = exc
                break
        returned, saved = records[0] if records else (None, [])
        self.intermediates = _intermediates(saved, args, outs)
        malformed = self._judge_return(returned, args, error)
        self._changed_inputs(args, before, outs, "backward")
        if error is not None and not malformed:
            self.add("backward", "failed", f"backward raised {first_line(error, 200)}")
        if error is not None:
            return False
        self._repeatable(grads)
        self._non_differentiable(outs)
        return True

    def _judge_return(
        self, returned: Any, args: Sequence[Any], error: BaseException | None
    ) -> bool:
        """Findings about the values backward returned; True when one explains ``error``."""
        if returned is None and error is not None:
            return False
        values = list(returned) if isinstance(returned, tuple) else [returned]
        failed_before = len(self.failed())
        n = len(args)
        extra = values[n:]
        if len(values) < n or any(v is not None for v in extra):
            given = ", ".join(
                f"{p} ({_describe(a)})" for p, a in zip(self.paths, args, strict=True)
            )
            self.add(
                "gradient_count",
                "failed",
                f"backward returned {len(values)} value(s) for {n} forward input(s): {given}; "
                f"return exactly one per input of forward, None for those without a gradient",
            )
        for path, arg, g in zip(self.paths, args, values, strict=False):
            problems, note = _returned_problems(path, arg, g)
            for check, text in problems:
                self.add(check, "failed", text, input=path)
            if note is not None:
                self.notes.append(note)
        if len(self.failed()) == failed_before:
            if error is None:
                self.add(
                    "gradient_structure",
                    "passed",
                    "backward returns one gradient per forward input, None for non-tensors, "
                    "with the inputs' shapes and dtypes",
                )
            return False
        return error is not None

    def failed(self) -> list[AuditFinding]:
        return [f for f in self.findings if f.status == "failed"]

    def _changed_inputs(
        self,
        args: Sequence[Any],
        before: Sequence[Any],
        outs: Sequence[Any],
        stage: str,
        versions: Sequence[int | None] | None = None,
    ) -> None:
        versions = versions if versions is not None else [None] * len(args)
        for path, arg, old, version in zip(self.paths, args, before, versions, strict=True):
            if not isinstance(arg, torch.Tensor) or old is None:
                continue
            if any(o is arg for o in outs):
                continue  # returned after ctx.mark_dirty: an in-place op by contract
            same = torch.equal(arg.detach(), old) or bool(
                (torch.isnan(arg.detach()) & torch.isnan(old)).sum() + (arg.detach() == old).sum()
                == old.numel()
            )
            written = version is not None and arg._version != version
            if (same and not written) or any(
                f.check == "inputs_unchanged" and f.input == path for f in self.findings
            ):
                continue
            name = argument_name(self.function.apply, path) or "x"
            if stage == "forward":
                text = (
                    f"forward modifies its input {path} ({name}) in place without "
                    f"ctx.mark_dirty({name}): autograd does not know {name} changed, so a "
                    f"gradient that needs its old value is wrong or raises, and every call "
                    f"starts from another {name}. Work on a copy ({name} = {name}.clone() "
                    f"first), or call ctx.mark_dirty({name}) and return {name} from forward"
                )
            else:
                text = (
                    f"backward modified input {path} ({name}) in place: the caller's tensor "
                    f"changes and a second backward sees another value; compute on a copy "
                    f"({name}.clone()) or with out-of-place operations"
                )
            self.add("inputs_unchanged", "failed", text, input=path)

    def _repeatable(self, grads: list[tuple[torch.Tensor, ...]]) -> None:
        first, second = grads
        worst = 0.0
        for a, b in zip(first, second, strict=True):
            if a is None or b is None:
                continue
            d = (a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs()
            d = torch.where(torch.isnan(a) & torch.isnan(b), 0.0, d.nan_to_num(float("inf")))
            worst = max(worst, float(d.max()) if d.numel() else 0.0)
        if worst > 0.0:
            self.add(
                "repeatable",
                "failed",
                f"backward gave different gradients when called twice on the same graph "
                f"(largest difference {worst:.3g}): does it modify a saved tensor or a ctx "
                f"attribute in place?",
            )
        else:
            self.add("repeatable", "passed", "backward gives the same gradients when called twice")

    # -- against finite differences -------------------------------------------------------
    def _non_differentiable(self, outs: Sequence[Any]) -> None:
        single = len(self.out_paths) == 1 and self.out_paths[0] == "output"
        for k in self.marked:
            path = self.out_paths[k]

            def select(*args: Any, _k: int = k) -> Any:
                out = self.function.apply(*args)
                return out if single else out[_k]

            try:
                with recording.muted():
                    result = check_gradients(select, self.inputs, **self.nested)
            except Exception as exc:
                self.add("non_differentiable", "failed", first_line(exc, 200), output=path)
                continue
            if result.passed:
                self.add(
                    "non_differentiable",
                    "passed",
                    f"{path} is marked non-differentiable and finite differences agree it "
                    f"does not depend on the inputs",
                    output=path,
                )
                continue
            pair = next(p for p in result.pairs if not p.passed)
            w = pair.worst[0] if pair.worst else None
            at = (
                f" (finite differences give {w.numeric:.4g} at output index "
                f"{w.output_index}, input index {w.input_index})"
                if w is not None
                else ""
            )
            self.add(
                "non_differentiable",
                "failed",
                f"{path} is marked non-differentiable (ctx.mark_non_differentiable) but depends "
                f"on {pair.input}{at}: every gradient through it is silently dropped. Mark only "
                f"outputs that are constant in the inputs (indices, masks, counts).",
                output=path,
                input=pair.input,
            )

    def _nested(
        self, finding: str, what: str, check: Callable[..., GradcheckResult]
    ) -> GradcheckResult | None:
        """``check`` of the Function, unpublished; None (and a failed finding) if it raises."""
        try:
            with recording.muted():
                return check(self.function.apply, self.inputs, **self.nested)
        except Exception as exc:
            self.add(finding, "failed", f"checking {what} raised {first_line(exc, 200)}")
            return None

    def _backward_check(self) -> None:
        g = self.gradient = self._nested("backward", "backward", check_gradients)
        if g is None:
            return
        if backward_agrees(g):
            n = sum(p.total for p in g.pairs)
            self.add(
                "backward",
                "passed",
                f"backward agrees with finite differences ({g.mode} mode, {n} Jacobian entries)",
            )
            return
        failing = [p for p in g.pairs if not p.passed]
        where = ""
        if failing and failing[0].worst:
            w = failing[0].worst[0]
            where = (
                f" at output '{failing[0].output}' index {w.output_index}, input "
                f"'{failing[0].input}' index {w.input_index}: backward gives {w.analytic:.6g}, "
                f"finite differences {w.numeric:.6g}"
            )
        text = f"backward disagrees with finite differences{where}"
        if g.hint:
            text += f" — {g.hint}"
        self.add("backward", "failed", text)

    # -- forward mode ---------------------------------------------------------------------
    def _forward_mode(self) -> None:
        finding, hints = audit_forward_mode(
            self.function,
            self._copies(),
            self.opts,
            paths=self.paths,
            out_paths=self.out_paths,
            marked=self.marked,
            backward_right=self.gradient is not None and backward_agrees(self.gradient),
        )
        self.findings.append(finding)
        self.hints += hints

    # -- second order ---------------------------------------------------------------------
    def _double_backward(self) -> None:
        if self.second_order is False:
            self.add("double_backward", "skipped", "not checked (second_order=False)")
            return
        once = is_once_differentiable(self.function)
        if once and self.second_order is None:
            # Declared first-order only: nothing to check, nothing to report against it.
            self.add(
                "double_backward",
                "skipped",
                "backward is marked @once_differentiable: second derivatives are not "
                "available by design; pass second_order=True to require them",
            )
            return
        so = self.second = self._nested("double_backward", "double backward", check_second_order)
        if so is None:
            return
        if so.passed:
            entries = sum(p.total for p in so.pairs)
            agree = "double backward agrees with finite differences of the gradient"
            self.add("double_backward", "passed", f"{agree} ({entries} entries)")
            return
        if once:
            text = (
                "backward is marked @once_differentiable, so second derivatives (gradient "
                "penalties, Hessian-vector products, torch.autograd.gradgradcheck) are not "
                "available"
            )
            if self.second_order is None:
                self.add(
                    "double_backward",
                    "skipped",
                    text + " by design; pass second_order=True to require them",
                )
                self.second = None
            else:
                self.add(
                    "double_backward",
                    "failed",
                    text + ": remove the decorator and write backward with differentiable ops",
                )
            return
        if self.second_order is None and not self._backward_has_graph():
            # torch keeps second derivatives to gradgradcheck: a Function right to first
            # order whose backward is not differentiable is not wrong, only first-order.
            self.add("double_backward", "skipped", self._not_twice_differentiable())
            return
        text = "double backward disagrees with finite differences of the gradient"
        if self.intermediates:
            shapes = ", ".join(str(s) for s in self.intermediates)
            text += (
                f" — forward saved tensor(s) of shape {shapes} with ctx.save_for_backward that "
                f"are neither inputs nor outputs: double backward treats them as constants. "
                f"Recompute them in backward from the saved inputs, or return them as outputs"
            )
        elif so.hint:
            text += f" — {so.hint}"
        self.add("double_backward", "failed", text)

    def _not_twice_differentiable(self) -> str:
        shapes = ", ".join(str(s) for s in self.intermediates)
        constants = (
            f" (it computes them from tensor(s) of shape {shapes} saved in forward that are "
            f"neither inputs nor outputs, which double backward treats as constants)"
            if self.intermediates
            else ""
        )
        why = (
            f"the gradients backward returns carry no autograd graph back to the inputs{constants}"
        )
        return (
            f"not twice differentiable: {why}, so second derivatives through it (gradient "
            f"penalties, Hessian-vector products) are not available; first-order training "
            f"is unaffected. Decorate backward with @once_differentiable to say so, or pass "
            f"second_order=True (or use check_second_order) to require and check them"
        )

    def _backward_has_graph(self) -> bool:
        """Whether backward, run with ``create_graph=True``, builds a graph back to the inputs.

        Where it does, autograd gives second derivatives without complaint, so they
        must be right; where it does not, they are simply not available.
        """
        args = self._copies()
        xs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        try:
            with torch.enable_grad():
                raw = self.function.apply(*args)
                outs = [
                    o
                    for o in function_outputs(raw)
                    if isinstance(o, torch.Tensor) and o.requires_grad
                ]
                grads = torch.autograd.grad(
                    outs,
                    xs,
                    grad_outputs=[torch.ones_like(o) for o in outs],
                    create_graph=True,
                    allow_unused=True,
                )
        except Exception:  # double backward raised: the second-order check says why
            return True
        targets = {id(x) for x in xs}
        seen: set[Any] = set()
        stack = [g.grad_fn for g in grads if g is not None and g.grad_fn is not None]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if id(getattr(node, "variable", None)) in targets:
                return True
            stack.extend(child for child, _ in node.next_functions if child is not None)
        return False


@one_at_a_time
def check_autograd_function(
    function: FunctionClass,
    inputs: Any,
    *,
    second_order: bool | None = None,
    **options: Unpack[AuditOptions],
) -> FunctionAuditResult:
    """Audit a custom ``torch.autograd.Function`` for wrong derivatives and misuse.

    Examined, in order: what ``backward`` returns (one value per forward input,
    None for non-tensor inputs, the inputs' shapes, dtypes and devices), inputs
    modified in place without ``ctx.mark_dirty``, that ``backward`` gives the
    same result twice, that outputs marked with ``ctx.mark_non_differentiable``
    really are constant, ``backward`` against finite differences, ``jvp``
    against ``backward`` (where ``jvp`` is defined), and double backward
    against finite differences of the gradient. Double backward fails the
    audit only where autograd would give wrong second derivatives without
    complaint; a backward that is not differentiable (``@once_differentiable``,
    or gradients without a graph back to the inputs) is reported as skipped
    unless ``second_order=True``.

    Args:
        function: the Function class (not ``.apply``, not an instance).
        inputs: forward's arguments: a tensor or a tuple/list (non-tensors allowed).
            Floating tensors with ``requires_grad=True`` are differentiated.
        mode: as in :func:`check_gradients`, for the finite-difference checks.
        dtype: ``"float64"`` audits float64 copies; ``"native"`` the inputs' dtype.
        eps: base finite-difference step; default by dtype.
        atol: absolute tolerance per entry; default by dtype.
        rtol: relative tolerance per entry; default by dtype.
        seed: seeds the RNGs and random cotangents.
        second_order: None checks double backward where backward supports it:
            a wrong second derivative fails, but a declared ``@once_differentiable``
            or a backward whose gradients carry no graph back to the inputs is
            reported as skipped (not twice differentiable), as torch keeps second
            derivatives to ``gradgradcheck``; True requires correct second
            derivatives; False skips.
        name: label for messages and reports (default: the class name).

    Returns:
        A :class:`FunctionAuditResult`; ``passed`` is False if any finding failed.

    Raises:
        InvalidArgument: ``function`` is not a Function subclass, or bad inputs.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> class Scale(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x, k):
        ...         ctx.k = k
        ...         return x * k
        ...     @staticmethod
        ...     def backward(ctx, grad):
        ...         return grad * ctx.k, grad.sum()  # a gradient for the float k: wrong
        >>> x = torch.randn(3, requires_grad=True)
        >>> result = gk.check_autograd_function(Scale, (x, 2.0))
        >>> result.passed, [f.check for f in result.failed]
        (False, ['non_tensor_gradient'])
    """
    if not (isinstance(function, type) and issubclass(function, _BASE)):
        owner = getattr(function, "__self__", None)
        if isinstance(owner, type) and issubclass(owner, _BASE):
            guess = f" Pass the class {owner.__name__}, not {owner.__name__}.apply."
        elif isinstance(function, _BASE):
            guess = f" Pass the class {type(function).__name__}, not an instance."
        else:
            guess = " For a plain function use check_gradients(fn, inputs)."
        raise InvalidArgument(
            f"function={function!r:.60} is not a torch.autograd.Function subclass.{guess}"
        )
    if isinstance(inputs, dict):
        raise InvalidArgument(
            "Function.apply takes positional arguments only; pass inputs as a tuple, not a dict."
        )
    check_bool(second_order, "second_order", allow_none=True)
    check_keywords(options, AuditOptions, "check_autograd_function")
    opts = CheckOptions.create(**options)
    InputTree(inputs)  # the same validation as every check: something requires grad, no sparse
    # the nested checks get the caller's options, but are labelled by their own function
    options.pop("name", None)
    return _Audit(function, inputs, opts, options, second_order=second_order).run()


def assert_autograd_function(
    function: FunctionClass,
    inputs: Any,
    *,
    second_order: bool | None = None,
    msg: Msg = None,
    **options: Unpack[AuditOptions],
) -> FunctionAuditResult:
    """Assert that a custom ``torch.autograd.Function`` passes :func:`check_autograd_function`.

    Takes the arguments of :func:`check_autograd_function`, plus ``msg`` (a
    string put before the report, or a callable that rewrites it).

    Returns:
        The passing :class:`FunctionAuditResult`.

    Raises:
        AutogradFunctionError: a finding failed; the message lists every finding.
        InvalidArgument: misuse, as in :func:`check_autograd_function`.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> class Cube(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         ctx.save_for_backward(x)
        ...         return x ** 3
        ...     @staticmethod
        ...     def backward(ctx, grad):
        ...         (x,) = ctx.saved_tensors
        ...         return 3 * x ** 2 * grad
        >>> _ = gk.assert_autograd_function(Cube, torch.randn(4, requires_grad=True))
    """
    __tracebackhide__ = True
    result = check_autograd_function(function, inputs, second_order=second_order, **options)
    return fail_unless_passed(result, AutogradFunctionError, msg)


def backward_agrees(result: GradcheckResult) -> bool:
    """Whether a gradient check found the backward right (its only failure a wrong jvp).

    The forward-mode finding of the audit judges the jvp itself; a check failed by
    its ``forward_ad`` hint alone says the backward agrees with finite differences.
    """
    if result.passed:
        return True
    # the forward_ad hint is only given where reverse mode agreed
    only_forward = {h.kind for h in result.hints} == {"forward_ad"}
    return only_forward and all(p.passed for p in result.pairs)
