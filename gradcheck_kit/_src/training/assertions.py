"""One-line unit-test assertions about training steps.

``assert_zero_grad_between_steps``, ``assert_optimizer_tracks``,
``assert_params_updated`` and ``assert_params_frozen``. Each returns the passing
:class:`TrainingReport`, raises :class:`TrainingLoopError` (an ``AssertionError``)
carrying the failing one, and publishes it for the pytest plugin.

The assertions that run the user's ``step_fn`` leave no trace: the model, the
optimizers passed to them (parameters, ``.grad``, state, hyper-parameters), the
random number generators and the grad mode are put back afterwards, also when
``step_fn`` raises (:func:`gradcheck_kit._src.state.snapshot.preserved`). Objects they are
not given, such as a learning-rate scheduler, keep what the steps did to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from torch import nn

from .. import recording
from ..errors import InvalidArgument, TrainingLoopError
from ..raising import Msg, fail_unless_passed
from ..serial import one_at_a_time
from ..state.snapshot import bits_equal, preserved
from ..undo import undoing_writes
from ..validation import check_int, check_keywords, check_msg
from .common import (
    as_optimizers,
    check_model,
    check_step_fn,
    ignore_matcher,
    nonzero,
    optimizer_labels,
    select_parameters,
)
from .findings import TrainingFinding, TrainingReport
from .tracking import tracking_findings
from .watcher import unpublished_watcher

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ParamStepOptions",
    "assert_zero_grad_between_steps",
    "assert_optimizer_tracks",
    "assert_params_updated",
    "assert_params_frozen",
]

_ZERO_GRAD_KINDS = frozenset({"grad_not_reset", "empty_step"})


class ParamStepOptions(TypedDict, total=False):
    """The options of ``assert_params_updated`` and ``assert_params_frozen`` (see their Args).

    Examples:
        >>> sorted(ParamStepOptions.__optional_keys__)
        ['msg', 'optimizer', 'params', 'steps']
    """

    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None
    params: str | Sequence[str] | None
    steps: int
    msg: Msg


def _conclude(report: TrainingReport, msg: Msg) -> TrainingReport:
    __tracebackhide__ = True
    recording.publish(report)
    return fail_unless_passed(report, TrainingLoopError, msg)


@one_at_a_time
def assert_zero_grad_between_steps(
    step_fn: Callable[[Any], Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    batches: Iterable[Any],
    *,
    accumulation_steps: int = 1,
    msg: Msg = None,
) -> TrainingReport:
    """Assert that a training step resets gradients between optimizer steps.

    Runs ``step_fn(batch)`` for every batch under :func:`watch_training` and
    fails when a step applies a gradient an earlier step already applied
    (``zero_grad()`` missing, misplaced, or on the wrong optimizer) or applies
    no new gradient at all (``zero_grad()`` between ``backward()`` and
    ``step()``). The model, the optimizers and the RNGs are restored afterwards.

    Args:
        step_fn: runs one iteration of the loop on a batch: forward, backward,
            ``step()``, and ``zero_grad()`` wherever the loop puts it.
        model: the module it trains.
        optimizer: the optimizer (or a list of them) it steps.
        batches: the batches to feed it; at least two optimizer steps must
            happen, since a gradient left over shows only at the next step.
        accumulation_steps: backward passes a gradient may sum across steps.
        msg: text put before the message, or a callable that rewrites it.

    Returns:
        The passing :class:`TrainingReport`.

    Raises:
        TrainingLoopError: gradients are not reset, or a step had none, or
            ``step_fn`` never stepped the optimizer.
        InvalidArgument: fewer than two batches, fewer than two steps taken, or
            bad arguments as for :func:`watch_training`.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> batches = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(3)]
        >>> def step(batch):
        ...     x, y = batch
        ...     opt.zero_grad()
        ...     torch.nn.functional.mse_loss(model(x), y).backward()
        ...     opt.step()
        >>> gk.assert_zero_grad_between_steps(step, model, opt, batches).passed
        True
    """
    __tracebackhide__ = True
    check_step_fn(step_fn)
    watcher = unpublished_watcher(
        model,
        optimizer,
        check="assert_zero_grad_between_steps",
        accumulation_steps=accumulation_steps,
    )
    check_msg(msg)
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
        raise InvalidArgument(
            f"batches={batches!r} must be an iterable of batches (a list, a DataLoader...)."
        )
    batch_list = list(batches)
    if len(batch_list) < 2:
        raise InvalidArgument(
            f"batches holds {len(batch_list)} batch(es); give at least two: a gradient left "
            "over from one optimizer step shows only at the next."
        )
    with preserved(model, watcher.optimizers), undoing_writes(), watcher:
        for batch in batch_list:
            step_fn(batch)
    report = watcher.report
    if report is None:  # pragma: no cover - set by every exit
        raise RuntimeError("the watcher made no report")
    findings = tuple(f for f in report.findings if f.kind in _ZERO_GRAD_KINDS)
    if report.optimizer_steps == 0:
        labels = " or ".join(optimizer_labels(watcher.optimizers))
        findings += (
            TrainingFinding(
                "no_step",
                None,
                expected=f"step_fn calls {labels}.step()",
                found=f"{len(batch_list)} calls of step_fn took no optimizer step",
                cause="step_fn steps another optimizer (or a copy), or never calls step()",
                fix="pass the optimizer step_fn really steps, and call its step() in step_fn",
            ),
        )
    elif report.optimizer_steps < 2 and not findings:
        raise InvalidArgument(
            f"step_fn took {report.optimizer_steps} optimizer step over {len(batch_list)} "
            "batches; give enough batches for at least two steps (a gradient left over "
            "shows only at the next step)."
        )
    report = TrainingReport(
        name=report.name,
        check=report.check,
        findings=findings,
        optimizer_steps=report.optimizer_steps,
        backward_passes=report.backward_passes,
        accumulation_steps=accumulation_steps,
        duration_s=report.duration_s,
        notes=report.notes,
    )
    return _conclude(report, msg)


@one_at_a_time
def assert_optimizer_tracks(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    ignore: str | Sequence[str] = (),
    msg: Msg = None,
) -> TrainingReport:
    """Assert that the optimizers update the very parameter objects the model uses, and only those.

    Every parameter of ``model`` with ``requires_grad=True`` must be held by an
    optimizer (by identity, not by value), and every tensor an optimizer holds
    must be a parameter of ``model``. The message says which side lost which
    parameter, and pairs a re-assigned parameter with the stale tensor the
    optimizer still updates (``net.fc1.weight = nn.Parameter(...)``
    after ``SGD(net.parameters())``; ``net.fc1.weight.data = ...`` is fine).
    A parameter held by two optimizers fails too. Runs nothing and changes nothing.

    Args:
        model: the module.
        optimizer: the optimizer, or a list of them.
        ignore: qualified parameter names or shell patterns to leave out.
        msg: text put before the message, or a callable that rewrites it.

    Returns:
        The passing :class:`TrainingReport`.

    Raises:
        TrainingLoopError: the two sides disagree.
        InvalidArgument: a model without parameters; :class:`InvalidArgumentType`
            for a non-module or non-optimizer.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.01)
        >>> net[0].weight.data = torch.ones(2, 4)  # keeps the same Parameter
        >>> _ = gk.assert_optimizer_tracks(net, opt)
        >>> net[0].weight = torch.nn.Parameter(torch.ones(2, 4))  # a new one
        >>> gk.assert_optimizer_tracks(net, opt)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.TrainingLoopError: [gradcheck] Training loop check failed: ...
    """
    __tracebackhide__ = True
    started = time.perf_counter()
    check_model(model)
    optimizers = as_optimizers(optimizer)
    ignored = ignore_matcher(ignore)
    check_msg(msg)
    findings = tracking_findings(
        model,
        optimizers,
        optimizer_labels(optimizers),
        ignored=ignored,
        former_names={},
        replaced_at={},
        strict=True,
    )
    report = TrainingReport(
        name=type(model).__name__,
        check="assert_optimizer_tracks",
        findings=tuple(findings),
        duration_s=time.perf_counter() - started,
    )
    return _conclude(report, msg)


class _GradProbe:
    """Counts, per parameter, the backward passes that reached it and whether one was nonzero."""

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.received: dict[int, int] = {id(p): 0 for p in params}
        self.nonzero: dict[int, bool] = {id(p): False for p in params}
        self._params = [p for p in params if p.requires_grad]
        self._handles: list[Any] = []

    def _hook(self, p: torch.Tensor) -> None:
        self.received[id(p)] += 1
        if not self.nonzero[id(p)] and p.grad is not None:
            self.nonzero[id(p)] = nonzero(p.grad)

    def __enter__(self) -> _GradProbe:
        try:
            for p in self._params:
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _run_steps(
    model: nn.Module,
    step_fn: Callable[[], Any],
    optimizers: tuple[torch.optim.Optimizer, ...],
    selected: list[tuple[str, nn.Parameter]],
    steps: int,
) -> tuple[dict[str, tuple[bool, bool]], _GradProbe, set[int], set[int]]:
    """Run the steps inside ``preserved``; return per name (changed, replaced) and what was seen."""
    held = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    had_grad = {id(p) for _, p in selected if p.grad is not None}
    outcome: dict[str, tuple[bool, bool]] = {}
    with preserved(model, optimizers), undoing_writes():
        before = {id(p): p.detach().clone() for _, p in selected}
        with _GradProbe([p for _, p in selected]) as probe:
            for _ in range(steps):
                step_fn()
        now = dict(model.named_parameters())
        for name, p in selected:
            replaced = now.get(name) is not p
            changed = replaced or not bits_equal(before[id(p)], p.detach())
            outcome[name] = (changed, replaced)
    return outcome, probe, held, had_grad


def _assert_params(
    model: object, step_fn: Callable[[], Any], options: ParamStepOptions, *, must_change: bool
) -> TrainingReport:
    """What assert_params_updated and assert_params_frozen share: run, compare, conclude."""
    __tracebackhide__ = True
    started = time.perf_counter()
    check = "assert_params_updated" if must_change else "assert_params_frozen"
    check_keywords(options, ParamStepOptions, check)
    model = check_model(model)
    check_step_fn(step_fn)
    optimizer = options.get("optimizer")
    optimizers = as_optimizers(optimizer) if optimizer is not None else ()
    steps = options.get("steps", 1)
    check_int(steps, "steps", min_value=1)
    msg = options.get("msg")
    check_msg(msg)
    selected = select_parameters(
        model,
        options.get("params"),
        default=(lambda p: p.requires_grad) if must_change else (lambda p: not p.requires_grad),
        default_what="trainable" if must_change else "frozen (requires_grad=False)",
    )
    outcome, probe, held, had_grad = _run_steps(model, step_fn, optimizers, selected, steps)
    findings = []
    for name, p in selected:
        changed, replaced = outcome[name]
        if replaced:
            findings.append(
                _replaced_during(name, "must change" if must_change else "must stay fixed")
            )
        elif must_change and not changed:
            findings.append(_not_updated(name, p, probe, held, bool(optimizers), steps))
        elif changed and not must_change:
            findings.append(_changed(name, p, probe, held, id(p) in had_grad))
    report = TrainingReport(
        name=type(model).__name__,
        check=check,
        findings=tuple(findings),
        duration_s=time.perf_counter() - started,
        notes=(f"{len(selected)} parameter(s) checked over {steps} step(s)",),
    )
    return _conclude(report, msg)


@one_at_a_time
def assert_params_updated(
    model: nn.Module, step_fn: Callable[[], Any], **options: Unpack[ParamStepOptions]
) -> TrainingReport:
    """Assert that ``steps`` calls of ``step_fn()`` change every selected parameter.

    The classic "does it learn at all" unit test: a parameter that a training
    step leaves bit-identical never learns. For each one that did not change the
    message says why, from what was observed during the steps: frozen, not held
    by the optimizer, no gradient reached it (unused or cut off), its gradient
    was exactly zero, or it had a gradient and the step did not apply it.

    The model, the optimizers given as ``optimizer=``, the RNGs and the grad
    mode are restored afterwards (pass the optimizer, or its state keeps what
    the steps did).

    Args:
        model: the module.
        step_fn: runs one training step, taking no argument (bind the batch with
            a lambda or ``functools.partial``).
        optimizer: the optimizer(s) ``step_fn`` steps: restored afterwards, and
            used to tell "not held by the optimizer" apart.
        params: qualified names or shell patterns (``"fc1.*"``) of the
            parameters that must change; default every parameter with
            ``requires_grad=True``.
        steps: how many times to call ``step_fn``.
        msg: text put before the message, or a callable that rewrites it.

    Returns:
        The passing :class:`TrainingReport`.

    Raises:
        TrainingLoopError: some parameters did not change.
        InvalidArgument: a pattern matches nothing, no trainable parameter, bad
            ``steps``; :class:`InvalidArgumentType` for wrong types.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> x, y = torch.randn(4, 3), torch.randn(4, 1)
        >>> def step():
        ...     opt.zero_grad()
        ...     torch.nn.functional.mse_loss(model(x), y).backward()
        ...     opt.step()
        >>> before = model.weight.detach().clone()
        >>> _ = gk.assert_params_updated(model, step, optimizer=opt)
        >>> torch.equal(model.weight, before)  # restored
        True
    """
    __tracebackhide__ = True
    return _assert_params(model, step_fn, options, must_change=True)


@one_at_a_time
def assert_params_frozen(
    model: nn.Module, step_fn: Callable[[], Any], **options: Unpack[ParamStepOptions]
) -> TrainingReport:
    """Assert that ``steps`` calls of ``step_fn()`` leave every selected parameter bit-identical.

    For frozen layers (fine-tuning a head on a fixed backbone): a parameter
    that must stay fixed but changes means the freeze leaks. The message says
    how: it still requires grad, or it is frozen but the optimizer moved it
    (weight decay, momentum, a stale ``.grad``), or ``step_fn`` wrote it.
    Restores state exactly as :func:`assert_params_updated` does.

    Args:
        model: the module.
        step_fn: runs one training step, taking no argument.
        optimizer: the optimizer(s) ``step_fn`` steps (restored afterwards).
        params: qualified names or shell patterns of the parameters that must
            stay fixed; default every parameter with ``requires_grad=False``.
        steps: how many times to call ``step_fn``.
        msg: text put before the message, or a callable that rewrites it.

    Returns:
        The passing :class:`TrainingReport`.

    Raises:
        TrainingLoopError: some parameters changed.
        InvalidArgument: a pattern matches nothing, no frozen parameter (without
            ``params``), bad ``steps``; :class:`InvalidArgumentType` for wrong types.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
        >>> _ = model[0].requires_grad_(False)
        >>> opt = torch.optim.SGD(model[1].parameters(), lr=0.1)
        >>> def step():
        ...     opt.zero_grad()
        ...     model(torch.randn(4, 3)).pow(2).mean().backward()
        ...     opt.step()
        >>> gk.assert_params_frozen(model, step, optimizer=opt).passed
        True
    """
    __tracebackhide__ = True
    return _assert_params(model, step_fn, options, must_change=False)


def _replaced_during(name: str, must: str) -> TrainingFinding:
    return TrainingFinding(
        "param_replaced",
        name,
        expected=f"{name!r} {must}, as the same tensor object",
        found=f"step_fn re-assigned {name!r}: the model now holds another tensor, and the "
        "optimizer keeps updating the old one",
        cause="`module.<name> = nn.Parameter(...)` (or load_state_dict(..., assign=True)) "
        "inside the training step",
        fix="write new values into the existing parameter (`p.data = ...`, or `p.copy_(...)` "
        "under torch.no_grad())",
    )


def _not_updated(
    name: str,
    p: nn.Parameter,
    probe: _GradProbe,
    held: set[int],
    know_optimizer: bool,
    steps: int,
) -> TrainingFinding:
    received = probe.received.get(id(p), 0)
    if not p.requires_grad:
        found = f"{name!r} has requires_grad=False (it is frozen)"
        cause = "it was frozen with requires_grad_(False), or created without requires_grad"
        fix = f"unfreeze it (`model.{name}.requires_grad_()`), or leave it out of params="
    elif know_optimizer and id(p) not in held:
        found = f"no optimizer given as optimizer= holds {name!r}"
        cause = "the optimizer was built from part of the model, or before this parameter was "
        cause += "added or re-assigned"
        fix = "build the optimizer from model.parameters() after the model is complete"
    elif received == 0:
        found = f"no backward pass reached {name!r} in {steps} step(s): its .grad stayed None"
        cause = (
            "it is not used in the forward pass, or the path from it to the loss is cut by "
            ".detach(), .data, torch.no_grad() or .item()"
        )
        fix = "find the cut with gk.assert_graph_reaches(lambda: loss_fn(model(x)), model)"
    elif not probe.nonzero.get(id(p), False):
        found = (
            f"{received} backward pass(es) reached {name!r}, but its gradient was exactly zero "
            "every time"
        )
        cause = (
            "the loss does not depend on it in practice: dead ReLUs, a multiplication by zero, "
            "a masked-out branch, or a saturated activation"
        )
        fix = "check the activations and the loss on this batch; try another initialisation"
    else:
        found = f"{name!r} had a nonzero gradient, yet the step left it bit-identical"
        cause = (
            "optimizer.step() is not called, the learning rate is 0, the step was skipped "
            "(GradScaler found inf/NaN), or the optimizer holds another tensor"
        )
        if not know_optimizer:
            cause += " (pass optimizer= to tell these apart)"
        fix = "call step() after backward(), with a learning rate > 0"
    return TrainingFinding(
        "param_not_updated",
        name,
        expected=f"{name!r} changes after {steps} training step(s)",
        found=found,
        cause=cause,
        fix=fix,
    )


def _changed(
    name: str, p: nn.Parameter, probe: _GradProbe, held: set[int], had_grad: bool
) -> TrainingFinding:
    if p.requires_grad:
        found = f"{name!r} changed, and it has requires_grad=True"
        if probe.received.get(id(p), 0):
            found += " (backward passes gave it a gradient)"
        cause = "it was never frozen: requires_grad_(False) was not called on it"
        fix = (
            f"freeze it with `model.{name}.requires_grad_(False)` and leave it out of the optimizer"
        )
    elif id(p) in held:
        found = f"{name!r} has requires_grad=False, yet the optimizer changed it"
        if had_grad:
            found += " (it has a .grad left from before it was frozen)"
        cause = (
            "it was frozen after the optimizer was built: a stale .grad (zero_grad("
            "set_to_none=False) keeps zeros), weight decay or momentum keep moving it"
        )
        fix = (
            "set p.grad = None when freezing, and build the optimizer from the trainable "
            "parameters only: filter(lambda p: p.requires_grad, model.parameters())"
        )
    else:
        found = f"{name!r} has requires_grad=False, yet step_fn changed it"
        cause = (
            "step_fn writes it directly (an in-place op, .data assignment, copy_()), or an "
            "optimizer not passed as optimizer= updates it"
        )
        fix = "find the write in step_fn, or pass every optimizer as optimizer= to check them"
    return TrainingFinding(
        "param_changed",
        name,
        expected=f"{name!r} stays bit-identical",
        found=found,
        cause=cause,
        fix=fix,
    )
