"""The cross-rank checks of watch_training: checksums of every tensor, gathered in batches.

After the optimizer steps it compares (the first ``every``, every ``every``-th
after, and the last) each rank sums up, per tensor, what every rank must hold
alike in data-parallel training: the gradient each parameter of the stepping
optimizer was given (its L2 norm, or -1 where there is none), the parameter
itself after the update, and the model's buffers. These numbers (one per tensor,
whatever its size) are written straight into a float64 vector, after two flags
per step (its forward ran inside ``no_sync()``; the checksums failed), and the
vector travels in one ``all_gather`` for ``BATCH_STEPS`` steps at once;
parameters and gradients never leave their rank. Every rank then holds the same
matrix, so every rank judges the same way and words a cross-rank finding the
same way, naming the ranks that differ.

The collectives are the same on every rank, whatever was found: one
``all_gather`` every ``BATCH_STEPS`` steps of a vector whose length depends only
on the number of steps, the optimizer's parameters and the model's buffers.
Every rank must step as often as the others (DistributedDataParallel requires
it anyway).

A ``DistributedDataParallel`` model is also watched at its forward: a forward
with gradients enabled inside ``no_sync()`` means its backward will not be
all-reduced, and a step taken right after it is ``step_inside_no_sync``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Final, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

from .findings import FindingLog
from .rank_findings import (
    buffers_differ_finding,
    grad_not_reduced_finding,
    params_differ_finding,
    step_inside_no_sync_finding,
)

__all__ = [
    "BATCH_STEPS",
    "COMPARE_EVERY",
    "RankChecks",
    "buffer_matcher",
    "distributed_model",
    "unwrap_model",
]

# Two ranks' checksums of the same tensor differ beyond this relative amount: the
# tensors differ. Ranks that hold the same bits compute the same checksums; the
# margin only absorbs a reduction order that differs with the thread count.
_RTOL: Final = 1e-6
_HEADER: Final = 2  # [last forward ran inside no_sync(), this rank's checksums failed]
_CLEAN: Final = (0.0, 0.0)  # the flags of a step: outside no_sync(), checksums written
_UNSYNCED: Final = (1.0, 0.0)
_MISSING: Final = -1.0  # in place of the norm of a gradient that is None (a norm is >= 0)
# Steps whose flags and checksums travel in one all-gather (see RankChecks.after_step).
BATCH_STEPS = 64
# By default the tensors are summed up at the first COMPARE_EVERY steps and every
# COMPARE_EVERY-th step after (watch_training's compare_every).
COMPARE_EVERY = 16


def distributed_model(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    """``model`` if it is a ``DistributedDataParallel``, else ``None``."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    return None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module a ``DistributedDataParallel`` wraps (its names lack ``module.``), or ``model``."""
    ddp = distributed_model(model)
    return ddp.module if ddp is not None else model


def buffer_matcher(patterns: object) -> Callable[[str], bool]:
    """A predicate for ``buffers_may_differ``: shell patterns over qualified buffer names."""
    from .common import ignore_matcher

    return ignore_matcher(patterns, name="buffers_may_differ")


def _odd_ranks(rows: Sequence[tuple[float, ...]]) -> tuple[int, ...]:
    """The ranks outside the largest group of equal rows; every rank when no group is larger."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for rank, row in enumerate(rows):
        key = tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)
        groups.setdefault(key, []).append(rank)
    sizes = sorted((len(g) for g in groups.values()), reverse=True)
    if len(sizes) < 2 or sizes[0] == sizes[1]:
        return tuple(range(len(rows)))
    largest = max(groups.values(), key=len)
    return tuple(r for r in range(len(rows)) if r not in largest)


class _Plan:
    """What one optimizer's step sends: which tensors, in which order, and their names.

    The parameters and buffers are listed once, detached, with those a norm
    cannot take as they are (integer counters, sparse or complex tensors) marked
    for conversion: the common case converts nothing at any step.
    """

    __slots__ = ("buffers", "fixed", "grads", "key", "plain", "values")

    def __init__(
        self,
        key: tuple[Any, ...],
        grads: list[tuple[str, torch.Tensor]],
        values: list[tuple[str, torch.Tensor]],
        buffers: list[tuple[str, torch.Tensor]],
    ) -> None:
        self.key = key
        self.grads = grads
        self.values = values
        self.buffers = buffers
        self.fixed = [p.detach() for _, p in values] + [b.detach() for _, b in buffers]
        self.plain = all(_normable(t) for t in self.fixed)

    @property
    def size(self) -> int:
        """Checksums this plan puts on the wire per step: one per tensor."""
        return len(self.grads) + len(self.fixed)


def _normable(t: torch.Tensor) -> bool:
    return t.layout == torch.strided and t.is_floating_point()


def _as_normable(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a strided real floating tensor with the same L2 norm."""
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_complex():
        return torch.view_as_real(t.resolve_conj())
    return t if t.is_floating_point() else t.to(torch.float64)


_ZERO: Final = torch.zeros(())


def _nothing(grad: torch.Tensor | None) -> torch.Tensor:
    """``grad`` for a norm list: a zero for None (overwritten later), else made normable."""
    return _ZERO if grad is None else _as_normable(grad)


def _nowhere() -> str | None:
    return None


class _Step(NamedTuple):
    """One optimizer step's part of an all-gather: what it compares, and where.

    ``plan`` is None for a step whose tensors are not summed up (only its flags
    travel); ``since`` is the step of this optimizer last summed up before it.
    """

    plan: _Plan | None
    step: int
    label: str
    since: int | None

    @property
    def size(self) -> int:
        return 0 if self.plan is None else self.plan.size


class _Batch(NamedTuple):
    """An all-gather in flight: every step's two flags, then the summed-up steps' checksums.

    ``quiet`` is true when no flag was raised on this rank (no step inside
    ``no_sync()``, no failed checksum).
    """

    steps: list[_Step]
    quiet: bool
    out: list[torch.Tensor]
    work: Any


class _Filling:
    """The vector of the steps since the last all-gather, written step by step.

    The flags stay Python numbers until the all-gather; the checksums are written
    in place into views of a zeroed float64 buffer sized for a whole batch of
    steps (one allocation per batch, none per step; a step whose plan outgrows it
    opens another). A step that is not summed up costs no tensor operation.
    """

    __slots__ = ("chunks", "flags", "quiet", "steps", "used")

    def __init__(self) -> None:
        self.flags: list[float] = []
        self.chunks: list[torch.Tensor] = []
        self.used = 0
        self.steps: list[_Step] = []
        self.quiet = True

    def add(self, step: _Step, unsynced: bool, failed: bool) -> None:
        self.steps.append(step)
        self.flags += (float(unsynced), float(failed))
        if unsynced or failed:
            self.quiet = False

    def row(self, size: int, capacity: int) -> torch.Tensor:
        if not self.chunks or self.used + size > self.chunks[-1].numel():
            if self.chunks:
                self.chunks[-1] = self.chunks[-1][: self.used]
            self.chunks.append(torch.zeros(max(capacity, size), dtype=torch.float64))
            self.used = 0
        row = self.chunks[-1][self.used : self.used + size]
        self.used += size
        return row

    def vector(self) -> torch.Tensor:
        flags = torch.tensor(self.flags, dtype=torch.float64)
        if not self.chunks:
            return flags
        return torch.cat([flags, *self.chunks[:-1], self.chunks[-1][: self.used]])


class RankChecks:
    """The cross-rank half of a watch: its forward hook and the check after every step.

    Examples:
        >>> import torch, gradcheck_kit as gk
        >>> m = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(m.parameters(), lr=0.1)
        >>> with gk.watch_training(m, opt) as w:  # no process group: nothing to compare
        ...     pass
        >>> w.report.rank, w.report.world_size
        (None, None)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizers: Sequence[torch.optim.Optimizer],
        name_of: Callable[[torch.Tensor], str | None],
        *,
        ignored: Callable[[str], bool],
        buffers_may_differ: Callable[[str], bool],
        failed: Callable[[str, Exception], None],
        every: int = COMPARE_EVERY,
    ) -> None:
        self.ddp = distributed_model(model)
        self.inner = unwrap_model(model)
        self.optimizers = optimizers
        self.name_of = name_of
        self.ignored = ignored
        self.may_differ = buffers_may_differ
        self.failed = failed
        self.group = self.ddp.process_group if self.ddp is not None else None
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        # DDP re-broadcasts rank 0's buffers at every forward: between two forwards they
        # differ by design (each rank's batch statistics), so they are not compared.
        self.check_buffers = self.ddp is None or not getattr(self.ddp, "broadcast_buffers", True)
        self.unsynced = False  # the last forward (grad enabled) ran inside ddp.no_sync()
        self.explained: set[str] = set()  # parameters whose divergence a finding explains
        self.plans: dict[int, _Plan] = {}
        self.filling = _Filling()
        self.in_flight: _Batch | None = None
        self.batch_steps = BATCH_STEPS
        self.every = every
        self.last: dict[int, tuple[int, str]] = {}  # optimizer -> its last step, and label
        self.summed: dict[int, int] = {}  # optimizer -> its last step summed up
        self.handles: list[RemovableHandle] = []
        self.collectives = 0

    def open(self) -> None:
        if self.ddp is not None:
            self.handles.append(self.ddp.register_forward_pre_hook(self.on_forward))

    def remove_hooks(self) -> None:
        handles, self.handles = self.handles, []
        for handle in handles:
            handle.remove()

    def on_forward(self, module: nn.Module, args: Any) -> None:
        if torch.is_grad_enabled():
            self.unsynced = not getattr(module, "require_backward_grad_sync", True)

    # ------------------------------------------------------------ the vector

    def plan(self, index: int, label: str) -> _Plan:
        params = [p for group in self.optimizers[index].param_groups for p in group["params"]]
        key = tuple((id(p), p.requires_grad) for p in params)
        cached = self.plans.get(index)
        if cached is not None and cached.key == key and not self.check_buffers:
            return cached
        named: list[tuple[str, torch.Tensor]] = []
        for gi, group in enumerate(self.optimizers[index].param_groups):
            for pi, p in enumerate(group["params"]):
                name = self.name_of(p) or f"{label}.param_groups[{gi}]['params'][{pi}]"
                if not self.ignored(name):
                    named.append((name, p))
        buffers: list[tuple[str, torch.Tensor]] = []
        if self.check_buffers:
            buffers = [
                (name, b)
                for name, b in self.inner.named_buffers()
                if b is not None and not self.may_differ(name)
            ]
            if (
                cached is not None
                and cached.key == key
                and len(buffers) == len(cached.buffers)
                and all(b is c for (_, b), (_, c) in zip(buffers, cached.buffers, strict=True))
            ):
                return cached
        grads = [(name, p) for name, p in named if p.requires_grad]
        plan = _Plan(key, grads, named, buffers)
        self.plans[index] = plan
        return plan

    def write_checksums(self, plan: _Plan, row: torch.Tensor, *, grads: bool = True) -> bool:
        """Write this rank's checksums for one step into ``row``; False if that failed.

        The checksum of a tensor is its L2 norm (-1 for a gradient that is None,
        or for every gradient with ``grads=False``), all tensors in one
        multi-tensor kernel whose results are stacked and copied into ``row``:
        three operations whatever the model's size, and no host synchronisation.
        (A change that keeps every norm, such as a permutation or a sign flip, is
        not seen; a stale, skipped or edited tensor changes it.)
        """
        try:
            with torch.no_grad():
                given = [p.grad if grads else None for _, p in plan.grads]
                tensors = [g if g is not None and _normable(g) else _nothing(g) for g in given]
                tensors += plan.fixed if plan.plain else [_as_normable(t) for t in plan.fixed]
                # in each tensor's own dtype: asking the kernel for float64 converts every
                # tensor first (three times slower); the few norms are converted instead
                row.copy_(torch.stack(torch._foreach_norm(tensors, 2)))
                for j, g in enumerate(given):
                    if g is None:
                        row[j] = _MISSING
                return True
        except Exception as exc:  # still take part in the collective, or the others hang
            self.failed("a cross-rank checksum failed", exc)
            row.zero_()
            return False

    # ------------------------------------------------------------ after a step

    def after_step(
        self, index: int, step: int, label: str, log: FindingLog, location: Callable[[], str | None]
    ) -> None:
        """Note this step's flags, and sum up its tensors if it is one to compare.

        Every rank calls this after every step of every optimizer and starts the
        same collectives whatever happens here: one all-gather of the flags and
        checksums of the last ``BATCH_STEPS`` steps, in the background, judged
        when the next one starts (or when the watch ends). One small collective
        costs a few hundred microseconds between processes, as much as a small
        model's step: batched and overlapped, it costs a fraction of one per step.
        Reading every gradient and parameter costs about as much again (memory
        bound), so it is done for the first ``every`` steps and every ``every``-th
        step after, and for the last step at the end; a divergence persists (ranks
        never re-synchronise parameters), so it is found, within ``every`` steps.
        The flags (a step inside ``no_sync()``) travel for every step.
        """
        self.last[index] = (step, label)
        if step <= self.every or step % self.every == 0:
            self.add_summed(index, step, label)
        else:  # inline: most steps, and the cheapest path
            filling = self.filling
            filling.steps.append(_Step(None, step, label, None))
            if self.unsynced:
                filling.flags += _UNSYNCED
                filling.quiet = False
            else:
                filling.flags += _CLEAN
        self.unsynced = False
        if len(self.filling.steps) >= self.batch_steps:
            self.finish(log, location)
            self.launch()

    def add_summed(self, index: int, step: int, label: str, *, grads: bool = True) -> None:
        # Listing the tensors only reads names: should it fail, this rank cannot take part
        # in the collective, and raising in step() beats leaving the others hanging in it.
        plan = self.plan(index, label)
        info = _Step(plan, step, label, self.summed.get(index))
        self.summed[index] = step
        row = self.filling.row(plan.size, self.batch_steps * plan.size)
        written = self.write_checksums(plan, row, grads=grads)
        self.filling.add(info, self.unsynced and grads, not written)

    def launch(self) -> None:
        """Start the all-gather of the steps noted since the last one."""
        filling, self.filling = self.filling, _Filling()
        flat = filling.vector()
        out = [torch.empty_like(flat) for _ in range(self.world_size)]
        work = dist.all_gather(out, flat, group=self.group, async_op=True)
        self.collectives += 1
        self.in_flight = _Batch(filling.steps, filling.quiet, out, work)

    def close(self, log: FindingLog, timeout: timedelta) -> None:
        """At the end of the watch: judge the batch in flight, then gather and judge the rest.

        The state after each optimizer's last step is summed up here if that step
        was not (its parameters and buffers: the gradients may have been reset since).
        """
        self.finish(log, _nowhere, timeout)
        for index, (step, label) in sorted(self.last.items()):
            if self.summed.get(index) != step:
                self.add_summed(index, step, label, grads=False)
        if self.filling.steps:
            self.launch()
            self.finish(log, _nowhere, timeout)

    def finish(
        self,
        log: FindingLog,
        location: Callable[[], str | None],
        timeout: timedelta | None = None,
    ) -> None:
        """Wait for the all-gather in flight, if any, and note what differs at each step."""
        batch, self.in_flight = self.in_flight, None
        if batch is None:
            return
        try:
            if timeout is None:
                batch.work.wait()
            elif not batch.work.wait(timeout):
                raise TimeoutError(f"not complete after {timeout.total_seconds():g} s")
        except Exception as exc:
            first, last = batch.steps[0], batch.steps[-1]
            self.failed(
                f"the cross-rank check of steps {first.step} to {last.step} did not complete "
                "(did another rank leave the loop early?)",
                exc,
            )
            return
        try:
            mine = batch.out[0]
            if batch.quiet and all(torch.equal(mine, other) for other in batch.out[1:]):
                # the same bits on every rank and no flag raised (the headers match
                # this rank's): every step of a correct loop
                return
            gathered = torch.stack(batch.out)
            count = len(batch.steps)
            flags = gathered[:, : _HEADER * count].reshape(self.world_size, count, _HEADER)
            sums = gathered[:, _HEADER * count :].split([s.size for s in batch.steps], dim=1)
            for i, (info, numbers) in enumerate(zip(batch.steps, sums, strict=True)):
                self.judge(info, torch.cat([flags[:, i], numbers], dim=1), log, location)
        except Exception as exc:
            self.failed("the cross-rank judging failed", exc)

    def judge(
        self,
        pending: _Step,
        m: torch.Tensor,
        log: FindingLog,
        location: Callable[[], str | None],
    ) -> None:
        gathered = m.tolist()
        first = gathered[0]
        if not first[0] and not first[1] and all(row == first for row in gathered[1:]):
            return  # the same bits on every rank: the case of every step of a correct loop
        plan, step, label = pending.plan, pending.step, pending.label
        sums = m[:, _HEADER:]
        missing = sums == _MISSING
        present = (~missing).to(torch.float64)
        norms = sums.masked_fill(missing, 0.0)
        top = norms.abs().amax(0)
        differ = (present.amax(0) != present.amin(0)) | (
            (norms.amax(0) - norms.amin(0)) > _RTOL * top
        )
        nan = torch.isnan(norms)
        differ |= nan.any(0) & ~nan.all(0)
        flags = m[:, :_HEADER]
        summary = torch.cat([differ.any().view(1).to(torch.float64), flags.amax(0)]).tolist()
        if not any(summary):
            return
        if summary[2]:
            failed = [r for r, f in enumerate(flags[:, 1].tolist()) if f]
            self.failed(
                f"the cross-rank checksums failed on rank(s) {failed}",
                RuntimeError(f"step {step} of {label} was not compared across ranks"),
            )
            return
        bad = differ.nonzero().flatten().tolist()
        rows = torch.stack([present, norms], dim=2)  # ranks x tensors x 2
        here = location()
        g = len(plan.grads) if plan is not None else 0
        v = len(plan.values) if plan is not None else 0
        grad_bad = [j for j in bad if j < g]
        if summary[1]:
            no_sync = tuple(r for r, f in enumerate(flags[:, 0].tolist()) if f)
            log.add(
                "step_inside_no_sync",
                None,
                label,
                step,
                lambda: step_inside_no_sync_finding(
                    step=step,
                    optimizer=label,
                    ranks=no_sync,
                    differing=len(grad_bad) if plan is not None else None,
                    location=here,
                ),
            )
            # the parameters it moved apart are found at a later step: this is the cause
            for known in self.plans.values() if plan is None else (plan,):
                self.explained.update(name for name, _ in known.values)
        if plan is None:
            return
        # compared every `every` steps: a parameter or buffer first seen apart now may
        # have parted at any step since the last comparison
        since = pending.since if pending.since is not None and pending.since < step - 1 else None
        for j in bad:
            table = rows[:, j, :].tolist()
            odd = _odd_ranks([tuple(r) for r in table])
            values = {r: (row[1] if row[0] else None) for r, row in enumerate(table)}
            common = {
                "step": step,
                "optimizer": label,
                "ranks": odd,
                "world_size": self.world_size,
                "values": values,
                "location": here,
            }
            if j < g:
                name = plan.grads[j][0]
                self.explained.add(name)
                if summary[1]:
                    continue  # the no_sync step explains it
                log.add(
                    "grad_not_reduced",
                    name,
                    label,
                    step,
                    _bind(grad_not_reduced_finding, name, ddp=self.ddp is not None, **common),
                )
            elif j < g + v:
                name = plan.values[j - g][0]
                if name in self.explained:
                    continue  # a gradient that differed moved it: reported as the cause
                log.add(
                    "params_differ_across_ranks",
                    name,
                    label,
                    step,
                    _bind(params_differ_finding, name, since=since, **common),
                )
            else:
                name = plan.buffers[j - g - v][0]
                log.add(
                    "buffers_differ_across_ranks",
                    name,
                    label,
                    step,
                    _bind(buffers_differ_finding, name, since=since, **common),
                )


def _bind(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
    return lambda: fn(*args, **kwargs)
