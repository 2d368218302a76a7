"""One gradient check of ``fn`` at a point, from the first call to the result.

:class:`GradientCheck` is what :func:`gradcheck_kit.check_gradients`,
``check_module_gradients``, second-order checks and Function audits run: the
scope (state, TF32, seeds), the first and the repeat call, the tolerances, the
memory budget, then full, fast or auto mode, and the result.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import torch

from ..errors import NonFiniteOutputError
from ..readback import read_host
from ..results import GradcheckResult, Hint, Resolution
from .auto import run_auto
from .evaluation import OutputChanged, evaluation_notes
from .fast import DEFAULT_PROBES, run_fast
from .full import run_full
from .numerics import unravel
from .precision import tf32_note
from .problem import Outcome, Problem
from .run import CheckRun, FirstCall, close_within_roundoff, first_call, repeat_at_point
from .tolerances import machine_eps, resolve_tolerances

__all__ = ["GradientCheck", "modified_input"]

# Rows of the largest batch fast mode runs with two probes: the repeat call is
# measured when that many evaluations could come near the budget.
_FAST_BATCH_ROWS = 5


class GradientCheck(CheckRun[GradcheckResult]):
    """One gradient check: first and repeat call, budget, the mode, the result."""

    def _run(self, tf32_switched: list[str]) -> GradcheckResult:
        opts = self.opts
        call = first_call(self.fn, self.tree, opts, self.prepare_rng, self.notes, defer_finite=True)
        ev, xs, outs = call.ev, call.xs, call.outs
        note = tf32_note(tf32_switched, xs)
        if note:
            self.notes.append(note)
        dtypes = [x.dtype for x in xs] + [o.dtype for o in outs]
        worst_dtype = max(dtypes, key=machine_eps)
        # without an explicit atol/rtol the relative part follows the error estimate
        self.tol = resolve_tolerances(
            worst_dtype,
            eps=opts.eps,
            atol=opts.atol,
            rtol=opts.rtol,
            by_estimate=opts.atol is None and opts.rtol is None,
            absolute_steps=opts.eps_absolute,
        )
        self.dtype_name = str(worst_dtype).removeprefix("torch.")
        if call.nothing_to_check is not None:
            return self._empty(call.nothing_to_check, ev.calls)
        u_in = max(machine_eps(x.dtype) for x in xs)
        try:
            repeat, point = repeat_at_point(
                call, opts, self.prepare_rng, self.notes, _FAST_BATCH_ROWS
            )
        except BaseException as exc:
            # an output that is not finite at the point is reported first, as if read then
            _raise_if_not_finite(call)
            if isinstance(exc, OutputChanged):
                return self._nondeterministic_shape(exc)
            raise
        if not _repeats(call, point.reference, repeat.values, point.u_out, opts.nondet_tol):
            changed = modified_input(call)
            if changed is not None:
                return self._modified_input(*changed)
            return self._nondeterministic(
                ev.out_paths, ev.out_shapes, point.reference, repeat.values
            )
        budget = point.budget
        if opts.mode == "full":
            budget.require(point.minimum_bytes(full=True), "full mode")
        else:
            budget.require(point.minimum_bytes(full=False), "fast mode")
        problem = Problem(point, opts, self.tol, u_in, ev.out_paths, self.notes, self.hints)
        probes = opts.n_probes or DEFAULT_PROBES
        try:
            self.mode, outcome = self._run_mode(problem, probes)
        except OutputChanged as exc:
            return self._shape_changed(exc)
        self.notes.extend(evaluation_notes(ev))
        resolution = tuple(Resolution(block, value) for block, value in outcome.resolution)
        if resolution:
            self.notes.append("; ".join(r.text() for r in resolution))
        return self._result(
            resolution=resolution,
            passed=outcome.passed,
            status="passed" if outcome.passed else "mismatch",
            pairs=tuple(outcome.pairs),
            probes=tuple(outcome.probes),
            evaluations=ev.calls,
            vectorized=ev.vectorized,
            entries=point.n_in * point.n_out,
        )

    def _run_mode(self, problem: Problem, probes: int) -> tuple[str, Outcome]:
        if self.opts.mode == "full":
            return "full", run_full(problem)
        if self.opts.mode == "fast":
            return "fast", run_fast(problem, probes)
        return run_auto(problem, probes)

    # -- results --------------------------------------------------------------------------
    def _result(self, **kw: Any) -> GradcheckResult:
        return GradcheckResult(
            **self.settings(),
            check=self.check,
            **kw,
        )

    def _empty(self, why: str, calls: int) -> GradcheckResult:
        """A Jacobian without entries: nothing can be wrong, as torch.autograd.gradcheck says."""
        self.notes.insert(0, f"nothing to check: {why}")
        return self._result(passed=True, status="empty", evaluations=calls)

    def _nondeterministic(
        self,
        paths: list[str],
        shapes: list[tuple[int, ...]],
        ref: torch.Tensor,
        again: torch.Tensor,
    ) -> GradcheckResult:
        diff = (ref - again).abs()
        diff = torch.where(torch.isnan(diff), math.inf, diff)
        flat = int(torch.argmax(diff))
        path, idx = _locate(paths, shapes, flat)
        largest = f"largest difference {float(diff[flat]):.3g} in {path} at index {idx}"
        return self._random_result(largest, path)

    def _modified_input(self, path: str, change: float) -> GradcheckResult:
        hint = _in_place_input_hint(argument_name(self.fn, path), path, change)
        return self._two_answers(hint)

    def _nondeterministic_shape(self, exc: OutputChanged) -> GradcheckResult:
        return self._random_result(f"{exc.output}: {exc.before}, then {exc.after}", exc.output)

    def _random_result(self, largest: str, path: str) -> GradcheckResult:
        if self.opts.rng == "replay":
            text = (
                f"fn returned different outputs for the same inputs even with the RNG state "
                f"replayed ({largest}). It depends on something other than its inputs and the "
                f"random generators: nondeterministic kernels "
                f"(torch.use_deterministic_algorithms(True)), global counters, the clock, or "
                f"state it mutates between calls."
            )
        else:
            text = (
                f"fn returned different outputs for the same inputs ({largest}): it draws "
                f"random numbers (dropout, sampling, a random depth as in a dynamic graph) or "
                f"keeps state between calls, so finite differences cannot be compared with it "
                f"as it is. Pass rng='replay' to give every evaluation the same RNG state "
                f"(torch CPU and CUDA, Python random, NumPy), or put a module in eval() mode."
            )
        return self._two_answers(Hint(kind="nondeterministic", text=text, output=path))

    def _two_answers(self, hint: Hint) -> GradcheckResult:
        """The failure of a fn that answered twice at one point and differed: ``hint`` first.

        Both calls count as evaluations; no derivative was compared.
        """
        self.hints.insert(0, hint)
        return self._result(passed=False, status="nondeterministic", evaluations=2)

    def _shape_changed(self, exc: OutputChanged) -> GradcheckResult:
        text = (
            f"{exc.output} has {exc.before} at the point being checked, but {exc.after} at "
            f"{exc.where}. fn makes a discrete choice there (a selection, a matching, "
            f"non-maximum suppression, a threshold on values) that an arbitrarily small step "
            f"changes, so finite differences cannot be taken across it and its gradient cannot "
            f"be checked at this point. Check the differentiable part on its own (the scores "
            f"or distances before the choice), or fix the choice: compute it once under "
            f"torch.no_grad() and pass it in."
        )
        self.hints.insert(0, Hint(kind="shape_changed", text=text, output=exc.output))
        return self._result(passed=False, status="shape_changed")


def _in_place_input_hint(name: str | None, path: str, change: float) -> Hint:
    """The hint for a fn that wrote its input ``path`` (argument ``name``) by up to ``change``."""
    copy = f"{name} = {name}.clone()" if name else "clone it"
    text = (
        f"fn modifies its input {path} in place (it changed by up to {change:.3g} over two "
        f"calls at the same point), so each evaluation starts from another point and "
        f"finite differences cannot be taken. Work on a copy ({copy} before the in-place "
        f"operation); in a custom autograd.Function's forward, either clone, or call "
        f"ctx.mark_dirty({name or 'x'}) and return it."
    )
    return Hint(kind="in_place_input", text=text, input=path)


def _raise_if_not_finite(call: FirstCall) -> None:
    """Raise the error of a NaN or Inf output at the point, if there is one.

    Called where the repeat call raised: the first call's outputs are judged first.
    """
    try:
        call.ensure_usable()
    except NonFiniteOutputError as error:
        raise error from None
    except Exception:
        return  # reading failed too (a device error): exc tells more


def _repeats(
    call: FirstCall, ref: torch.Tensor, again: torch.Tensor, u_out: float, nondet_tol: float
) -> bool:
    """Whether the repeat call agrees with the first (:func:`~.run.close_repeat`).

    Read from the device in one copy with the first call's finiteness, which is
    checked first (:meth:`~.run.FirstCall.ensure_usable`).
    """
    same_shape = ref.shape == again.shape
    flags = list(call.finite_sums or [])
    if same_shape:
        flags.append((ref == again).all())
    values = [v[0] for v in read_host(flags)]
    call.ensure_usable(values[: len(values) - same_shape])
    if not same_shape:
        return False
    # bit for bit, as deterministic kernels repeat; else within roundoff
    return bool(values[-1]) or close_within_roundoff(ref, again, u_out, nondet_tol)


def modified_input(call: FirstCall) -> tuple[str, float] | None:
    """The first checked input ``fn`` wrote in place, and by how much, or None.

    The working copies ``fn`` was called on are compared with the user's
    inputs, which the check never hands to ``fn``.
    """
    for leaf, x in zip(call.checked, call.xs, strict=True):
        original = leaf.original
        if not isinstance(original, torch.Tensor) or original.shape != x.shape:
            continue
        now = x.detach().to(torch.float64)
        then = original.detach().to(device=x.device, dtype=torch.float64)
        same = (now == then) | (torch.isnan(now) & torch.isnan(then))
        if not bool(same.all()):
            diff = torch.where(same, 0.0, (now - then).abs().nan_to_num(math.inf))
            return leaf.path, float(diff.max())
    return None


def argument_name(fn: Any, path: str) -> str | None:
    """The name ``fn`` gives the argument at ``path`` (``'input'``, ``'inputs[1]'``), or None.

    For ``MyFunction.apply`` the names are those of ``MyFunction.forward``.

    Examples:
        >>> argument_name(lambda a, b: a * b, "inputs[1]")
        'b'
    """
    match = re.fullmatch(r"inputs?(?:\[(\d+)\])?", path)
    if match is None:
        return None
    index = int(match.group(1) or 0)
    owner = getattr(fn, "__self__", None)
    target = fn
    skip = 0
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        target = owner.forward
        # forward(ctx, ...) unless the Function has a separate setup_context
        skip = 0 if owner.setup_context is not torch.autograd.Function.setup_context else 1
    try:
        params = list(inspect.signature(target).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    positional = [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return positional[index] if index < len(positional) else None


def _locate(
    paths: list[str], shapes: list[tuple[int, ...]], flat: int
) -> tuple[str, tuple[int, ...]]:
    """The output path and index of entry ``flat`` of the flattened outputs."""
    offset = 0
    for path, shape in zip(paths, shapes, strict=True):
        m = math.prod(shape)
        if flat < offset + m:
            return path, unravel(flat - offset, shape)
        offset += m
    return paths[-1], ()
