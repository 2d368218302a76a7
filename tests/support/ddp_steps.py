"""Models, batches and training steps for check_ddp_gradients tests: each rank imports them."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """A small MLP; ``extra`` adds a head that only rank 0 uses, ``dropout`` a dropout."""

    def __init__(self, extra: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 1)
        self.drop = nn.Dropout(dropout)
        self.extra = nn.Linear(8, 1) if extra else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.tanh(self.fc1(x)))
        out = self.fc2(h)
        if self.extra is not None and dist.get_rank() == 0:
            out = out + self.extra(h)
        return out


class FrozenIntegerFirst(nn.Module):
    """Net with a frozen integer parameter registered first, as PyTorch's own DDP test Net."""

    def __init__(self) -> None:
        super().__init__()
        self.no_grad_param = nn.Parameter(torch.tensor([2, 2]), requires_grad=False)
        self.net = Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(16, 6), torch.randn(16, 1)


def odd_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(15, 6), torch.randn(15, 1)


def dropout_net_seeded_alike() -> nn.Module:
    """Every rank seeds with the same number: the same dropout masks on every rank."""
    torch.manual_seed(0)
    return Net(dropout=0.5)


def dropout_net() -> nn.Module:
    return Net(dropout=0.5)


def broadcast_net() -> nn.Module:
    """For a hand-written all-reduce: rank 0's weights copied to every rank, as DDP would."""
    net = Net()
    for p in net.parameters():
        dist.broadcast(p.data, 0)
    return net


def batchnorm_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))


def unused_ok_net() -> nn.Module:
    return nn.parallel.DistributedDataParallel(Net(extra=True), find_unused_parameters=True)


def accumulate_clip_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    """Correct: two micro-batches, the first under no_sync(), then clipping and one step."""
    x, y = batch
    opt.zero_grad()
    half = x.shape[0] // 2
    with model.no_sync():
        (F.mse_loss(model(x[:half]), y[:half]) / 2).backward()
    (F.mse_loss(model(x[half:]), y[half:]) / 2).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def _call(model: Any) -> int:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    inner.calls = getattr(inner, "calls", -1) + 1
    return int(inner.calls)


def accumulate_no_optimizer_step(
    model: Any, batch: Any, opt: torch.optim.Optimizer, reduction: str = "mean"
) -> None:
    """As accelerate's test_distributed_sync: no optimizer step, and every other backward
    under no_sync(), so the last of an odd number of calls leaves its gradients unreduced."""
    x, y = batch
    with model.no_sync() if _call(model) % 2 == 0 else contextlib.nullcontext():
        F.mse_loss(model(x), y, reduction=reduction).backward()


def summed_loss_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    x, y = batch
    opt.zero_grad()
    F.mse_loss(model(x), y, reduction="sum").backward()
    opt.step()


def divided_twice_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    x, y = batch
    opt.zero_grad()
    (F.mse_loss(model(x), y) / dist.get_world_size()).backward()
    opt.step()


def step_inside_no_sync(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    x, y = batch
    half = x.shape[0] // 2
    opt.zero_grad()
    with model.no_sync():
        F.mse_loss(model(x[:half]), y[:half]).backward()
        opt.step()
    opt.zero_grad()
    F.mse_loss(model(x[half:]), y[half:]).backward()
    opt.step()


def edit_on_rank_zero_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    if dist.get_rank() == 0:
        with torch.no_grad():
            model.module.fc2.weight.add_(0.5)
    x, y = batch
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    opt.step()


def hook_on_rank_zero_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    """Rank 0 halves fc1's gradient in a tensor hook, before DDP's all-reduce; rank 1 halves
    it after the reduction: the same intent, on each side of the all-reduce."""
    x, y = batch
    fc1 = model.module.fc1.weight
    handle = fc1.register_hook(lambda g: g / 2) if dist.get_rank() == 0 else None
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    if handle is not None:
        handle.remove()
    else:
        fc1.grad /= 2
    opt.step()


def hook_on_every_rank_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    """The same gradient hook on every rank (and in the single process): correct."""
    x, y = batch
    handle = model.module.fc1.weight.register_hook(lambda g: g / 2)
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    handle.remove()
    opt.step()


def skip_fc2_all_reduce_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    """A hand-written all-reduce that forgets the last layer."""
    x, y = batch
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    for name, p in model.named_parameters():
        if not name.startswith("fc2"):
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()
    opt.step()


def all_reduce_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    """A correct hand-written all-reduce of every gradient."""
    x, y = batch
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    for p in model.parameters():
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()
    opt.step()


def raise_on_rank_one_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    if dist.get_world_size() > 1 and dist.get_rank() == 1:
        raise ValueError("corrupt shard on rank 1")
    summed = model(batch[0]).sum()
    summed.backward()
    opt.step()


def hang_on_rank_one_step(model: Any, batch: Any, opt: torch.optim.Optimizer) -> None:
    if dist.get_world_size() > 1 and dist.get_rank() == 1:
        time.sleep(600)
    model(batch[0]).sum().backward()
    opt.step()


def same_shard(batch: Any, rank: int, world_size: int) -> Any:
    """A split that forgets the rank: every rank takes the first part."""
    return tuple(t[: t.shape[0] // world_size] for t in batch)


def adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-2)
