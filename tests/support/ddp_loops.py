"""DDP training loops, correct and with one planted bug each, watched on every rank.

:func:`watched_loops` runs every scenario in turn on each rank (the same order on
every rank: the collectives must match) and returns, per scenario, what the
rank's watcher reported as plain data, so one launch of the ranks serves every
test of ``tests/test_distributed_watch.py``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import gradcheck_kit as gk

STEPS = 68  # more than across_ranks.BATCH_STEPS: a batch in the loop, the rest at the end
MICRO = 2  # micro-batches per optimizer step
BATCH = 8


class CpuSyncBatchNorm(nn.BatchNorm1d):
    """SyncBatchNorm's running statistics on the CPU (torch's needs GPUs): from every rank's batch.

    The output is normalised with the local batch's statistics, as BatchNorm1d does; the
    running mean and variance are updated from the statistics of all ranks' batches
    together, so they agree across ranks by construction, as SyncBatchNorm's do.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            out: torch.Tensor = super().forward(x)
            return out
        with torch.no_grad():
            stats = torch.cat([x.sum(0), (x * x).sum(0), torch.tensor([float(x.shape[0])])])
            dist.all_reduce(stats)
            width = x.shape[1]
            n = stats[-1]
            mean = stats[:width] / n
            var = stats[width : 2 * width] / n - mean * mean
            assert self.running_mean is not None and self.running_var is not None
            self.running_mean.mul_(1 - 0.1).add_(mean, alpha=0.1)
            self.running_var.mul_(1 - 0.1).add_(var * n / (n - 1), alpha=0.1)
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
        return nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class Net(nn.Module):
    """A small MLP with a batch norm: fc1 -> bn -> relu -> head."""

    def __init__(self, bn: type[nn.BatchNorm1d] = nn.BatchNorm1d) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.bn = bn(12)
        self.head = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.fc1(x))))


def _ddp(net: nn.Module, *, sync_buffers: bool = True, **kwargs: Any) -> DDP:
    """Wrap ``net``; ``sync_buffers=False`` turns DDP's buffer broadcast at forward off."""
    if not sync_buffers:
        params = inspect.signature(DDP).parameters
        key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
        kwargs[key] = False
    return DDP(net, **kwargs)


def _shard(rank: int, world_size: int) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per step, this rank's micro-batches: a DistributedSampler-like shard of one data set."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(STEPS * MICRO * BATCH * world_size, 6, generator=g)
    y = torch.randn(x.shape[0], 2, generator=g)
    mine = torch.arange(rank, x.shape[0], world_size)  # rank::world_size, as DistributedSampler
    for step in range(STEPS):
        yield [
            (x[mine[i : i + BATCH]], y[mine[i : i + BATCH]])
            for i in range(step * MICRO * BATCH, (step + 1) * MICRO * BATCH, BATCH)
        ]


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def _ddp_loop(
    rank: int,
    world_size: int,
    model: DDP,
    *,
    set_to_none: bool = True,
    last_micro_synced: Callable[[int], bool] = lambda step: True,
    between_steps: Callable[[int], None] | None = None,
    zero_grad: Callable[[int], bool] = lambda rank: True,
    **options: Any,
) -> gk.TrainingWatcher:
    """The correct loop unless told otherwise: no_sync accumulation, clipping, SGD."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    watcher = gk.watch_training(model, opt, on_error="record", **options)
    with watcher:
        for step, micro in enumerate(_shard(rank, world_size)):
            if zero_grad(rank):
                opt.zero_grad(set_to_none=set_to_none)
            for i, (x, y) in enumerate(micro):
                last = i == len(micro) - 1
                synced = last and last_micro_synced(step)
                with contextlib.nullcontext() if synced else model.no_sync():
                    (_loss(model, x, y) / len(micro)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if between_steps is not None:
                between_steps(step)
    return watcher


def _hand_rolled_loop(
    rank: int, world_size: int, *, skip: str, **options: Any
) -> gk.TrainingWatcher:
    """No DDP: gradients averaged by hand, every parameter but ``skip``."""
    torch.manual_seed(0)
    net = Net(CpuSyncBatchNorm)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    watcher = gk.watch_training(net, opt, on_error="record", **options)
    with watcher:
        for micro in _shard(rank, world_size):
            opt.zero_grad()
            for x, y in micro:
                (_loss(net, x, y) / len(micro)).backward()
            for name, p in net.named_parameters():
                if name != skip and p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world_size
            opt.step()
    return watcher


def _scenarios(rank: int, world_size: int) -> dict[str, Callable[[], gk.TrainingWatcher]]:
    def model(bn: type[nn.BatchNorm1d] = CpuSyncBatchNorm, **kwargs: Any) -> DDP:
        torch.manual_seed(0)
        return _ddp(Net(bn), **kwargs)

    def edit_on_rank_zero(step: int, after: int = 2) -> None:
        if rank == 0 and step == after - 1:  # `step` counts from 0
            with torch.no_grad():
                edited.module.fc1.bias.add_(0.5)

    edited = model(sync_buffers=False)
    edited_late = model(sync_buffers=False)

    def edit_late_on_rank_zero(step: int) -> None:
        if rank == 0 and step == 19:  # after step 20: between two comparisons (16 and 32)
            with torch.no_grad():
                edited_late.module.fc1.bias.add_(0.5)

    def load_on_rank_zero() -> gk.TrainingWatcher:
        ddp = model(sync_buffers=False)
        if rank == 0:  # a checkpoint loaded on rank 0 only, after DDP broadcast at wrapping
            state = {
                k: v + 0.25 if k == "head.weight" else v for k, v in ddp.module.state_dict().items()
            }
            ddp.module.load_state_dict(state)
        return _ddp_loop(rank, world_size, ddp)

    return {
        # SyncBatchNorm-like statistics, DDP's buffer broadcast off: buffers compared, equal
        "correct": lambda: _ddp_loop(rank, world_size, model(sync_buffers=False)),
        # plain BatchNorm re-broadcast by DDP at forward; zero_grad keeping tensors; .grad
        # as views of DDP's buckets
        "correct_broadcast": lambda: _ddp_loop(
            rank,
            world_size,
            model(nn.BatchNorm1d, gradient_as_bucket_view=True),
            set_to_none=False,
        ),
        "edit_on_rank_0": lambda: _ddp_loop(
            rank, world_size, edited, between_steps=edit_on_rank_zero
        ),
        "load_on_rank_0": load_on_rank_zero,
        "edit_late_on_rank_0": lambda: _ddp_loop(
            rank, world_size, edited_late, between_steps=edit_late_on_rank_zero
        ),
        "hand_rolled": lambda: _hand_rolled_loop(rank, world_size, skip="head.bias"),
        "hand_rolled_every_step": lambda: _hand_rolled_loop(
            rank, world_size, skip="head.bias", compare_every=1
        ),
        "step_inside_no_sync": lambda: _ddp_loop(
            rank, world_size, model(sync_buffers=False), last_micro_synced=lambda step: False
        ),
        # only step 20 (counting from 1), which is not one whose tensors are compared
        "step_20_inside_no_sync": lambda: _ddp_loop(
            rank, world_size, model(sync_buffers=False), last_micro_synced=lambda step: step != 19
        ),
        "bn_unsynced": lambda: _ddp_loop(
            rank, world_size, model(nn.BatchNorm1d, sync_buffers=False)
        ),
        "bn_unsynced_allowed": lambda: _ddp_loop(
            rank,
            world_size,
            model(nn.BatchNorm1d, sync_buffers=False),
            buffers_may_differ=("bn.*",),
        ),
        "no_zero_grad_on_rank_1": lambda: _ddp_loop(
            rank, world_size, model(sync_buffers=False), zero_grad=lambda r: r != 1
        ),
        "edit_on_rank_0_not_distributed": lambda: _ddp_loop(
            rank,
            world_size,
            model(sync_buffers=False),
            between_steps=edit_on_rank_zero,
            distributed=False,
        ),
    }


def watched_loops(rank: int, world_size: int) -> dict[str, dict[str, Any]]:
    """Every scenario on this rank: its findings, report and the all-gathers the watcher made."""
    out: dict[str, dict[str, Any]] = {}
    real_all_gather = dist.all_gather
    gathered: list[int] = []

    def counting_all_gather(tensors: Any, tensor: torch.Tensor, *args: Any, **kw: Any) -> Any:
        gathered.append(tensor.numel())
        return real_all_gather(tensors, tensor, *args, **kw)

    dist.all_gather = counting_all_gather  # type: ignore[assignment]
    try:
        for name, run in _scenarios(rank, world_size).items():
            gathered.clear()
            report = run().report
            assert report is not None
            out[name] = {
                "findings": [(f.kind, f.parameter, f.step, f.ranks) for f in report.findings],
                "report": report.to_dict(),
                "summary": report.summary(),
                "gathers": list(gathered),
            }
    finally:
        dist.all_gather = real_all_gather
    return out
