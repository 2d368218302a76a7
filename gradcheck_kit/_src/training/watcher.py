"""watch_training: catch a training loop's silent bugs from hooks while it runs.

How it sees the loop, without changing it:

* a post-accumulate-grad hook on every parameter counts the backward passes
  summed into its ``.grad`` since the gradient was last reset. A reset shows as
  a new ``.grad`` object (``zero_grad(set_to_none=True)``, ``p.grad = None``) or
  as an in-place write between two looks at it (``zero_grad(set_to_none=False)``
  zeroes in place, bumping the tensor's version counter), so it does not matter
  whether the loop calls ``optimizer.zero_grad()``, ``model.zero_grad()`` or
  writes ``.grad`` itself;
* step pre- and post-hooks on each optimizer (per instance) look at the
  gradients a step is about to apply: left over from a step that already
  applied them (``zero_grad`` missing, misplaced, or called on another
  optimizer), or none new at all; and at frozen parameters the step changed;
* a module parameter-registration hook sees ``net.fc1.weight = nn.Parameter(...)``
  (the optimizer keeps the old tensor) with the line that did it; writes through
  ``.data``, ``copy_()``, ``load_state_dict`` or ``model.to(dtype)`` keep the
  tensor and are not registrations;
* at the end, parameters that never received a gradient, and which side
  (model or optimizer) lost which parameter;
* in a distributed loop (a ``DistributedDataParallel`` model, or an initialised
  process group of more than one rank), one checksum per tensor compares
  parameters, gradients and buffers across the ranks, and a forward hook sees
  steps taken inside ``no_sync()`` (:mod:`.across_ranks`).

The hooks only read: no tensor, gradient, random number generator or grad mode
is touched, so a watched loop trains bit for bit as an unwatched one. Every hook
is removed when the block ends, also when it raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.utils.hooks import RemovableHandle

from .. import recording
from ..errors import InvalidArgument, TrainingLoopError, TrainingLoopWarning
from ..graph.sites import user_site
from ..messages import PREFIX
from ..raising import Msg, apply_msg
from ..state.snapshot import bits_equal
from ..validation import check_bool, check_choice, check_int, check_keywords, check_msg
from .across_ranks import (
    COMPARE_EVERY,
    RankChecks,
    buffer_matcher,
    distributed_model,
    unwrap_model,
)
from .common import as_optimizers, check_model, ignore_matcher, nonzero, optimizer_labels
from .findings import (
    FindingLog,
    TrainingFinding,
    TrainingReport,
    empty_step_finding,
    frozen_changed_finding,
    judge_gradient,
    no_gradient_finding,
    reapplied_finding,
    unwritten_step_finding,
)
from .tracking import tracking_findings

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["OnError", "TrainingWatcher", "watch_training", "unpublished_watcher"]

OnError = Literal["raise", "warn", "record"]


class WatchOptions(TypedDict, total=False):
    """The keyword options of :func:`watch_training`, declared once for mypy.

    :class:`TrainingWatcher` takes the same keywords, with their defaults.
    """

    accumulation_steps: int
    on_error: OnError
    ignore: str | Sequence[str]
    msg: Msg
    distributed: bool | None
    buffers_may_differ: str | Sequence[str]
    compare_every: int


_ON_ERROR: Final = ("raise", "warn", "record")
# How long the end of a watch waits for the last steps' cross-rank all-gather: only ranks
# far out of step (or one that left the loop early) make it wait at all.
_FINISH_S: Final = 60.0

# id(module or optimizer) -> what watches it, for every object watched right now.
_ACTIVE: dict[int, str] = {}


def _site_text() -> str | None:
    site = user_site()
    return str(site) if site is not None else None


class _ParamState:
    """What the hooks know about one parameter's gradient."""

    __slots__ = (
        "applied",
        "applied_count",
        "count",
        "hooked",
        "manual",
        "name",
        "ref",
        "site",
        "total",
        "version",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.ref: weakref.ref[torch.Tensor] | None = None  # the .grad after the last look
        self.version = 0  # its _version then
        self.count = 0  # backward passes summed into .grad since its last reset
        self.applied = 0  # optimizer steps that applied this .grad since its last reset
        self.applied_count = 0  # count when a step last applied it
        self.manual = False  # .grad set by hand (nonzero) since the last step
        self.total = 0  # backward passes that reached it during the watch
        self.site: str | None = None  # where a backward first summed onto an applied gradient
        self.hooked = False

    def reset(self) -> None:
        self.count = self.applied = self.applied_count = 0
        self.manual = False
        self.site = None


@dataclass
class _StepRecord:
    """What the post-step hook compares: frozen parameters and the written ones' versions."""

    closure: bool
    frozen: list[tuple[torch.Tensor, int, torch.Tensor | None]]
    written: list[tuple[torch.Tensor, int]]
    fresh: bool = True

    def note_frozen(self, p: torch.Tensor) -> None:
        # Only a frozen parameter with a .grad can be moved by a standard optimizer: copy those.
        self.frozen.append((p, p._version, p.detach().clone() if p.grad is not None else None))


class _Session:
    """One run of a watcher: its hooks and the per-parameter state; the judging is in findings."""

    def __init__(
        self,
        model: nn.Module,
        optimizers: tuple[torch.optim.Optimizer, ...],
        accumulation_steps: int,
        ignored: Callable[[str], bool],
    ) -> None:
        self.model = model
        self.optimizers = optimizers
        self.labels = optimizer_labels(optimizers)
        self.k = accumulation_steps
        self.ignored = ignored
        self.states: dict[int, _ParamState] = {}
        # Strong references for the watch's duration: `states` is keyed by id(), which a
        # freed parameter (one replaced by nn.Parameter(...)) would hand to a new tensor.
        self.params: dict[int, torch.Tensor] = {}
        self.handles: list[RemovableHandle] = []
        self.step_no = [0] * len(optimizers)
        self.pending: dict[int, _StepRecord] = {}
        self.log = FindingLog()
        self.former_names: dict[int, str] = {}
        self.replaced_at: dict[str, str] = {}
        self.module_names = {id(m): n for n, m in model.named_modules()}
        self.first_backward: str | None = None
        self.seen_backward = False
        self.errors: dict[str, int] = {}  # a hook's own failure -> how often
        self.started = time.perf_counter()
        self.ranks: RankChecks | None = None  # the cross-rank checks, in a distributed loop

    def name_of(self, p: torch.Tensor) -> str | None:
        st = self.states.get(id(p))
        return st.name if st is not None else None

    # ------------------------------------------------------------ set-up, tear-down

    def open(self) -> None:
        try:
            for name, p in self.model.named_parameters():
                self.former_names[id(p)] = name
                if id(p) not in self.states:
                    self.adopt(p, name)
            for index, opt in enumerate(self.optimizers):
                for gi, group in enumerate(opt.param_groups):
                    for pi, p in enumerate(group["params"]):
                        if id(p) not in self.states:
                            self.adopt(
                                p, f"{self.labels[index]}.param_groups[{gi}]['params'][{pi}]"
                            )
                self.handles.append(
                    opt.register_step_pre_hook(functools.partial(self.before_step, index))
                )
                self.handles.append(
                    opt.register_step_post_hook(functools.partial(self.after_step, index))
                )
            self.handles.append(register_module_parameter_registration_hook(self.on_register))
            if self.ranks is not None:
                self.ranks.open()
            self.scan_tracking()
        except BaseException:
            self.remove_hooks()
            raise

    def remove_hooks(self) -> None:
        handles, self.handles = self.handles, []
        for handle in handles:
            handle.remove()
        if self.ranks is not None:
            self.ranks.remove_hooks()

    def close(self, name: str, check: str, *, block_failed: bool = False) -> TrainingReport:
        self.remove_hooks()
        if self.ranks is not None and not block_failed:
            # the last steps' all-gathers; a block that raised may have left before some
            # step, so its rank does not start one the others may never join
            self.ranks.close(self.log, timedelta(seconds=_FINISH_S))
        notes = [
            f"{text} ({count} time{'s' if count != 1 else ''}); some checks were skipped"
            for text, count in self.errors.items()
        ]
        try:
            self.scan_tracking()
            self.scan_no_gradient()
        except Exception as exc:  # a report is still better than a crash at the end of training
            notes.append(f"the end-of-watch checks failed: {type(exc).__name__}: {exc}")
        findings = self.log.findings()
        ranks = self.ranks
        if ranks is not None:  # this rank's own findings name it
            findings = tuple(
                f if f.ranks else dataclasses.replace(f, ranks=(ranks.rank,)) for f in findings
            )
        return TrainingReport(
            name=name,
            check=check,
            findings=findings,
            optimizer_steps=sum(self.step_no),
            backward_passes=max((st.total for st in self.states.values()), default=0),
            accumulation_steps=self.k,
            duration_s=time.perf_counter() - self.started,
            notes=tuple(notes),
            rank=ranks.rank if ranks is not None else None,
            world_size=ranks.world_size if ranks is not None else None,
        )

    def adopt(self, p: torch.Tensor, name: str) -> _ParamState:
        st = _ParamState(name)
        grad = p.grad
        if grad is not None:  # a gradient left from before the watch counts as one pass
            st.ref = weakref.ref(grad)
            st.version = grad._version
            st.count = 1 if nonzero(grad) else 0
        self.states[id(p)] = st
        self.params[id(p)] = p
        if p.requires_grad:
            self.hook(p, st)
        return st

    def hook(self, p: torch.Tensor, st: _ParamState) -> None:
        try:
            handle = p.register_post_accumulate_grad_hook(self.make_hook(st))
        except RuntimeError:  # not a leaf: autograd never accumulates into it
            return
        self.handles.append(handle)
        st.hooked = True

    def make_hook(self, st: _ParamState) -> Callable[[torch.Tensor], None]:
        limit = self.k

        def after_accumulate(p: torch.Tensor) -> None:
            try:
                grad = p.grad
                if grad is None:
                    return
                ref = st.ref
                version = grad._version
                if ref is None or ref() is not grad:
                    st.ref = weakref.ref(grad)  # a new .grad: it had been set to None
                    st.reset()
                elif version - st.version > 1:
                    st.reset()  # written in place since the last look: zeroed
                st.version = version
                st.count += 1
                st.total += 1
                if not self.seen_backward:
                    self.seen_backward = True
                    self.first_backward = _site_text()
                if st.applied and st.count > limit and st.site is None:
                    st.site = _site_text()
            except Exception as exc:  # never break the user's backward pass
                self.failed("a gradient hook failed", exc)

        return after_accumulate

    def failed(self, what: str, exc: Exception) -> None:
        """Note a failure of the watcher's own hook; the user's loop must go on."""
        text = f"{what}: {type(exc).__name__}: {exc}"
        self.errors[text] = self.errors.get(text, 0) + 1

    # ------------------------------------------------------------ end of the watch

    def scan_tracking(self) -> None:
        for finding in tracking_findings(
            self.model,
            self.optimizers,
            self.labels,
            ignored=self.ignored,
            former_names=self.former_names,
            replaced_at=self.replaced_at,
            strict=False,
        ):
            self.log.add_once(finding)

    def scan_no_gradient(self) -> None:
        passes = max((st.total for st in self.states.values()), default=0)
        if passes == 0:
            return
        for name, p in self.model.named_parameters():
            st = self.states.get(id(p))
            if st is None or not st.hooked or st.total or not p.requires_grad:
                continue
            if self.ignored(name):
                continue
            self.log.add_once(no_gradient_finding(name, passes, self.first_backward))

    # ------------------------------------------------------------ optimizer steps

    def sync(self, st: _ParamState, p: torch.Tensor) -> None:
        """Bring ``st`` up to date when ``p.grad`` was set to None or replaced by hand."""
        grad = p.grad
        if grad is None:
            if st.ref is not None or st.count or st.manual:
                st.reset()
                st.ref = None
            return
        st.reset()  # set by hand: p.grad = ...
        st.ref = weakref.ref(grad)
        st.version = grad._version
        st.manual = nonzero(grad)

    @staticmethod
    def sync_written(changed: list[tuple[_ParamState, torch.Tensor]]) -> None:
        """Gradients written in place since their last backward: scaled, or zeroed?

        ``clip_grad_norm_`` and ``GradScaler.unscale_`` scale every gradient in one
        call; a ``zero_grad(set_to_none=False)`` between ``backward()`` and
        ``step()`` zeroes every one. One look at the first tells which, so a
        clipped loop pays for one check per step, not one per parameter.
        """
        zeroed = not nonzero(changed[0][1])
        for st, grad in changed:
            st.version = grad._version
            if zeroed and not nonzero(grad):
                st.reset()

    def look_at_gradients(self, index: int, record: _StepRecord | None) -> list[_ParamState]:
        """Bring the state of every trainable parameter of optimizer ``index`` up to date.

        With a ``record``, also note what the post-step hook compares.
        """
        opt = self.optimizers[index]
        states = self.states
        entries: list[_ParamState] = []
        changed: list[tuple[_ParamState, torch.Tensor]] = []
        for group in opt.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    if record is not None:
                        record.note_frozen(p)
                    continue
                st = states.get(id(p))
                if st is None:
                    st = self.adopt(p, f"{self.labels[index]} parameter of shape {tuple(p.shape)}")
                elif not st.hooked:  # unfrozen since the watch began
                    self.hook(p, st)
                grad = p.grad
                ref = st.ref
                same = ref is not None and ref() is grad
                if grad is None or not same:
                    self.sync(st, p)
                elif grad._version != st.version:
                    changed.append((st, grad))
                if record is not None and grad is not None:
                    record.written.append((p, p._version))
                entries.append(st)
        if changed:
            self.sync_written(changed)
        return entries

    def judge(self, index: int, record: _StepRecord | None) -> bool:
        """Judge the gradients step ``step_no[index]`` applies (:func:`judge_gradient`).

        Counts them as applied; returns whether any was new. With a ``record``,
        also note what the post-step hook compares.
        """
        entries = self.look_at_gradients(index, record)
        step, label, limit = self.step_no[index], self.labels[index], self.k
        fresh = False
        stale: list[tuple[_ParamState, int, int]] = []
        for st in entries:
            new, reapplied = judge_gradient(st, limit)
            fresh = fresh or new
            if reapplied:
                stale.append((st, st.count, st.applied))
            if st.count or st.manual:  # this step applies it
                st.applied += 1
                st.applied_count = st.count
                st.manual = False
        if stale:
            here = _site_text()
            for st, count, applied in stale:
                make = functools.partial(
                    reapplied_finding,
                    st.name,
                    count=count,
                    applied=applied,
                    step=step,
                    optimizer=label,
                    accumulation_steps=limit,
                    location=st.site or here,
                )
                self.log.add("grad_not_reset", st.name, label, step, make)
        if not fresh:
            make = functools.partial(empty_step_finding, step, label, len(entries), _site_text())
            self.log.add("empty_step", None, label, step, make)
        return fresh

    def before_step(self, index: int, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        try:
            self.step_no[index] += 1
            # torch passes step()'s own arguments: (optimizer, closure=None)
            closure = kwargs.get("closure") if kwargs else None
            if closure is None and len(args) > 1:
                closure = args[1]
            record = _StepRecord(closure is not None, [], [])
            self.pending[index] = record
            if closure is None:
                record.fresh = self.judge(index, record)
            else:  # the closure makes the gradients: judge them after the step
                for group in opt.param_groups:
                    for p in group["params"]:
                        if not p.requires_grad:
                            record.note_frozen(p)
        except Exception as exc:
            self.failed("a step pre-hook failed", exc)

    def after_step(self, index: int, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.judge_step(index)
        if self.ranks is not None:  # every rank, after every step, whatever was found
            self.ranks.after_step(
                index, self.step_no[index], self.labels[index], self.log, _site_text
            )

    def judge_step(self, index: int) -> None:
        try:
            record = self.pending.pop(index, None)
            if record is None:
                return
            if record.closure:
                record.fresh = self.judge(index, None)
            step, label = self.step_no[index], self.labels[index]
            for p, version, before in record.frozen:
                if p._version == version:
                    continue
                if before is not None and bits_equal(before, p.detach()):
                    continue
                st = self.states.get(id(p))
                name = st.name if st is not None else f"parameter of shape {tuple(p.shape)}"
                self.log.add(
                    "frozen_param_updated",
                    name,
                    label,
                    step,
                    functools.partial(
                        frozen_changed_finding, name, step, label, before is not None, _site_text()
                    ),
                )
            written = record.written
            if record.fresh and written and all(p._version == v for p, v in written):
                self.log.add(
                    "empty_step",
                    None,
                    label,
                    step,
                    functools.partial(
                        unwritten_step_finding, step, label, len(written), _site_text()
                    ),
                )
        except Exception as exc:
            self.failed("a step post-hook failed", exc)

    # ------------------------------------------------------------ re-assignment

    def on_register(self, module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        try:
            prefix = self.module_names.get(id(module))
            if prefix is None:
                return
            qualname = f"{prefix}.{name}" if prefix else name
            old = dict(module.named_parameters(recurse=False)).get(name)
            if old is param or self.ignored(qualname):
                return
            if old is not None:
                self.former_names.setdefault(id(old), qualname)
            site = _site_text()
            if site is not None:
                self.replaced_at[qualname] = site
            if param is not None and id(param) not in self.states:
                self.adopt(param, qualname)
        except Exception as exc:
            self.failed("the registration hook failed", exc)


class TrainingWatcher(contextlib.ContextDecorator):
    """Hooks around a training loop; made by :func:`watch_training` (see there for the checks).

    A context manager and a decorator. Each ``with`` block (or each call of a
    decorated function) is one watch: hooks are added on entry, removed on exit,
    and what was found becomes :attr:`report`.

    Examples:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> watcher = watch_training(model, opt)
        >>> with watcher:
        ...     for _ in range(2):
        ...         opt.zero_grad()
        ...         model(torch.ones(1, 2)).sum().backward()
        ...         opt.step()
        >>> watcher.report.passed, watcher.report.optimizer_steps
        (True, 2)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
        *,
        accumulation_steps: int = 1,
        on_error: OnError = "raise",
        ignore: str | Sequence[str] = (),
        msg: Msg = None,
        distributed: bool | None = None,
        buffers_may_differ: str | Sequence[str] = (),
        compare_every: int = COMPARE_EVERY,
    ) -> None:
        self._model = check_model(model)
        self._optimizers = as_optimizers(optimizer)
        check_int(accumulation_steps, "accumulation_steps", min_value=1)
        check_choice(on_error, _ON_ERROR, "on_error")
        self._ignored = ignore_matcher(ignore)
        check_msg(msg)
        check_bool(distributed, "distributed", allow_none=True)
        self._distributed = distributed
        self._buffers_may_differ = buffer_matcher(buffers_may_differ)
        check_int(compare_every, "compare_every", min_value=1)
        self._compare_every = compare_every
        self._accumulation_steps = accumulation_steps
        self._on_error: OnError = on_error
        self._msg = msg
        self._session: _Session | None = None
        self._report: TrainingReport | None = None
        self._check = "watch_training"
        self._publish = True
        self._active_keys: list[int] = []

    @property
    def optimizers(self) -> tuple[torch.optim.Optimizer, ...]:
        """The optimizers watched, as a tuple (one optimizer given is a tuple of one).

        Examples:
            >>> import torch
            >>> m = torch.nn.Linear(1, 1)
            >>> opt = torch.optim.SGD(m.parameters(), lr=0.1)
            >>> watch_training(m, opt).optimizers == (opt,)
            True
        """
        return self._optimizers

    @property
    def report(self) -> TrainingReport | None:
        """What the last finished watch found (``None`` before the first one ends).

        Examples:
            >>> import torch
            >>> watch_training(torch.nn.Linear(1, 1), torch.optim.SGD(
            ...     torch.nn.Linear(1, 1).parameters(), lr=0.1)).report is None
            True
        """
        return self._report

    @property
    def findings(self) -> tuple[TrainingFinding, ...]:
        """What the running watch found so far (steps seen; end-of-watch checks not yet run).

        After the watch, the findings of :attr:`report`.

        Examples:
            >>> import torch
            >>> m = torch.nn.Linear(1, 1)
            >>> with watch_training(m, torch.optim.SGD(m.parameters(), lr=0.1)) as w:
            ...     w.findings
            ()
        """
        if self._session is None:
            return self._report.findings if self._report is not None else ()
        return self._session.log.so_far()

    def __enter__(self) -> TrainingWatcher:
        if self._session is not None:
            raise InvalidArgument(
                "this watch_training(...) is already active: a watcher cannot be entered "
                "again inside its own block."
            )
        name = type(self._model).__name__
        keys = [(id(m), f"module {(n or name)!r}") for n, m in self._model.named_modules()]
        keys += [
            (id(o), label)
            for o, label in zip(self._optimizers, optimizer_labels(self._optimizers), strict=True)
        ]
        busy = [label for key, label in keys if key in _ACTIVE]
        if busy:
            raise InvalidArgument(
                f"{busy[0]} is already watched by an enclosing watch_training(...): nested "
                "watchers would count every backward pass and step twice. Watch once, "
                "around the outermost loop (or end the other watch first)."
            )
        inner = unwrap_model(self._model)
        session = _Session(inner, self._optimizers, self._accumulation_steps, self._ignored)
        if self._across_ranks():
            session.ranks = RankChecks(
                self._model,
                self._optimizers,
                session.name_of,
                ignored=self._ignored,
                buffers_may_differ=self._buffers_may_differ,
                failed=session.failed,
                every=self._compare_every,
            )
        session.open()
        for key, label in keys:
            _ACTIVE[key] = label
        self._active_keys = [key for key, _ in keys]
        self._session = session
        return self

    def _across_ranks(self) -> bool:
        """Whether this watch compares the ranks: ``distributed``, else a DDP model or group."""
        if self._distributed is False:
            return False
        ready = dist.is_available() and dist.is_initialized()
        if self._distributed and not ready:
            raise InvalidArgument(
                "distributed=True, but torch.distributed has no initialised process group: "
                "call dist.init_process_group(...) on every rank before the watch (or leave "
                "distributed=None to compare ranks only when there are several)."
            )
        if not ready:
            return False
        return bool(
            self._distributed
            or distributed_model(self._model) is not None
            or dist.get_world_size() > 1
        )

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        __tracebackhide__ = True
        session = self._session
        if session is None:
            return
        self._session = None
        try:
            report = session.close(
                type(session.model).__name__, self._check, block_failed=exc is not None
            )
        finally:
            session.remove_hooks()
            for key in self._active_keys:
                _ACTIVE.pop(key, None)
        self._report = report
        if session.errors:
            warnings.warn(
                f"{PREFIX} watch_training could not check everything: " + "; ".join(report.notes),
                RuntimeWarning,
                stacklevel=2,
            )
        if self._publish:
            recording.publish(report)
        if report.passed or self._on_error == "record":
            return
        text = apply_msg(report.summary(), self._msg)
        if exc is not None:  # the block's own exception goes first; ours rides along
            if hasattr(exc, "add_note"):
                exc.add_note(text)
            return
        if self._on_error == "raise":
            raise TrainingLoopError(text, report)
        warnings.warn(text, TrainingLoopWarning, stacklevel=2)


def watch_training(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    **options: Unpack[WatchOptions],
) -> TrainingWatcher:
    """Watch a training loop, however it is written, for bugs that do not crash it.

    Use it as a context manager around the loop (or as a decorator on the
    function that runs it). It finds, each naming the parameter (qualified
    name), the optimizer step, what was expected, the likely cause, the fix and
    the user's source line:

    * ``grad_not_reset`` — a step applies a gradient that an earlier step already
      applied: ``zero_grad()`` missing, placed so it runs less often than
      ``step()``, or called on another optimizer. Several backward passes
      between two steps (several losses, or accumulation with one step every k
      passes) are fine; a loop that steps every pass but zeroes every k passes
      needs ``accumulation_steps=k``.
    * ``empty_step`` — a step with no new gradient (``zero_grad()`` between
      ``backward()`` and ``step()``, a missing ``backward()``, two steps per pass).
    * ``param_replaced`` / ``param_not_in_optimizer`` / ``param_not_in_model`` /
      ``param_in_two_optimizers`` — the model and the optimizers disagree on
      which tensors are trained (``net.fc1.weight = nn.Parameter(...)`` after the
      optimizer was built). Writing through ``.data``, ``copy_()`` under
      ``no_grad``, ``load_state_dict`` and ``model.to(dtype)`` are fine.
    * ``no_gradient`` — a trainable parameter no backward pass reached (unused,
      or cut off by ``detach()``).
    * ``frozen_param_updated`` — a step changed a parameter with
      ``requires_grad=False`` (weight decay or momentum on a stale ``.grad``).

    In a distributed loop (the model is a ``DistributedDataParallel``, or
    ``torch.distributed`` is initialised with more than one rank; ``distributed=``
    forces it on or off) every rank watches its own loop, and the ranks are
    compared: each rank sends the L2 norm of each gradient, parameter and buffer
    (never the tensors) after the first ``compare_every`` steps, after every
    ``compare_every``-th step and at the end, and whether each step's forward ran
    inside ``no_sync()``, 64 steps' worth in one background ``all_gather``; every
    rank judges the same numbers and reports the same cross-rank findings, each
    naming the step, the tensor and the ranks that differ (a divergence persists,
    so a step between two comparisons is found at the next one):

    * ``params_differ_across_ranks`` — a parameter is not the same on every rank
      after a step (changed under ``if rank == 0:``, a checkpoint loaded on one rank).
    * ``grad_not_reduced`` — a step applied a gradient that differs across ranks:
      a hand-rolled all-reduce that skips it, a parameter DDP did not reduce.
    * ``step_inside_no_sync`` — the forward before a step ran inside
      ``model.no_sync()``: its backward was not all-reduced (step inside the block,
      or the last micro-batch not synchronised).
    * ``buffers_differ_across_ranks`` — a buffer (BatchNorm statistics) differs
      across ranks: plain BatchNorm with DDP's buffer broadcast off, or no DDP.
      Buffers DDP re-broadcasts at each forward are not compared; declare per-rank
      ones with ``buffers_may_differ``.

    A rank's own findings (``grad_not_reset``...) name that rank. Every rank must
    enter the watch and take the same number of optimizer steps (DDP needs that
    anyway): the comparison is a collective. Names are the wrapped module's
    (``fc1.weight``, without ``module.``).

    The watched loop trains bit for bit as it would unwatched (the hooks only
    read), every hook is removed at the end of the block, also when it raises,
    and the report is published to the pytest plugin's results. Several
    optimizers, learning-rate schedulers, ``torch.amp.GradScaler`` (a skipped
    step is no step), closures (``LBFGS``), ``set_to_none`` either way and
    ``model.zero_grad()`` are understood. Not seen: accumulation under
    ``create_graph=True`` (each pass makes a new ``.grad``) and optimizers that
    are not ``torch.optim.Optimizer``.

    Args:
        model: the module being trained (one ``nn.Module``; wrap several in an
            ``nn.ModuleDict``).
        optimizer: the optimizer, or a list of them, that train it.
        accumulation_steps: how many backward passes a gradient may sum across
            optimizer steps before it must be reset (1: reset after every step).
        on_error: at the end of the block, ``"raise"`` a :class:`TrainingLoopError`,
            ``"warn"`` with a :class:`TrainingLoopWarning`, or ``"record"`` (only
            :attr:`TrainingWatcher.report`). If the block itself raises, that
            exception propagates, with the findings added as a note.
        ignore: qualified parameter names or shell patterns (``"head.*"``) to
            leave out of every check.
        msg: text put before the message, or a callable that rewrites it.
        distributed: compare the ranks (``True``), or not (``False``); ``None``
            (the default) compares them for a ``DistributedDataParallel`` model or
            an initialised process group of more than one rank.
        buffers_may_differ: qualified buffer names or shell patterns (``"bn.*"``)
            whose values may differ across ranks (per-rank statistics on purpose).
        compare_every: in a distributed loop, sum up and compare the tensors at
            the first ``compare_every`` steps and every ``compare_every``-th step
            after (default 16; 1: every step). Reading every gradient and
            parameter costs about as much as DDP's own all-reduce of a small model.

    Returns:
        A :class:`TrainingWatcher`; after the block its ``report`` holds the
        :class:`TrainingReport`.

    Raises:
        TrainingLoopError: at the end of the block, when something was found
            and ``on_error="raise"``.
        InvalidArgument: a model without parameters, a bad ``accumulation_steps``,
            ``on_error``, ``distributed`` or ``compare_every``, or (on entry) a model or optimizer
            already being watched, or ``distributed=True`` without a process
            group; :class:`InvalidArgumentType` for an optimizer that is not a
            ``torch.optim.Optimizer``, a model that is not a module, or bad
            ``buffers_may_differ`` patterns.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
        >>> with gk.watch_training(model, opt):
        ...     for _ in range(3):
        ...         opt.zero_grad()
        ...         torch.nn.functional.mse_loss(model(x), y).backward()
        ...         opt.step()
        >>> with gk.watch_training(model, opt, on_error="record") as watch:
        ...     for _ in range(3):  # zero_grad() forgotten
        ...         torch.nn.functional.mse_loss(model(x), y).backward()
        ...         opt.step()
        >>> [(f.kind, f.parameter, f.step) for f in watch.report.findings]
        [('grad_not_reset', 'weight', 2), ('grad_not_reset', 'bias', 2)]

        In a DDP loop, the same call on every rank also compares the ranks; off
        with ``distributed=False`` (a single process is not compared):

        >>> with gk.watch_training(model, opt, distributed=False) as watch:
        ...     opt.zero_grad()
        ...     torch.nn.functional.mse_loss(model(x), y).backward()
        ...     opt.step()
        >>> watch.report.rank is None
        True
    """
    check_keywords(options, WatchOptions, "watch_training")
    return TrainingWatcher(model, optimizer, **options)


def unpublished_watcher(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
    *,
    check: str,
    accumulation_steps: int = 1,
) -> TrainingWatcher:
    """A watcher for an assertion built on it: it records, names ``check``, publishes nothing.

    The assertion publishes its own report, judged on the watcher's findings.

    Examples:
        >>> import torch
        >>> m = torch.nn.Linear(1, 1)
        >>> with unpublished_watcher(m, torch.optim.SGD(m.parameters(), lr=0.1),
        ...                          check="assert_x") as w:
        ...     pass
        >>> w.report.check
        'assert_x'
    """
    watcher = TrainingWatcher(
        model, optimizer, accumulation_steps=accumulation_steps, on_error="record"
    )
    watcher._check = check
    watcher._publish = False
    return watcher
