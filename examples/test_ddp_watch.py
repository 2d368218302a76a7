"""Watching a DistributedDataParallel training loop on every rank, as it trains.

`@pytest.mark.gradcheck(world_size=2)` runs each test below on 2 local ranks
(gloo, on the CPU) inside an initialised process group, so the loop is written
exactly as in a real DDP script. `watch_training(model, optimizer)` around it, on
every rank, checks what each rank does (a missing `zero_grad()`, ...) and
compares the ranks: one L2 norm per gradient, parameter and buffer travels in a
background all-gather (never the tensors), and whether each step's forward ran
inside `no_sync()`. Every rank reports the same cross-rank findings, naming the
ranks that differ and the step.

The correct loop accumulates over two micro-batches with `no_sync()` and clips
the gradients; the planted bugs are a step taken inside `no_sync()`, a weight
changed on rank 0 only, a hand-written all-reduce that forgets a layer, and
BatchNorm statistics left per rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import gradcheck_kit as gk
from gradcheck_kit.results import TrainingFinding

STEPS = 40
MICRO = 2  # micro-batches per optimizer step


def make_net() -> nn.Sequential:
    torch.manual_seed(0)  # the same start on every rank (DDP broadcasts rank 0's anyway)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))


def shard() -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per step, this rank's micro-batches: every world_size-th sample, as DistributedSampler."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(1234)  # the same data set on every rank
    x = torch.randn(STEPS * MICRO * 8 * world_size, 6, generator=g)
    y = torch.randn(x.shape[0], 2, generator=g)
    mine = torch.arange(rank, x.shape[0], world_size)
    for step in range(STEPS):
        yield [
            (x[mine[i : i + 8]], y[mine[i : i + 8]])
            for i in range(step * MICRO * 8, (step + 1) * MICRO * 8, 8)
        ]


def train(
    model: DDP,
    optimizer: torch.optim.Optimizer,
    *,
    sync_last_micro_batch: Callable[[int], bool] = lambda step: True,
    after_step: Callable[[int], None] = lambda step: None,
) -> None:
    """The loop: accumulate over micro-batches without syncing but the last, clip, step."""
    for step, micro_batches in enumerate(shard(), start=1):
        optimizer.zero_grad()
        for i, (x, y) in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1 and sync_last_micro_batch(step)
            with contextlib.nullcontext() if sync else model.no_sync():
                loss = nn.functional.mse_loss(model(x), y) / len(micro_batches)
                loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        after_step(step)


def findings(watcher: gk.TrainingWatcher) -> tuple[TrainingFinding, ...]:
    assert watcher.report is not None
    return watcher.report.findings


def kinds(watcher: gk.TrainingWatcher) -> list[tuple[str, str | None, int | None]]:
    return [(f.kind, f.parameter, f.step) for f in findings(watcher)]


@pytest.mark.gradcheck(world_size=2)
def test_a_correct_ddp_loop_passes() -> None:
    model = DDP(make_net())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with gk.watch_training(model, optimizer):  # raises TrainingLoopError on any finding
        train(model, optimizer)


@pytest.mark.gradcheck(world_size=2)
def test_a_step_inside_no_sync_is_named_with_its_step() -> None:
    model = DDP(make_net())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gk.watch_training(model, optimizer, on_error="record") as watcher:
        # at step 5 the last micro-batch also runs under no_sync(): nothing is all-reduced
        train(model, optimizer, sync_last_micro_batch=lambda step: step != 5)
    assert kinds(watcher) == [("step_inside_no_sync", None, 5)]
    (finding,) = findings(watcher)
    assert finding.ranks == (0, 1)
    assert "outside the block" in finding.fix


@pytest.mark.gradcheck(world_size=2)
def test_a_weight_changed_on_rank_0_only_is_found_on_every_rank() -> None:
    model = DDP(make_net())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def edit_on_rank_0(step: int) -> None:
        if step == 20 and dist.get_rank() == 0:  # e.g. a re-initialisation under `if rank == 0`
            with torch.no_grad():
                model.module[0].bias.zero_()

    with gk.watch_training(model, optimizer, on_error="record") as watcher:
        train(model, optimizer, after_step=edit_on_rank_0)
    # the tensors are compared at steps 1-16, 32 and at the end (compare_every=16): the
    # change after step 20 is found at step 32, saying when the ranks last agreed
    assert kinds(watcher) == [("params_differ_across_ranks", "0.bias", 32)]
    (finding,) = findings(watcher)
    assert "the ranks agreed after step 16" in finding.found
    assert "if rank == 0" in finding.cause


class SkipsTheHead(nn.Module):
    """A hand-written data-parallel wrapper whose gradient all-reduce forgets the head."""

    def __init__(self, net: nn.Sequential) -> None:
        super().__init__()
        self.net = net

    def average_gradients(self) -> None:
        for name, p in self.net.named_parameters():
            if not name.startswith("2.") and p.grad is not None:  # the bug: skips layer 2
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


@pytest.mark.gradcheck(world_size=2)
def test_a_hand_written_all_reduce_that_forgets_a_layer_is_grad_not_reduced() -> None:
    model = SkipsTheHead(make_net())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gk.watch_training(model, optimizer, on_error="record") as watcher:
        for micro_batches in shard():
            optimizer.zero_grad()
            for x, y in micro_batches:
                (nn.functional.mse_loss(model(x), y) / len(micro_batches)).backward()
            model.average_gradients()
            optimizer.step()
    # named as the cause, at the first step; the parameters it moves apart are not repeated
    assert kinds(watcher) == [
        ("grad_not_reduced", "net.2.weight", 1),
        ("grad_not_reduced", "net.2.bias", 1),
    ]


@pytest.mark.gradcheck(world_size=2)
def test_per_rank_batchnorm_statistics_are_named_and_can_be_declared() -> None:
    def model() -> DDP:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Linear(16, 2))
        # DDP's buffer broadcast off, and plain BatchNorm: each rank keeps its own statistics
        return DDP(net, broadcast_buffers=False)

    ddp = model()
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    with gk.watch_training(ddp, optimizer, on_error="record") as watcher:
        train(ddp, optimizer)
    assert kinds(watcher) == [
        ("buffers_differ_across_ranks", "1.running_mean", 1),
        ("buffers_differ_across_ranks", "1.running_var", 1),
    ]
    assert "SyncBatchNorm" in findings(watcher)[0].fix

    ddp = model()
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    # intended (each rank evaluates with its own statistics): declared, not reported
    with gk.watch_training(ddp, optimizer, buffers_may_differ=["1.*"]):
        train(ddp, optimizer)
