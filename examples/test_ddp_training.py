"""DistributedDataParallel: the ranks, each on its shard, against one process on the whole batch.

`check_ddp_gradients` starts 2 local ranks (gloo, on the CPU) that run your
training step on their part of a global batch, and one process that runs the
same step on the whole batch. With a mean loss, DDP's average over ranks is the
whole batch's gradient, so every gradient and every weight after the step must
agree. Each planted bug below breaks that in its own way, and the check names it:
a loss summed or divided twice (a factor of the world size), a step inside
`no_sync()`, a weight changed on rank 0 only, every rank reading the same
samples, every rank drawing the same dropout masks, a gradient hook on rank 0
only (before the all-reduce there, after it elsewhere), a hand-written all-reduce
that forgets a layer, a layer that only rank 0 uses, and plain BatchNorm (each
rank normalises its own shard).

Everything the ranks run is defined at module level: each rank imports it by name.
Under torchrun (several hosts), call the same check on every rank: see the README.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import gradcheck_kit as gk

pytestmark = pytest.mark.gradcheck


class AllReduceSum(torch.autograd.Function):
    """A sum over ranks whose backward sums the gradients over ranks too."""

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the whole global batch, on the CPU.

    torch's `nn.SyncBatchNorm` runs on GPUs only; this one all-reduces the batch
    statistics with an all-reduce that autograd sees, so that the gradient flows
    through the other ranks' samples as well.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), float(x.shape[0]), dtype=x.dtype)
        total = AllReduceSum.apply(torch.cat([x.sum(0), (x * x).sum(0), count]))
        n = total[-1]
        mean = total[:channels] / n
        var = total[channels : 2 * channels] / n - mean * mean
        assert self.running_mean is not None and self.running_var is not None
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(m * mean)
            self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
        normed = (x - mean) / torch.sqrt(var + self.eps)
        return normed * self.weight + self.bias


class Net(nn.Module):
    def __init__(self, norm: type[nn.Module] | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.norm = norm(32) if norm is not None else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.relu(self.norm(self.fc1(x)))))


class TwoHeads(Net):
    """A second head that only rank 0 runs: it takes no part in the others' forward."""

    def __init__(self) -> None:
        super().__init__()
        self.aux = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if dist.get_rank() == 0:
            out = out + self.aux(F.relu(self.fc1(x)))
        return out


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: 32 samples, 16 a rank on 2 ranks."""
    return torch.randn(32, 20), torch.randn(32, 1)


def shard_per_micro_batch(batch: Any, rank: int, world_size: int) -> Any:
    """Rank `rank`'s part of each of the 2 micro-batches of the global batch.

    With BatchNorm, which samples share a micro-batch matters: the single process
    splits the global batch in 2 micro-batches, so each rank takes its part of
    each of them (a DistributedSampler deals every step's global batch likewise).
    """

    def one(t: torch.Tensor) -> torch.Tensor:
        micro = t.chunk(2)
        return torch.cat([m.chunk(world_size)[rank] for m in micro])

    return tuple(one(t) for t in batch)


def make_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def train_step(model: Any, batch: Any, optimizer: torch.optim.Optimizer) -> None:
    """The correct step: 2 micro-batches (the first under no_sync), clipping, one step."""
    x, y = batch
    half = x.shape[0] // 2
    optimizer.zero_grad()
    with model.no_sync():  # accumulate locally: no all-reduce for this micro-batch
        (F.mse_loss(model(x[:half]), y[:half]) / 2).backward()
    (F.mse_loss(model(x[half:]), y[half:]) / 2).backward()  # this one all-reduces the sum
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()


# --------------------------------------------------------------------- planted bugs


def summed_loss_step(model: Any, batch: Any, optimizer: torch.optim.Optimizer) -> None:
    x, y = batch
    optimizer.zero_grad()
    F.mse_loss(model(x), y, reduction="sum").backward()  # BUG: DDP averages over ranks
    optimizer.step()


def divided_twice_step(model: Any, batch: Any, optimizer: torch.optim.Optimizer) -> None:
    x, y = batch
    optimizer.zero_grad()
    (F.mse_loss(model(x), y) / dist.get_world_size()).backward()  # BUG: DDP divides already
    optimizer.step()


def step_inside_no_sync(model: Any, batch: Any, optimizer: torch.optim.Optimizer) -> None:
    x, y = batch
    half = x.shape[0] // 2
    optimizer.zero_grad()
    with model.no_sync():
        F.mse_loss(model(x[:half]), y[:half]).backward()
        optimizer.step()  # BUG: these gradients were never all-reduced
    optimizer.zero_grad()
    F.mse_loss(model(x[half:]), y[half:]).backward()
    optimizer.step()


def rank_zero_edit_step(model: Any, batch: Any, optimizer: torch.optim.Optimizer) -> None:
    if dist.get_rank() == 0:  # BUG: e.g. a warm start loaded on rank 0 only, after DDP(...)
        with torch.no_grad():
            model.module.fc2.weight.mul_(1.5)
    train_step(model, batch, optimizer)


def every_rank_reads_the_first_part(batch: Any, rank: int, world_size: int) -> Any:
    # BUG: a split (or a sampler) that does not use the rank
    return tuple(t[: t.shape[0] // world_size] for t in batch)


def seeded_model() -> nn.Module:
    torch.manual_seed(0)  # BUG: the same seed on every rank, after which dropout draws
    return Net(dropout=0.3)


def seeded_per_rank_model() -> nn.Module:
    # gradcheck_kit seeds each rank with seed + rank before make_model; DDP then copies
    # rank 0's weights to every rank, and the dropout masks differ between ranks
    return Net(dropout=0.3)


def replicated_model() -> nn.Module:
    """For a hand-written all-reduce: rank 0's weights on every rank, as DDP would copy them."""
    net = Net()
    for p in net.parameters():
        dist.broadcast(p.data, src=0)
    return net


def forgetful_all_reduce_step(model: Any, batch: Any, optimizer: torch.optim.Optimizer) -> None:
    x, y = batch
    optimizer.zero_grad()
    F.mse_loss(model(x), y).backward()
    for name, p in model.named_parameters():
        if name.startswith("fc1"):  # BUG: only the first layer is averaged
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
    optimizer.step()


def hook_on_rank_zero_step(model: Any, batch: Any, optimizer: torch.optim.Optimizer) -> None:
    weight = model.module.fc1.weight
    # BUG: rank 0 scales fc1's gradient in a hook, before DDP's all-reduce; the other
    # ranks scale it after the reduction
    handle = weight.register_hook(lambda g: g * 0.5) if dist.get_rank() == 0 else None
    x, y = batch
    optimizer.zero_grad()
    F.mse_loss(model(x), y).backward()
    if handle is None:
        weight.grad *= 0.5
    else:
        handle.remove()
    optimizer.step()


def test_a_correct_ddp_loop_passes() -> None:
    result = gk.assert_ddp_gradients(
        functools.partial(Net, norm=CpuSyncBatchNorm),
        make_batch,
        step=train_step,
        shard=shard_per_micro_batch,
        make_optimizer=make_optimizer,
        steps=3,
    )
    # every gradient, weight and BatchNorm statistic of both ranks matches one process
    assert result.compared_with_reference and result.optimizer_steps == 3
    assert {leaf.what for leaf in result.leaves} == {"grad", "param", "buffer"}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nn.SyncBatchNorm needs 2 GPUs (nccl)")
def test_a_correct_ddp_loop_with_torch_sync_batchnorm_on_gpus() -> None:
    gk.assert_ddp_gradients(
        functools.partial(gpu_model, norm=nn.SyncBatchNorm),
        make_batch,
        step=train_step,
        shard=shard_per_micro_batch,
        backend="nccl",
    )


def gpu_model(norm: type[nn.Module]) -> nn.Module:
    rank = dist.get_rank() if dist.get_world_size() > 1 else 0
    return Net(norm=norm).to(f"cuda:{rank}")


def test_dropout_with_a_seed_per_rank_passes() -> None:
    result = gk.assert_ddp_gradients(seeded_per_rank_model, make_batch, step=train_step)
    assert not result.compared_with_reference  # random masks: the ranks are compared


@pytest.mark.parametrize(
    ("options", "cause"),
    [
        ({"step": summed_loss_step}, "1/world_size (×0.5)"),
        ({"step": divided_twice_step}, "divided by the world size on top of DDP's averaging"),
        ({"step": step_inside_no_sync}, "inside a no_sync() window"),
        ({"step": rank_zero_edit_step}, "changed on some ranks only"),
        ({"shard": every_rank_reads_the_first_part}, "ranks 0 and 1 got the same batch"),
        ({"make_model": seeded_model}, "dropout masks (and every random draw) are identical"),
        ({"step": hook_on_rank_zero_step}, "gradient hooks are not the same on every rank"),
        (
            {"make_model": replicated_model, "step": forgetful_all_reduce_step, "wrap": False},
            "['fc2.bias', 'fc2.weight'] differ between ranks",
        ),
        ({"make_model": TwoHeads}, "['aux.weight', 'aux.bias'] got no gradient on this rank"),
        ({"make_model": functools.partial(Net, norm=nn.BatchNorm1d)}, "SyncBatchNorm"),
    ],
    ids=[
        "summed-loss",
        "divided-twice",
        "step-in-no_sync",
        "weights-changed-on-rank-0",
        "same-batch",
        "same-seed",
        "hook-on-rank-0-only",
        "all-reduce-forgets-a-layer",
        "unused-on-rank-1",
        "per-rank-batchnorm",
    ],
)
def test_each_planted_bug_is_caught(options: dict[str, Any], cause: str) -> None:
    make_model = options.pop("make_model", Net)
    with pytest.raises(gk.errors.DdpGradientError, match=None) as err:
        gk.assert_ddp_gradients(
            make_model, make_batch, step=options.pop("step", train_step), **options
        )
    assert cause in str(err.value)
