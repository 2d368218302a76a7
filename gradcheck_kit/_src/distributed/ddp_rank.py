"""What one process of :func:`check_ddp_gradients` runs: the user's step, observed.

Every rank of the DDP group, and the single-process reference (a group of one
holding the whole batch), runs the same code: build the model and the optimizer,
take its batch, call the user's step ``steps`` times. Hooks on the optimizer
record the gradient each optimizer step applies and the parameters after it;
hooks on the parameters record which ones got a gradient on this process. The
records travel back to the parent as plain tensors (:class:`ProcessRecord`), which
compares them (:mod:`.ddp_compare`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils import _pytree as pytree

from ..state.rng import seed_everything
from .launch import diagnosis

__all__ = [
    "UNUSED_MARK",
    "DdpSpec",
    "OptimizerStep",
    "ProcessRecord",
    "default_step",
    "even_shard",
    "run_process",
]

# How the parent recognises our own diagnosis of a parameter unused on one rank.
UNUSED_MARK = "got no gradient on this rank"


_PER_RANK_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def default_step(model: nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """One plain training step: ``mse_loss(model(inputs), targets)``, backward, step.

    ``batch`` is ``(inputs, targets)``.

    Examples:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> float(default_step(net, (torch.ones(3, 2), torch.zeros(3, 1)), opt)) >= 0
        True
    """
    inputs, targets = batch
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()


def even_shard(batch: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s contiguous share of every tensor in ``batch``, split along dim 0.

    As a ``DistributedSampler`` without shuffling gives each rank its own
    samples. Non-tensor leaves and 0-d tensors go to every rank as they are.

    Examples:
        >>> import torch
        >>> even_shard((torch.arange(4), 7), 1, 2)
        (tensor([2, 3]), 7)
    """

    def one(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor) or leaf.dim() == 0:
            return leaf
        size = leaf.shape[0] // world_size
        return leaf[rank * size : (rank + 1) * size]

    return pytree.tree_map(one, batch)


@dataclass(frozen=True)
class DdpSpec:
    """Everything a process needs, sent to it by pickle."""

    make_model: Callable[[], nn.Module]
    batch: Any
    step: Callable[..., Any]
    make_optimizer: Callable[..., torch.optim.Optimizer] | None
    shard: Callable[[Any, int, int], Any]
    steps: int
    seed: int
    wrap: bool


@dataclass(frozen=True)
class OptimizerStep:
    """One optimizer step: the gradient it applied (None: no .grad) and the parameters after."""

    grads: dict[str, torch.Tensor | None]
    params: dict[str, torch.Tensor]


@dataclass(frozen=True)
class ProcessRecord:
    """What one process saw, sent back to the parent."""

    rank: int
    world_size: int
    dtype: str
    parameters: tuple[str, ...]
    batch_digest: str
    rng_digests: tuple[str, ...]
    rng_consumed: bool
    steps: tuple[OptimizerStep, ...]
    final_grads: dict[str, torch.Tensor | None]
    final_params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    used: tuple[frozenset[str], ...]
    batchnorm: tuple[str, ...] = ()
    wrapped: bool = True
    find_unused: bool = False
    notes: tuple[str, ...] = field(default=())
    # final_grads are those after the last backward outside no_sync(): the run ended
    # inside a no_sync() window (accumulating) without an optimizer step
    grads_at_last_sync: bool = False
    # parameter -> gradient hooks on it (tensor and post-accumulate hooks, the check's own
    # left out), the most seen during a backward, when an optimizer step began or at the end
    hooks: dict[str, int] = field(default_factory=dict)


def _digest(tree: Any) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    for leaf in pytree.tree_leaves(tree):
        if isinstance(leaf, torch.Tensor):
            t = leaf.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()


def _copy(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to("cpu", copy=True)


def _inner(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def _named(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    return _inner(model).named_parameters()


def _to_device(batch: Any, model: nn.Module) -> Any:
    first = next(iter(model.parameters()), None)
    if first is None or first.device.type == "cpu":
        return batch
    return pytree.tree_map(
        lambda t: t.to(first.device) if isinstance(t, torch.Tensor) else t, batch
    )


def run_process(rank: int, world_size: int, spec: DdpSpec) -> ProcessRecord:
    """Build, wrap, and run the user's step ``spec.steps`` times on this process's batch.

    Module-level (each rank imports it by name). A world of one is the
    single-process reference: it takes the whole batch.
    """
    seed_everything(spec.seed + rank)
    model = spec.make_model()
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"make_model returned {type(model).__name__}; it must return an nn.Module "
            "(optionally wrapped in DistributedDataParallel)."
        )
    if spec.wrap and not isinstance(model, DistributedDataParallel):
        first = next(iter(model.parameters()), None)
        on_gpu = first is not None and first.device.type == "cuda"
        ids = [first.device] if first is not None and on_gpu else None
        model = DistributedDataParallel(model, device_ids=ids)
    names = [name for name, _ in _named(model)]
    optimizer = (
        spec.make_optimizer(model.parameters())
        if spec.make_optimizer is not None
        else torch.optim.SGD(model.parameters(), lr=0.1)
    )
    batch = spec.batch if world_size == 1 else spec.shard(spec.batch, rank, world_size)
    batch = _to_device(batch, model)
    taken: list[OptimizerStep] = []
    pending: dict[str, torch.Tensor | None] = {}
    used: set[str] = set()

    hooks: dict[str, int] = {}
    ours: dict[str, int] = {}

    def count_hook(name: str, p: torch.Tensor) -> None:
        count = len(p._backward_hooks or {}) + len(p._post_accumulate_grad_hooks or {})
        count -= ours.get(name, 0)
        if count > hooks.get(name, 0):
            hooks[name] = count

    def count_hooks() -> None:
        for name, p in _named(model):
            count_hook(name, p)

    def before(opt: Any, args: Any, kwargs: Any) -> None:
        count_hooks()  # hooks the step registers and removes again are there now
        pending.clear()
        for name, p in _named(model):
            pending[name] = _copy(p.grad)

    def after(opt: Any, args: Any, kwargs: Any) -> None:
        params = {name: _copy(p) for name, p in _named(model)}
        taken.append(OptimizerStep(dict(pending), params))  # type: ignore[arg-type]

    handles = [optimizer.register_step_pre_hook(before), optimizer.register_step_post_hook(after)]
    for name, p in _named(model):
        if p.requires_grad:

            def on_grad(g: torch.Tensor, name: str = name, p: torch.Tensor = p) -> None:
                used.add(name)
                count_hook(name, p)  # hooks a step registers for one backward only

            handles.append(p.register_hook(on_grad))
            ours[name] = 1
    # A loop may end inside no_sync() (accumulating, no optimizer step: a test of the
    # accumulation itself); its last gradients are unreduced on purpose. Keep those after
    # the last backward outside no_sync(), taken when the next forward starts.
    synced_grads: dict[str, torch.Tensor | None] = {}
    last_forward_synced: list[bool] = []

    def before_forward(module: Any, args: Any) -> None:
        if not torch.is_grad_enabled():
            return
        if last_forward_synced and last_forward_synced[-1]:
            synced_grads.clear()
            synced_grads.update({n: _copy(p.grad) for n, p in _named(model)})
        last_forward_synced.append(bool(module.require_backward_grad_sync))

    if isinstance(model, DistributedDataParallel):
        handles.append(model.register_forward_pre_hook(before_forward))
    find_unused = bool(getattr(model, "find_unused_parameters", False))
    synchronising = isinstance(model, DistributedDataParallel) and world_size > 1
    rng_digests: list[str] = []
    consumed = False
    used_per_call: list[frozenset[str]] = []
    for call in range(spec.steps):
        before_state = torch.get_rng_state()
        rng_digests.append(_digest(before_state))
        used.clear()
        spec.step(model, batch, optimizer)
        consumed = consumed or not torch.equal(before_state, torch.get_rng_state())
        used_per_call.append(frozenset(used))
        if synchronising and not find_unused:
            unused = [n for n, p in _named(model) if p.requires_grad and n not in used]
            if unused:
                # DDP waits for their gradients forever on the ranks that used them:
                # say so now, before those ranks time out on a collective with this one
                raise diagnosis(
                    f"parameters {unused} {UNUSED_MARK} (rank {rank}, step {call + 1}): "
                    "DistributedDataParallel(find_unused_parameters=False) never reduces "
                    "them, and the ranks that used them wait for this one."
                )
    for handle in handles:
        handle.remove()
    ours.clear()
    count_hooks()
    inner = _inner(model)
    final_grads = {n: _copy(p.grad) for n, p in _named(model)}
    at_last_sync = not taken and bool(last_forward_synced) and not last_forward_synced[-1]
    if at_last_sync:
        final_grads = {n: synced_grads.get(n) for n in final_grads}
    batchnorm = tuple(
        name
        for name, m in inner.named_modules()
        # torch's own BatchNorm classes: a subclass may synchronise its statistics itself
        if type(m) in _PER_RANK_BATCHNORM and m.training
    )
    # the tolerances follow the floating parameters: a frozen integer one (a step counter,
    # PyTorch's own DDP test model) may come first
    floating = next((p for p in inner.parameters() if p.is_floating_point()), None)
    return ProcessRecord(
        rank=rank,
        world_size=world_size,
        dtype=str(floating.dtype).replace("torch.", "") if floating is not None else "float32",
        parameters=tuple(names),
        batch_digest=_digest(batch),
        rng_digests=tuple(rng_digests),
        rng_consumed=consumed,
        steps=tuple(taken),
        final_grads=final_grads,
        final_params={n: _copy(p) for n, p in _named(model)},  # type: ignore[misc]
        buffers={n: _copy(b) for n, b in inner.named_buffers() if b.is_floating_point()},  # type: ignore[misc]
        used=tuple(used_per_call),
        batchnorm=batchnorm,
        wrapped=isinstance(model, DistributedDataParallel),
        find_unused=find_unused,
        notes=() if names else ("the model has no parameters",),
        grads_at_last_sync=at_last_sync,
        hooks=hooks,
    )
