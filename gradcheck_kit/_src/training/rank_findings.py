"""The findings of the cross-rank checks of a distributed (DDP) loop, as text.

:mod:`.across_ranks` gathers one small vector of checksums per optimizer step
from every rank and decides what differs; the functions here phrase it. Every
rank gets the same gathered numbers, so every rank words a cross-rank finding
the same way. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .findings import TrainingFinding

__all__ = [
    "buffers_differ_finding",
    "grad_not_reduced_finding",
    "params_differ_finding",
    "ranks_text",
    "step_inside_no_sync_finding",
]

# rank -> the L2 norm of one tensor on that rank; None: it has no such tensor (no .grad).
RankValues = Mapping[int, float | None]


def ranks_text(ranks: Sequence[int]) -> str:
    """``"rank 1"``, ``"ranks 0 and 1"``, ``"ranks 0, 2 and 3"``.

    Examples:
        >>> ranks_text([1]), ranks_text([0, 1]), ranks_text([0, 2, 3])
        ('rank 1', 'ranks 0 and 1', 'ranks 0, 2 and 3')
    """
    shown = [str(r) for r in ranks]
    if len(shown) == 1:
        return f"rank {shown[0]}"
    return f"ranks {', '.join(shown[:-1])} and {shown[-1]}"


def _differ(ranks: Sequence[int], world_size: int) -> str:
    if len(ranks) == world_size:
        return f"{ranks_text(ranks)} differ"
    others = [r for r in range(world_size) if r not in ranks]
    verb = "differs" if len(ranks) == 1 else "differ"
    return f"{ranks_text(ranks)} {verb} from {ranks_text(others)}"


def _values(values: RankValues) -> str:
    parts = []
    for rank in sorted(values):
        value = values[rank]
        if value is None:
            parts.append(f"rank {rank}: none")
        else:
            parts.append(f"rank {rank}: norm {value:.6g}")
    return "; ".join(parts)


def _since(since: int | None) -> str:
    if since is None:
        return ""
    return f" (compared every few steps: the ranks agreed after step {since})"


def params_differ_finding(
    parameter: str,
    *,
    step: int,
    optimizer: str,
    ranks: Sequence[int],
    world_size: int,
    values: RankValues,
    location: str | None,
    since: int | None = None,
) -> TrainingFinding:
    """``params_differ_across_ranks``: after a step, a parameter is not the same on every rank.

    Examples:
        >>> f = params_differ_finding("fc.weight", step=3, optimizer="SGD", ranks=(0, 1),
        ...                           world_size=2, values={0: 2.0, 1: 2.5},
        ...                           location=None)
        >>> f.kind, f.ranks
        ('params_differ_across_ranks', (0, 1))
        >>> print(f.found)  # doctest: +ELLIPSIS
        after step 3 of SGD 'fc.weight' is not the same on every rank: ranks 0 and 1 differ (...)
        >>> f.found.endswith("(rank 0: norm 2; rank 1: norm 2.5)")
        True
    """
    return TrainingFinding(
        "params_differ_across_ranks",
        parameter,
        expected="every rank holds the same parameters after every optimizer step (DDP "
        "broadcasts them once, at construction, and keeps them equal by averaging gradients)",
        found=f"after step {step} of {optimizer} {parameter!r} is not the same on every rank: "
        f"{_differ(ranks, world_size)} ({_values(values)}){_since(since)}",
        cause="the parameter was changed on some ranks only (an in-place edit, "
        "load_state_dict or a re-initialisation under `if rank == 0:`), or ranks started "
        "from different values (a checkpoint loaded on one rank after DDP was built)",
        fix="change parameters on every rank alike: load the checkpoint on every rank (or "
        "before wrapping in DistributedDataParallel, which broadcasts rank 0's), and keep "
        "rank-only code (logging, saving) read-only",
        step=step,
        optimizer=optimizer,
        location=location,
        ranks=tuple(ranks),
    )


def grad_not_reduced_finding(
    parameter: str,
    *,
    step: int,
    optimizer: str,
    ranks: Sequence[int],
    world_size: int,
    values: RankValues,
    ddp: bool,
    location: str | None,
) -> TrainingFinding:
    """``grad_not_reduced``: a step applied a gradient that is not the same on every rank.

    Examples:
        >>> f = grad_not_reduced_finding("head.bias", step=1, optimizer="SGD", ranks=(0, 1),
        ...                              world_size=2, values={0: 1.0, 1: None},
        ...                              ddp=False, location=None)
        >>> f.kind, f.found.endswith("(rank 0: norm 1; rank 1: none)")
        ('grad_not_reduced', True)
    """
    if ddp:
        cause = (
            "DDP did not all-reduce it: the parameter is not used in the forward pass on "
            "some ranks (or is used outside the DDP module's forward), or its .grad was "
            "changed on some ranks after backward() or by a gradient hook on some ranks only"
        )
        fix = (
            "use every parameter in the DDP module's forward on every rank (or pass "
            "find_unused_parameters=True), and change gradients, if at all, alike on every rank"
        )
    else:
        cause = (
            "the gradients are averaged by hand and this parameter is left out (a loop over "
            "some of the parameters, or a parameter added later), or its .grad is changed on "
            "some ranks only"
        )
        fix = (
            "all-reduce the gradient of every parameter that requires grad (for p in "
            "model.parameters(): dist.all_reduce(p.grad); p.grad /= world_size), or wrap "
            "the model in torch.nn.parallel.DistributedDataParallel"
        )
    return TrainingFinding(
        "grad_not_reduced",
        parameter,
        expected="each optimizer step applies the same gradient on every rank (averaged "
        "over the ranks by an all-reduce)",
        found=f"step {step} of {optimizer} applied a gradient of {parameter!r} that is not "
        f"the same on every rank: {_differ(ranks, world_size)} ({_values(values)})",
        cause=cause,
        fix=fix,
        step=step,
        optimizer=optimizer,
        location=location,
        ranks=tuple(ranks),
    )


def step_inside_no_sync_finding(
    *,
    step: int,
    optimizer: str,
    ranks: Sequence[int],
    differing: int | None,
    location: str | None,
) -> TrainingFinding:
    """``step_inside_no_sync``: a step applied gradients from a backward DDP did not synchronise.

    Examples:
        >>> f = step_inside_no_sync_finding(step=2, optimizer="SGD", ranks=(0, 1),
        ...                                 differing=4, location=None)
        >>> f.kind, f.parameter
        ('step_inside_no_sync', None)
    """
    found = (
        f"the last forward pass before step {step} of {optimizer} ran inside "
        f"model.no_sync() on {ranks_text(ranks)}, so its backward was not all-reduced"
    )
    if differing is None:
        pass  # a step whose gradients were not summed up: nothing known of them
    elif differing:
        found += (
            f": the step applied gradients of {differing} parameter"
            f"{'s' if differing != 1 else ''} that are not the same on every rank"
        )
    else:
        found += " (the gradients happen to agree, as when every rank has the same data)"
    return TrainingFinding(
        "step_inside_no_sync",
        None,
        expected="gradients accumulated under model.no_sync() are synchronised by a last "
        "backward outside no_sync() before the optimizer steps",
        found=found,
        cause="optimizer.step() is called inside the `with model.no_sync():` block, or "
        "every micro-batch (the last one too) runs under no_sync()",
        fix="run the last micro-batch of each accumulation window outside no_sync() "
        "(`ctx = model.no_sync() if i < k - 1 else contextlib.nullcontext()`), and call "
        "optimizer.step() after it, outside the block",
        step=step,
        optimizer=optimizer,
        location=location,
        ranks=tuple(ranks),
    )


def buffers_differ_finding(
    buffer: str,
    *,
    step: int,
    optimizer: str,
    ranks: Sequence[int],
    world_size: int,
    values: RankValues,
    location: str | None,
    since: int | None = None,
) -> TrainingFinding:
    """``buffers_differ_across_ranks``: after a step, a buffer is not the same on every rank.

    Examples:
        >>> f = buffers_differ_finding("bn.running_mean", step=1, optimizer="SGD",
        ...                            ranks=(0, 1), world_size=2,
        ...                            values={0: 0.2, 1: 0.4}, location=None)
        >>> f.kind, f.parameter
        ('buffers_differ_across_ranks', 'bn.running_mean')
    """
    return TrainingFinding(
        "buffers_differ_across_ranks",
        buffer,
        expected="buffers (BatchNorm running statistics) are the same on every rank, "
        "unless declared with buffers_may_differ",
        found=f"after step {step} of {optimizer} buffer {buffer!r} is not the same on every "
        f"rank: {_differ(ranks, world_size)} ({_values(values)}){_since(since)}",
        cause="each rank updates it from its own batches and nothing synchronises it: "
        "BatchNorm (not SyncBatchNorm) with DistributedDataParallel(broadcast_buffers=False), "
        "or a model without DDP; the rank that saves the checkpoint decides the statistics",
        fix="convert with torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) (on GPUs), keep "
        "DDP's buffer broadcast (broadcast_buffers/forward_sync_buffers=True), or, if "
        "per-rank statistics are intended, pass "
        f"buffers_may_differ=[{buffer!r}]",
        step=step,
        optimizer=optimizer,
        location=location,
        ranks=tuple(ranks),
    )
