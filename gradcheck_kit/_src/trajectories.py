"""check_same_training / assert_same_training: two training loops, one trajectory.

A common rewrite replaces the hand-written gradient of a training loop with ``loss.backward()``
and expects *exactly the same* result. This check runs both loops from private
copies of the same starting parameters, with the same random stream, and
compares the parameters after every step; it reports the first step, parameter
and entry where they part, and by how much. The caller's parameters, their
``.grad``, the global modes and RNGs are left as they were.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from . import recording
from .engine.diagnose import Block, diagnose, format_factor
from .engine.options import CheckOptions, ToleranceOptions
from .engine.run import captured_objects, fn_name
from .engine.tolerances import machine_eps
from .engine.trees import describe_tensor
from .errors import InvalidArgument, TrainingDivergenceError
from .raising import Msg, fail_unless_passed
from .results import Hint, SameTrainingResult, TrajectoryDivergence
from .serial import one_at_a_time
from .state.rng import RngState, capture_rng_state, restore_rng_state, seed_everything
from .state.snapshot import preserved
from .undo import undoing_writes
from .validation import check_callable, check_int, check_keywords

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["check_same_training", "assert_same_training", "default_trajectory_tolerance"]

# Parameters kept per stretch of steps while the second loop catches up (see check_same_training).
_TRAIL_BYTES = 1 << 26


def default_trajectory_tolerance(dtype: torch.dtype) -> float:
    """The default atol (= rtol) for parameters after many steps: half the digits of ``dtype``.

    Two loops that compute the same update in a different order differ by a few
    units in the last place per step, and gradient descent keeps such
    differences near that size; a wrong gradient changes the leading digits
    within a few steps. ``sqrt(eps)`` sits between the two (3.5e-4 in float32,
    1.5e-8 in float64).

    Examples:
        >>> round(default_trajectory_tolerance(torch.float32), 6)
        0.000345
    """
    return math.sqrt(machine_eps(dtype))


class _Params:
    """The parameters of one loop: named floating tensors, copied from the caller's."""

    def __init__(self, params: Any) -> None:
        self.original = params
        if isinstance(params, nn.Module):
            self.kind = "module"
            named = [(n, p) for n, p in params.named_parameters()]
            if not named:
                raise InvalidArgument(
                    f"params is a {type(params).__name__} without parameters; nothing to compare."
                )
            self.names = [n for n, _ in named]
            return
        if isinstance(params, torch.Tensor):
            self.kind = "tensor"
            leaves: list[tuple[str, Any]] = [("params", params)]
        elif isinstance(params, (tuple, list, dict)):
            self.kind = "tree"
            pairs, _ = pytree.tree_flatten_with_path(params)
            leaves = [("params" + pytree.keystr(p), v) for p, v in pairs]
        else:
            raise InvalidArgument(
                f"params must be a tensor, a tuple/list/dict of tensors or an nn.Module; got "
                f"{type(params).__name__}."
            )
        for path, value in leaves:
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                what = describe_tensor(value) if isinstance(value, torch.Tensor) else repr(value)
                raise InvalidArgument(
                    f"{path} is {what:.60}; every leaf of params must be a floating-point tensor."
                )
        if not leaves:
            raise InvalidArgument("params is empty; nothing to compare.")
        self.names = [path for path, _ in leaves]

    def copy(self) -> Any:
        """A private copy: same values, requires_grad and .grad, no shared storage."""
        if self.kind == "module":
            return copy.deepcopy(self.original)

        def one(t: torch.Tensor) -> torch.Tensor:
            c = t.detach().clone().requires_grad_(t.requires_grad)
            if t.grad is not None:
                c.grad = t.grad.detach().clone()
            return c

        return pytree.tree_map(one, self.original)

    def values(self, current: Any) -> list[torch.Tensor]:
        """The current parameter values of one loop, in the order of :attr:`names`."""
        if self.kind == "module":
            table = dict(current.named_parameters())
            missing = [n for n in self.names if n not in table]
            if missing:
                raise InvalidArgument(
                    f"a step removed parameters {missing} from the module; the loops can only be "
                    f"compared on the same parameters."
                )
            return [table[n].detach() for n in self.names]
        if self.kind == "tensor":
            return [current.detach()]
        return [t.detach() for t in pytree.tree_leaves(current)]

    def adopt(self, returned: Any, current: Any, who: str, step: int) -> Any:
        """The loop's parameters after a step that returned ``returned``."""
        if returned is None or returned is current:
            return current
        if self.kind == "module":
            raise InvalidArgument(
                f"{who} returned {type(returned).__name__} at step {step}; with a module as "
                f"params a step updates it in place and returns None."
            )
        _, spec_now = pytree.tree_flatten(current)
        leaves, spec = pytree.tree_flatten(returned)
        old = pytree.tree_leaves(current)
        if spec != spec_now or not all(isinstance(t, torch.Tensor) for t in leaves):
            raise InvalidArgument(
                f"{who} returned {type(returned).__name__} at step {step}; a step either updates "
                f"params in place and returns None, or returns new params shaped like them."
            )
        for name, new, was in zip(self.names, leaves, old, strict=True):
            if new.shape != was.shape:
                raise InvalidArgument(
                    f"{who} returned {name} with shape {tuple(new.shape)} at step {step}; it "
                    f"has shape {tuple(was.shape)}."
                )
        # the next step starts from leaves, as the first did: no graph grows across steps
        fresh = [
            n.detach().requires_grad_(w.requires_grad) for n, w in zip(leaves, old, strict=True)
        ]
        return pytree.tree_unflatten(fresh, spec)


class _Loop:
    """One training loop: its parameters and its own random stream."""

    def __init__(self, step: Callable[..., Any], params: Any, rng: RngState, label: str) -> None:
        self.step = step
        self.params = params
        self.rng = rng
        self.label = label

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Run steps on this loop's own random stream (swapped per run of steps, not per step)."""
        restore_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = capture_rng_state()

    def advance(self, spec: _Params, k: int) -> None:
        try:
            returned = self.step(self.params)
        except InvalidArgument:
            raise
        except Exception as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(
                    f"gradcheck_kit: raised by {self.label} at step {k} (on a private copy of "
                    f"params)"
                )
            raise
        self.params = spec.adopt(returned, self.params, self.label, k)


def _compare(
    a: list[torch.Tensor], b: list[torch.Tensor], atol: float, rtol: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per parameter: |a - b| (inf where only one is NaN) and the allowance."""
    diffs, allowed = [], []
    for x, y in zip(a, b, strict=True):
        x64, y64 = x.to(torch.float64).cpu(), y.to(torch.float64).cpu()
        d = (x64 - y64).abs()
        both_nan = torch.isnan(x64) & torch.isnan(y64)
        same_inf = torch.isinf(x64) & (x64 == y64)
        d = torch.where(both_nan | same_inf, 0.0, d.nan_to_num(math.inf, math.inf))
        diffs.append(d)
        allowed.append(atol + rtol * torch.maximum(x64.abs(), y64.abs()).nan_to_num(0.0))
    return diffs, allowed


def _divergence(
    k: int,
    names: list[str],
    va: list[torch.Tensor],
    vb: list[torch.Tensor],
    diffs: list[torch.Tensor],
    allowed: list[torch.Tensor],
    over: list[torch.Tensor],
) -> TrajectoryDivergence:
    """The entry furthest over its allowance at step ``k``."""
    which = max(range(len(over)), key=lambda i: float(over[i].max()))
    flat = int(torch.argmax(over[which]))
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), va[which].shape))
    return TrajectoryDivergence(
        step=k,
        parameter=names[which],
        index=index,
        value_a=float(va[which].reshape(-1)[flat]),
        value_b=float(vb[which].reshape(-1)[flat]),
        abs_error=float(diffs[which].reshape(-1)[flat]),
        allowed=float(allowed[which].reshape(-1)[flat]),
        parameter_errors=tuple(
            (n, float(d.max()) if d.numel() else 0.0) for n, d in zip(names, diffs, strict=True)
        ),
    )


def _carry_over(k: int) -> Hint:
    return Hint(
        kind="carry_over",
        text=(
            f"the loops agree after step 1 and part at step {k}: something carries over between "
            f"steps in one of them — gradients accumulating in .grad (no zero_grad()), "
            f"optimizer state (momentum), a learning-rate schedule, or data drawn differently"
        ),
    )


def _first_update_hints(
    spec: _Params,
    start: list[torch.Tensor],
    a: list[torch.Tensor],
    b: list[torch.Tensor],
    labels: tuple[str, str],
) -> list[Hint]:
    """At step 1 the difference is the updates' difference: name a factor or sign in it."""
    blocks = []
    for name, p0, pa, pb in zip(spec.names, start, a, b, strict=True):
        da = (pa.to(torch.float64) - p0.to(torch.float64)).reshape(1, -1).cpu()
        db = (pb.to(torch.float64) - p0.to(torch.float64)).reshape(1, -1).cpu()
        scale = float(torch.maximum(da.abs(), db.abs()).max()) if da.numel() else 0.0
        mismatch = (da - db).abs() > 1e-3 * scale
        shape = tuple(p0.shape)
        values = p0.reshape(-1).to(torch.float64).cpu()
        blocks.append(Block("update", name, (), shape, da, db, mismatch, values))
    hints = []
    for h in diagnose(blocks):
        if h.kind in ("factor", "sign") and h.factor is not None:
            text = (
                f"the first update of {labels[0]} ≈ {h.factor:.3g} × that of {labels[1]}"
                + (f" for '{h.input}'" if h.input else "")
                + f" — {format_factor(h.factor)} in one loop's gradient or learning rate?"
            )
            hints.append(dataclasses.replace(h, text=text))
        elif h.kind == "zero":
            text = (
                f"one loop does not update {h.input or 'a parameter'} at step 1 while the "
                f"other does — a gradient that never reaches it (detached, requires_grad=False, "
                f"an optimizer holding another tensor)?"
            )
            hints.append(dataclasses.replace(h, text=text))
        elif h.kind == "one_input":
            hints.append(dataclasses.replace(h, text=h.text.replace("gradient", "update")))
    return hints


@one_at_a_time
def check_same_training(
    step_a: Callable[..., Any],
    step_b: Callable[..., Any],
    params: Any,
    *,
    steps: int,
    **options: Unpack[ToleranceOptions],
) -> SameTrainingResult:
    """Run two training loops from the same parameters and compare them after every step.

    Each loop gets a private copy of ``params`` (values, ``requires_grad``,
    ``.grad``; a module is deep-copied) and its own random stream, both seeded
    with ``seed``. ``step(params)`` performs one training step: it updates the
    copy in place and returns None, or returns new parameters shaped like them
    (they become the next step's leaves). An optimizer must be built on the
    copy it is given (cache it per copy, e.g. in a dict keyed by ``id``).

    Args:
        step_a: one training step of the first loop, e.g. hand-written gradient descent.
        step_b: one training step of the second, e.g. ``loss.backward()`` + an update.
        params: a tensor, a tuple/list/dict of tensors, or an ``nn.Module``.
        steps: how many steps to run (``>= 1``).
        atol: absolute tolerance per entry; default ``sqrt(eps)`` of the dtype.
        rtol: relative tolerance per entry; default ``sqrt(eps)`` of the dtype.
        seed: seeds both loops' random streams identically.
        name: label for messages and reports (default ``"<step_a> vs <step_b>"``).

    Returns:
        A :class:`SameTrainingResult`; ``divergence`` is the first step,
        parameter and entry where the loops part.

    Raises:
        InvalidArgument: bad arguments; a step returning something that is not
            params-shaped.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> x, y = torch.arange(-3.0, 4.0), 2 * torch.arange(-3.0, 4.0) + 1
        >>> def by_hand(p):
        ...     err = p[0] * x + p[1] - y
        ...     p -= 0.01 * torch.stack([(2 * err * x).mean(), (2 * err).mean()])
        >>> def by_autograd(p):
        ...     q = p.detach().requires_grad_()
        ...     ((q[0] * x + q[1] - y) ** 2).mean().backward()
        ...     return p - 0.01 * q.grad
        >>> gk.check_same_training(by_hand, by_autograd, torch.zeros(2), steps=50).passed
        True
        >>> def forgot_the_2(p):
        ...     err = p[0] * x + p[1] - y
        ...     p -= 0.01 * torch.stack([(err * x).mean(), err.mean()])
        >>> result = gk.check_same_training(forgot_the_2, by_autograd, torch.zeros(2), steps=50)
        >>> result.passed, result.divergence.step
        (False, 1)
    """
    for label, step in (("step_a", step_a), ("step_b", step_b)):
        check_callable(step, label, "pass one training step")
    check_int(steps, "steps", min_value=1)
    check_keywords(options, ToleranceOptions, "check_same_training")
    opts = CheckOptions.create(**options)
    atol, rtol, seed = opts.atol, opts.rtol, opts.seed
    spec = _Params(params)
    labels = (fn_name(step_a), fn_name(step_b))
    if labels[0] == labels[1]:
        labels = (f"{labels[0]} (a)", f"{labels[1]} (b)")
    start_time = time.perf_counter()
    preserve = [params, *captured_objects(step_a), *captured_objects(step_b)]
    with preserved(*preserve), undoing_writes():
        start = [t.clone() for t in spec.values(params)]
        dtype = max((t.dtype for t in start), key=machine_eps)
        default = default_trajectory_tolerance(dtype)
        a_tol = default if atol is None else float(atol)
        r_tol = default if rtol is None else float(rtol)
        seed_everything(seed)
        rng = capture_rng_state()
        loops = [
            _Loop(step_a, spec.copy(), rng, labels[0]),
            _Loop(step_b, spec.copy(), rng, labels[1]),
        ]
        greatest = 0.0
        divergence: TrajectoryDivergence | None = None
        hints: list[Hint] = []
        agreed_at_one = False
        # Loop a runs a stretch of steps ahead, keeping its parameters at each, then loop b
        # follows and is compared: the random streams are swapped once per stretch, not twice
        # per step (capturing every generator costs more than a small training step).
        per_step = sum(int(t.numel()) * t.element_size() for t in start)
        stretch = max(1, min(steps, _TRAIL_BYTES // max(1, per_step)))
        k = 0
        while k < steps and divergence is None:
            n = min(stretch, steps - k)
            trail = []
            with loops[0].stream():
                for j in range(k + 1, k + n + 1):
                    loops[0].advance(spec, j)
                    trail.append([t.clone() for t in spec.values(loops[0].params)])
            with loops[1].stream():
                for va in trail:
                    k += 1
                    loops[1].advance(spec, k)
                    vb = spec.values(loops[1].params)
                    diffs, allowed = _compare(va, vb, a_tol, r_tol)
                    greatest = max([greatest, *(float(d.max()) for d in diffs if d.numel())])
                    over = [d - al for d, al in zip(diffs, allowed, strict=True)]
                    if all(not bool((o > 0).any()) for o in over):
                        agreed_at_one = agreed_at_one or k == 1
                        continue
                    divergence = _divergence(k, spec.names, va, vb, diffs, allowed, over)
                    if k == 1:
                        hints = _first_update_hints(spec, start, va, vb, labels)
                    elif agreed_at_one:
                        hints = [_carry_over(k)]
                    break
    result = SameTrainingResult(
        name=opts.name or f"{labels[0]} vs {labels[1]}",
        step_a=labels[0],
        step_b=labels[1],
        passed=divergence is None,
        steps=steps,
        steps_run=k,
        dtype=str(dtype).removeprefix("torch."),
        atol=a_tol,
        rtol=r_tol,
        seed=seed,
        parameters=tuple(spec.names),
        divergence=divergence,
        max_abs_error=greatest,
        hints=tuple(hints),
        duration_s=time.perf_counter() - start_time,
    )
    recording.publish(result)
    return result


def assert_same_training(
    step_a: Callable[..., Any],
    step_b: Callable[..., Any],
    params: Any,
    *,
    steps: int,
    msg: Msg = None,
    **options: Unpack[ToleranceOptions],
) -> SameTrainingResult:
    """Assert that two training loops follow the same parameter trajectory.

    Takes the arguments of :func:`check_same_training` (``atol=``, ``rtol=``,
    ``seed=``, ``name=``), plus ``msg`` (a string put before the report, or a
    callable that rewrites it).

    Returns:
        The passing :class:`SameTrainingResult`.

    Raises:
        TrainingDivergenceError: the loops part; the message gives the first
            step, parameter and entry, both values, the allowance and a hint.
        InvalidArgument: misuse, as in :func:`check_same_training`.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> def sgd_by_hand(p):
        ...     with torch.no_grad():
        ...         p -= 0.1 * 2 * p
        >>> def sgd_by_autograd(p):
        ...     p.grad = None
        ...     (p ** 2).sum().backward()
        ...     with torch.no_grad():
        ...         p -= 0.1 * p.grad
        >>> _ = gk.assert_same_training(sgd_by_hand, sgd_by_autograd,
        ...                             torch.ones(3, requires_grad=True), steps=20)
    """
    __tracebackhide__ = True
    result = check_same_training(step_a, step_b, params, steps=steps, **options)
    return fail_unless_passed(result, TrainingDivergenceError, msg)
