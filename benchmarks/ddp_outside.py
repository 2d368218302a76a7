#!/usr/bin/env python
"""``check_ddp_gradients`` on outside work: real projects' own DDP-vs-one-process gradient tests.

Each case re-expresses one real test that compares a ``DistributedDataParallel``
model with a local (single-process) model: its model, its global batch, its
training step and what it asserts, citing where it comes from (``SOURCES`` below;
nothing of the projects is copied, the models are a few lines each). For every
case, in one run, on 2 gloo ranks on the CPU:

* **original**: what the test itself does, reimplemented minimally: on every rank
  a local model and a deep copy wrapped in DDP, the local one stepped on the whole
  batch and the DDP one on the rank's shard, then the test's own assertion at the
  test's own points (parameters equal after each update, gradients equal when
  synchronised and *not* equal inside ``no_sync()``, gradients equal across ranks,
  a refusal), through ``run_on_ranks`` (the launcher check_ddp_gradients uses);
* **ours**: ``check_ddp_gradients`` on the same model, batch and step;
* **watch**: the DDP side's own loop on every rank (the rank's shard, the test's
  own updates) inside ``watch_training(model, SGD(lr=0), compare_every=1)``: the
  loops update by hand or not at all, so a step with ``lr=0`` after each
  synchronised iteration (where a real loop steps), which changes nothing, is
  where the watcher looks. Only its
  cross-rank findings count here (the single-process checks would rightly call a
  step with nothing new "empty"); they need no reference, so only bugs that make
  the ranks disagree can show.

All are timed (wall clock, process start included) and both verdicts recorded.
Then bugs that real users hit are planted into the step (or the shard, or the
model) of the cases where they make sense, identically for both sides: a summed
loss, a loss divided by the world size on top of DDP's average, the update taken
inside ``no_sync()``, the same shard on every rank, a weight changed on rank 0
only after wrapping, a parameter used on rank 0 only. Each side "catches" a bug
when its verdict turns to failure (the original: its assertion, or the error the
run raises); for ours it is also recorded whether a hint names the cause.

Cases that cannot run here (CUDA-only, or not a comparison with one process) are
listed in ``NOT_RUN`` with why, and go to the JSON as such.

Run from the repository root (the package is taken from this checkout)::

    python benchmarks/ddp_outside.py                 # every case and planted bug (~15 s, 2 cores)
    python benchmarks/ddp_outside.py --no-bugs       # the real cases only
    python benchmarks/ddp_outside.py --cases pt_cpu,acc_sync

The table goes to stdout, the per-case records and totals to
``benchmarks/results/ddp_outside.json`` (``--json``; ignored by git). This is a
script, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch._C._distributed_c10d import GradBucket
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils import _pytree as pytree

import gradcheck_kit as gk
from gradcheck_kit._src.distributed.launch import run_on_ranks
from gradcheck_kit.errors import RankFailedError

HERE = Path(__file__).resolve().parent
WORLD = 2
TORCH_SUITE = "torch/testing/_internal/distributed/distributed_test.py"
TORCH_AT = f"pytorch {torch.__version__} ({(torch.version.git_version or '?')[:10]})"
ACCELERATE_SYNC = "src/accelerate/test_utils/scripts/test_sync.py"
ACCELERATE_AT = "huggingface/accelerate @ 419f607"

# --------------------------------------------------------------------------- models
# Re-expressed from the sources; module level, as every rank imports them by name.


class _FC2(nn.Module):
    """PyTorch's ``_FC2``: a linear layer whose bias does not require grad."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 50, bias=True)
        self.fc.bias.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(x)
        return out


class TorchNet(nn.Module):
    """PyTorch's ``Net`` of distributed_test.py: 3 layers, softmax, a frozen integer parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, 10, bias=False)
        self.fc2 = _FC2()
        self.fc3 = nn.Linear(50, 4, bias=False)
        self.no_grad_param = nn.Parameter(torch.tensor([2, 2]).long(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return F.softmax(self.fc3(x), dim=1)


class ConditionalNet(nn.Module):
    """test_grads_same_across_ranks_with_no_sync: rank 0 uses nn1 then nn2, others nn3 then nn4."""

    def __init__(self) -> None:
        super().__init__()
        self.rank = dist.get_rank()
        self.nn1, self.nn2, self.nn3, self.nn4 = (nn.Linear(1, 1) for _ in range(4))
        self.state = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = (self.nn1, self.nn2) if self.rank == 0 else (self.nn3, self.nn4)
        layer = first if self.state == 0 else second
        self.state = 1 - self.state
        out: torch.Tensor = layer(x)
        return out


class RegressionModel(nn.Module):
    """accelerate's ``test_utils.RegressionModel``: ``y = a * x + b``, two 0-d parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.0))
        self.b = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.a + self.b


class UsedOnRankZero(nn.Module):
    """Planted bug: a gain that only rank 0 applies (a branch on the rank in the forward)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return out * self.gain if dist.get_rank() == 0 else out


def allreduce_hook(state: Any, bucket: GradBucket) -> torch.futures.Future[torch.Tensor]:
    """test_accumulate_gradients_no_sync_allreduce_hook: divide, then all-reduce the bucket."""
    group = dist.distributed_c10d._get_default_group()
    work = group.allreduce([bucket.buffer() / dist.get_world_size()])
    return work.get_future().then(lambda fut: fut.value()[0])


def allreduce_then_hook(state: Any, bucket: GradBucket) -> torch.futures.Future[torch.Tensor]:
    """..._allreduce_with_then_hook: all-reduce, ×2 in one callback, ÷(2·world) in the next."""
    group = dist.distributed_c10d._get_default_group()
    fut = group.allreduce([bucket.buffer()]).get_future()
    world = dist.get_world_size()
    return fut.then(lambda f: 2 * f.wait()[0]).then(lambda f: f.wait() / (2 * world))


# DDP compares a hook's annotations with dist.GradBucket and Future[Tensor] themselves;
# under ``from __future__ import annotations`` they are strings: give it the objects.
for _hook in (allreduce_hook, allreduce_then_hook):
    _hook.__annotations__ = {
        "state": Any,
        "bucket": GradBucket,
        "return": torch.futures.Future[torch.Tensor],
    }
HOOKS: dict[str, Callable[..., Any]] = {
    "allreduce": allreduce_hook,
    "allreduce_then": allreduce_then_hook,
}

# --------------------------------------------------------------------------- batches
# The global batch of every iteration, stacked along dim 1 ([samples, iterations, ...]):
# the default shard splits dim 0, so each rank gets its own samples of every iteration,
# and the step picks iteration k (the originals reshuffle the input between iterations).


def _torch_batch(local_bs: int, iterations: int, reseed: bool) -> tuple[torch.Tensor, ...]:
    """_prepare_dummy_data: input randn(global, 2), target randn(global, 4); the input is
    permuted between iterations (reseeded with 1337 + i in the no_sync tests), the target not."""
    size = WORLD * local_bs
    x, y = torch.randn(size, 2), torch.randn(size, 4)
    xs = []
    for i in range(iterations):
        xs.append(x)
        if reseed:
            torch.manual_seed(1337 + i)
        x = x[torch.randperm(size)]
    return torch.stack(xs, 1), y.unsqueeze(1).expand(size, iterations, 4).contiguous()


def _accelerate_batch(iterations: int, per_rank: int = 16) -> tuple[torch.Tensor, ...]:
    """RegressionDataset(a=2, b=3): y = 2x + 3 + noise; per_rank samples a rank per iteration;
    test_distributed_sync shuffles each rank's input (not its target) between iterations."""
    size = WORLD * per_rank
    x = torch.randn(size, iterations)
    y = 2 * x + 3 + 0.1 * torch.randn(size, iterations)
    return x, y


def _reshuffled_accelerate_batch(iterations: int) -> tuple[torch.Tensor, ...]:
    x, y = _accelerate_batch(1)
    xs = [x[:, 0]]
    for i in range(iterations - 1):
        torch.manual_seed(1337 + i)
        perm = torch.randperm(16)
        # the same permutation within each rank's 16 samples, as every rank draws it alike
        xs.append(torch.cat([xs[-1][r * 16 : (r + 1) * 16][perm] for r in range(WORLD)]))
    return torch.stack(xs, 1), y.expand(-1, iterations).contiguous()


def _conditional_batch() -> torch.Tensor:
    # the original draws its inputs inside the loop (torch.rand); the batch only tells the
    # ranks apart (distinct rows, or every rank would hold "the same batch")
    return torch.arange(WORLD, dtype=torch.float32).unsqueeze(1)


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One real test, re-expressed: what the step does and what the original asserts."""

    key: str
    project: str
    file: str
    test: str
    at: str
    module: Callable[[], nn.Module]
    make_batch: Callable[[], Any]
    iterations: int
    # the update the original makes after each backward: "manual_zero" (param += grad,
    # grad.zero_()), "manual_none" (param += grad, grad = None), "none" (grads accumulate)
    update: str
    # iterations that run under no_sync(): "never", "even" (0, 2, ...), "accumulate2"
    # (accelerate's accumulate with num_steps=2: all but every 2nd and the last)
    no_sync: str = "never"
    loss_scale: float = 1.0
    ddp: dict[str, Any] = field(default_factory=dict)
    hook: str = ""
    # the original's assertion: "params" after each update, "grads_pattern" (equal when
    # synchronised, not equal inside no_sync), "across_ranks", "refuses"
    asserts: str = "params"
    # torch.testing.assert_close defaults (TestCase.assertEqual) or torch.allclose defaults
    close: str = "assert_close"
    adapted: str = ""
    bugs: tuple[str, ...] = ()


BUGS: dict[str, tuple[str, str]] = {
    # bug -> (what, the hint kind that names it)
    "summed_loss": ("loss summed over the batch (reduction='sum')", "factor"),
    "divided_twice": ("loss divided by world_size on top of DDP's average", "factor"),
    "update_in_no_sync": ("the update taken inside no_sync() (never all-reduced)", "no_sync"),
    "same_batch": ("every rank takes the first shard", "same_batch"),
    "rank0_weights": ("a weight changed on rank 0 only, after wrapping", "one_rank_weights"),
    "unused_on_rank1": ("a parameter used on rank 0 only", "unused"),
    "hook_on_rank0": ("a gradient hook (x0.5) on rank 0 only, before DDP's all-reduce", "hooks"),
}
ALL_BUGS = tuple(BUGS)

CASES: dict[str, Case] = {
    c.key: c
    for c in (
        Case(
            "pt_cpu",
            "pytorch",
            TORCH_SUITE,
            "test_DistributedDataParallelCPU (_test_DistributedDataParallelCPU, _test_DDP_niter)",
            TORCH_AT,
            TorchNet,
            functools.partial(_torch_batch, 2, 5, False),
            5,
            "manual_zero",
            bugs=ALL_BUGS,
        ),
        Case(
            "pt_cpu_grad_view",
            "pytorch",
            TORCH_SUITE,
            "test_DistributedDataParallelCPU_grad_is_view",
            TORCH_AT,
            TorchNet,
            functools.partial(_torch_batch, 2, 5, False),
            5,
            "manual_zero",
            ddp={"gradient_as_bucket_view": True},
        ),
        Case(
            "pt_static_graph",
            "pytorch",
            TORCH_SUITE,
            "test_DistributedDataParallel (static_graph=True, _test_DistributedDataParallel)",
            TORCH_AT,
            TorchNet,
            functools.partial(_torch_batch, 1, 5, False),
            5,
            "manual_none",
            ddp={"static_graph": True, "gradient_as_bucket_view": True},
            adapted="CPU/gloo instead of one GPU a rank; no save/load round trip",
        ),
        Case(
            "pt_no_sync",
            "pytorch",
            TORCH_SUITE,
            "test_accumulate_gradients_no_sync (_test_accumulate_gradients_no_sync)",
            TORCH_AT,
            TorchNet,
            functools.partial(_torch_batch, 1, 2, True),
            2,
            "none",
            no_sync="even",
            ddp={"bucket_cap_mb": 0.001},
            asserts="grads_pattern",
            bugs=("summed_loss", "divided_twice", "same_batch", "unused_on_rank1"),
        ),
        Case(
            "pt_no_sync_grad_view",
            "pytorch",
            TORCH_SUITE,
            "test_accumulate_gradients_no_sync_grad_is_view",
            TORCH_AT,
            TorchNet,
            functools.partial(_torch_batch, 1, 2, True),
            2,
            "none",
            no_sync="even",
            ddp={"bucket_cap_mb": 0.001, "gradient_as_bucket_view": True},
            asserts="grads_pattern",
        ),
        Case(
            "pt_no_sync_hook",
            "pytorch",
            TORCH_SUITE,
            "test_accumulate_gradients_no_sync_allreduce_hook",
            TORCH_AT,
            TorchNet,
            functools.partial(_torch_batch, 1, 4, True),
            4,
            "none",
            no_sync="even",
            ddp={"bucket_cap_mb": 0.001},
            hook="allreduce",
            asserts="grads_pattern",
        ),
        Case(
            "pt_no_sync_then_hook",
            "pytorch",
            TORCH_SUITE,
            "test_accumulate_gradients_no_sync_allreduce_with_then_hook",
            TORCH_AT,
            TorchNet,
            functools.partial(_torch_batch, 1, 4, True),
            4,
            "none",
            no_sync="even",
            ddp={"bucket_cap_mb": 0.001},
            hook="allreduce_then",
            asserts="grads_pattern",
        ),
        Case(
            "pt_across_ranks_no_sync",
            "pytorch",
            TORCH_SUITE,
            "test_grads_same_across_ranks_with_no_sync",
            TORCH_AT,
            ConditionalNet,
            _conditional_batch,
            2,
            "none",
            no_sync="accumulate2",
            ddp={"find_unused_parameters": True},
            asserts="across_ranks",
            close="allclose",
        ),
        Case(
            "pt_requires_grad",
            "pytorch",
            TORCH_SUITE,
            "test_DistributedDataParallel_requires_grad",
            TORCH_AT,
            nn.Module,
            functools.partial(_torch_batch, 1, 1, False),
            1,
            "none",
            asserts="refuses",
        ),
        Case(
            "acc_sync",
            "accelerate",
            ACCELERATE_SYNC,
            "test_distributed_sync",
            ACCELERATE_AT,
            RegressionModel,
            functools.partial(_reshuffled_accelerate_batch, 3),
            3,
            "none",
            no_sync="even",
            asserts="grads_pattern",
            close="allclose",
            adapted="accelerator.prepare/no_sync/backward/gather replaced by the DDP calls "
            "they make",
        ),
        Case(
            "acc_grad_accum",
            "accelerate",
            ACCELERATE_SYNC,
            "test_gradient_accumulation (num_steps=2, split_batches=False)",
            ACCELERATE_AT,
            RegressionModel,
            functools.partial(_accelerate_batch, 3),
            3,
            "none",
            no_sync="accumulate2",
            loss_scale=0.5,
            asserts="grads_pattern",
            close="allclose",
            adapted="accelerator.accumulate replaced by no_sync() and loss / num_steps; "
            "3 batches of 16 a rank as its 80-sample set gives",
            bugs=("summed_loss", "divided_twice", "same_batch", "unused_on_rank1"),
        ),
    )
}

# Real DDP-vs-one-process tests (or near) not run, with why.
NOT_RUN: dict[str, str] = {
    "pytorch: test_DistributedDataParallel_SyncBatchNorm (and _Channels_Last, _No_Affine, "
    "_2D_Input, _Single_Input_Per_Process, _Diff_Input_Sizes_Running_Value, "
    "_Diff_Input_Sizes_gradient, _half), test_ddp_sync_bn_training_vs_eval": (
        "CUDA only: torch runs SyncBatchNorm on GPUs (nccl); this machine has none"
    ),
    "pytorch: test_DistributedDataParallel_with_amp_and_grad_is_view, "
    "test_ddp_native_mixed_precision_*": "CUDA only (GradScaler / mixed precision on GPUs)",
    "pytorch: test_ddp_hook_parity_allreduce/_powerSGD/_post_localSGD, "
    "test_ddp_hook_with_optimizer_parity_*, test_ddp_apply_optim_in_backward*": (
        "CUDA only, and they compare DDP with DDP (a hook or fused optimizer against "
        "none), not with one process"
    ),
    "pytorch: test_ddp_join_model_equivalence, test_ddp_grad_div_uneven_inputs, "
    "test_ddp_uneven_inputs": (
        "CUDA only; ranks run different numbers of iterations under join(), which has "
        "no single-process run of the same step to compare with"
    ),
    "pytorch: test_ddp_broadcast_buffer, test_ddp_shared_grad_acc_unused_params, "
    "test_ddp_control_flow_same_across_ranks, test_ddp_ignore_params_arg": (
        "CUDA only, and they assert DDP's bookkeeping (buffers equal across ranks, no "
        "error, the used-parameter map), not gradients against a local model"
    ),
    "accelerate: test_distributed_sync_multiple_fwd": (
        "needs accelerate's trigger_sync_in_backward (DDP reducer internals)"
    ),
    "accelerate: test_gradient_accumulation_with_opt_and_scheduler": (
        "its verdict rests on accelerate's AcceleratedOptimizer and scheduler skipping "
        "steps inside accumulate(); accelerate is not installed here"
    ),
}

# --------------------------------------------------------------------------- the step


def _iteration(model: nn.Module) -> int:
    """This model's iteration, counted on the module itself (a rank holds two models)."""
    inner = model.module if isinstance(model, DDP) else model
    k = int(getattr(inner, "_bench_iteration", 0))
    inner._bench_iteration = k + 1
    return k


def _synced(case: Case, k: int) -> bool:
    if case.no_sync == "even":
        return k % 2 == 1
    if case.no_sync == "accumulate2":
        return (k + 1) % 2 == 0 or k == case.iterations - 1
    return True


def _no_sync(model: nn.Module, on: bool) -> contextlib.AbstractContextManager[Any]:
    # a local model has no no_sync(): the originals run it plainly
    return model.no_sync() if on and isinstance(model, DDP) else contextlib.nullcontext()


def _update(model: nn.Module, how: str) -> None:
    """PyTorch's _model_step / _model_step_with_zero_grad: param += grad (no optimizer)."""
    if how == "none":
        return
    for param in model.parameters():
        if param.grad is not None:
            with torch.no_grad():
                param.add_(param.grad)
            if how == "manual_zero":
                param.grad.requires_grad_(False)
                param.grad.zero_()
            else:
                param.grad = None


def case_step(key: str, bug: str, model: nn.Module, batch: Any, opt: Any) -> None:
    """One iteration of the case's training loop (the same code for both sides and every rank)."""
    case = CASES[key]
    k = _iteration(model)
    if bug == "rank0_weights" and k == 0 and dist.get_rank() == 0:
        with torch.no_grad():
            next(p for p in model.parameters() if p.requires_grad).add_(0.5)
    if case.asserts == "across_ranks":
        # the original draws input and target inside the loop, on every rank
        x, y = torch.rand((1,)), torch.rand((1,))
    else:
        x, y = batch[0][:, k], batch[1][:, k]
    inside = bug == "update_in_no_sync" or not _synced(case, k)
    hook = None
    if bug == "hook_on_rank0" and dist.get_rank() == 0:
        first = next(p for p in model.parameters() if p.requires_grad)
        hook = first.register_hook(lambda g: g * 0.5)
    with _no_sync(model, inside):
        model.train()
        out = model(x)
        loss = F.mse_loss(out, y, reduction="sum" if bug == "summed_loss" else "mean")
        loss = loss * case.loss_scale
        if bug == "divided_twice":
            loss = loss / dist.get_world_size()
        loss.backward()
        if bug == "update_in_no_sync":
            _update(model, case.update)
    if hook is not None:
        hook.remove()
    if bug != "update_in_no_sync":
        _update(model, case.update)


def plain_model(key: str, bug: str) -> nn.Module:
    """The case's module (seeded by the caller), with the planted model bug if any."""
    module = CASES[key].module()
    return UsedOnRankZero(module) if bug == "unused_on_rank1" else module


def wrap(key: str, module: nn.Module) -> DDP:
    """DDP with the case's options and communication hook."""
    case = CASES[key]
    model = DDP(module, **case.ddp)
    if case.hook:
        model.register_comm_hook(None, HOOKS[case.hook])
    return model


def ddp_model(key: str, bug: str) -> nn.Module:
    """make_model for check_ddp_gradients: the module already wrapped as the test wraps it."""
    return wrap(key, plain_model(key, bug))


def shard(bug: str, batch: Any, rank: int, world_size: int) -> Any:
    """The rank's contiguous share of dim 0; the planted bug takes rank 0's share everywhere."""
    take = 0 if bug == "same_batch" else rank

    def one(t: torch.Tensor) -> torch.Tensor:
        size = t.shape[0] // world_size
        return t[take * size : (take + 1) * size]

    return pytree.tree_map(one, batch)


# --------------------------------------------------------------------------- original side


def _close(case: Case, a: torch.Tensor, b: torch.Tensor) -> bool:
    if case.close == "allclose":
        return torch.allclose(a, b)
    try:
        torch.testing.assert_close(a, b)
    except AssertionError:
        return False
    return True


def original_rank(rank: int, world_size: int, key: str, bug: str, batch: Any) -> str:
    """What the original test does on one rank; returns '' or raises AssertionError."""
    case = CASES[key]
    torch.manual_seed(0)  # every rank alike: the local model must start as DDP's rank 0
    if case.asserts == "refuses":
        try:
            DDP(plain_model(key, bug))
        except RuntimeError:
            return ""
        raise AssertionError("DistributedDataParallel accepted a module without parameters")
    local = plain_model(key, bug)
    model = wrap(key, copy.deepcopy(local))
    mine = shard(bug, batch, rank, world_size)
    for k in range(case.iterations):
        if case.asserts != "across_ranks":
            case_step(key, bug, local, batch, None)
        case_step(key, bug, model, mine, None)
        if case.asserts == "params":
            for p, q in zip(local.parameters(), model.module.parameters(), strict=True):
                try:
                    torch.testing.assert_close(p, q)
                except AssertionError as exc:
                    raise AssertionError(f"iteration {k}: {exc}") from None
        elif case.asserts == "grads_pattern":
            synced = _synced(case, k)
            for (name, p), q in zip(
                local.named_parameters(), model.module.parameters(), strict=True
            ):
                if not p.requires_grad:
                    continue
                assert p.grad is not None and q.grad is not None  # both ran a backward
                if _close(case, p.grad, q.grad) != synced:
                    raise AssertionError(
                        f"iteration {k}: {name} grads "
                        f"{'differ' if synced else 'agree'} when they should "
                        f"{'agree' if synced else 'not'}"
                    )
    if case.asserts == "across_ranks":
        grads = torch.cat([p.grad.view(-1) for p in model.parameters() if p.grad is not None])
        gathered = [torch.zeros_like(grads) for _ in range(world_size)]
        dist.all_gather(gathered, grads)
        if not all(_close(case, gathered[0], g) for g in gathered[1:]):
            raise AssertionError("Gradients are not the same for all ranks.")
    return ""


CROSS_RANK = {
    "params_differ_across_ranks",
    "grad_not_reduced",
    "step_inside_no_sync",
    "buffers_differ_across_ranks",
}


def watched_rank(rank: int, world_size: int, key: str, bug: str, batch: Any) -> list[str]:
    """The DDP side's loop under watch_training on one rank; its cross-rank finding kinds."""
    case = CASES[key]
    torch.manual_seed(0)
    if case.asserts == "refuses":
        return []  # no model to watch: DDP refuses it
    model = ddp_model(key, bug)
    mine = shard(bug, batch, rank, world_size)
    trained = [p for p in model.parameters() if p.requires_grad]
    look = torch.optim.SGD(trained, lr=0.0)  # a step that changes nothing: where to look
    with gk.watch_training(model, look, on_error="record", compare_every=1) as watcher:
        for k in range(case.iterations):
            case_step(key, bug, model, mine, None)
            if _synced(case, k):  # where a real loop steps: not inside an accumulation
                look.step()
    assert watcher.report is not None
    return sorted({f.kind for f in watcher.report.findings if f.kind in CROSS_RANK})


# --------------------------------------------------------------------------- running


@dataclass
class Run:
    """One side's verdict on one case (and bug)."""

    passed: bool
    seconds: float
    detail: str
    hints: list[str] = field(default_factory=list)
    named: bool | None = None


def run_original(key: str, bug: str, batch: Any, timeout: float) -> Run:
    started = time.perf_counter()
    try:
        run_on_ranks(original_rank, WORLD, args=(key, bug, batch), timeout=timeout)
    except RankFailedError as exc:
        first = str(exc).splitlines()[0]
        kind = "assertion" if "AssertionError" in first else "error"
        return Run(False, time.perf_counter() - started, f"{kind}: {first[:160]}")
    return Run(True, time.perf_counter() - started, "")


def run_ours(key: str, bug: str, timeout: float) -> Run:
    case = CASES[key]
    started = time.perf_counter()
    result = gk.check_ddp_gradients(
        functools.partial(ddp_model, key, bug),
        case.make_batch,
        step=functools.partial(case_step, key, bug),
        shard=functools.partial(shard, bug),
        steps=case.iterations,
        world_size=WORLD,
        timeout=timeout,
        name=f"{key}/{bug or 'correct'}",
    )
    seconds = time.perf_counter() - started
    kinds = [h.kind for h in result.hints]
    named = None if not bug else BUGS[bug][1] in kinds
    detail = "" if result.passed else result.summary().splitlines()[0][:200]
    return Run(result.passed, seconds, detail, kinds, named)


def run_watch(key: str, bug: str, batch: Any, timeout: float) -> Run:
    if bug == "unused_on_rank1":  # DDP itself stops the loop: nothing left to watch
        return Run(True, 0.0, "not run: DistributedDataParallel fails this loop itself")
    started = time.perf_counter()
    try:
        found = run_on_ranks(watched_rank, WORLD, args=(key, bug, batch), timeout=timeout)
    except RankFailedError as exc:
        first = str(exc).splitlines()[0]
        return Run(False, time.perf_counter() - started, f"error: {first[:160]}")
    kinds = sorted({k for rank_kinds in found.values for k in rank_kinds})
    return Run(not kinds, time.perf_counter() - started, "", kinds)


def _batch(case: Case, seed: int = 0) -> Any:
    # as check_ddp_gradients makes it: make_batch() after seeding, once, sent to every rank
    from gradcheck_kit._src.state.rng import seed_everything

    seed_everything(seed)
    return case.make_batch()


def _rows(keys: list[str], bugs: bool) -> Iterator[tuple[str, str]]:
    for key in keys:
        yield key, ""
    if bugs:
        for key in keys:
            for bug in CASES[key].bugs:
                yield key, bug


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", help="comma list of case keys (default: all)")
    parser.add_argument("--no-bugs", action="store_true", help="run the real cases only")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "ddp_outside.json")
    args = parser.parse_args(argv)
    keys = args.cases.split(",") if args.cases else list(CASES)
    unknown = [k for k in keys if k not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")

    # the first launch starts the fork server (torch imported once); not a cost of either side
    warm = time.perf_counter()
    run_on_ranks(original_rank, WORLD, args=("pt_requires_grad", "", None), timeout=120)
    warm_s = time.perf_counter() - warm

    records: list[dict[str, Any]] = []
    header = (
        f"{'case':26} {'bug':18} {'original':>10} {'s':>6} {'ours':>10} {'s':>6} "
        f"{'watch':>6}  hints"
    )
    print(header)
    print("-" * len(header))
    for key, bug in _rows(keys, not args.no_bugs):
        case = CASES[key]
        original = run_original(key, bug, _batch(case), args.timeout)
        ours = run_ours(key, bug, args.timeout)
        watch = run_watch(key, bug, _batch(case), args.timeout)
        record = {
            "case": key,
            "bug": bug,
            "bug_what": BUGS[bug][0] if bug else "",
            "source": {
                "project": case.project,
                "file": case.file,
                "test": case.test,
                "at": case.at,
                "adapted": case.adapted,
            },
            "original": asdict(original),
            "ours": asdict(ours),
            "watch": asdict(watch),
        }
        records.append(record)
        mark = {True: "pass", False: "FAIL"}
        named = "" if ours.named is None else (" (named)" if ours.named else " (not named)")
        watched = "-" if watch.detail.startswith("not run") else mark[watch.passed]
        found = f"; watch: {','.join(watch.hints)}" if watch.hints else ""
        print(
            f"{key:26} {bug or '-':18} {mark[original.passed]:>10} {original.seconds:6.2f} "
            f"{mark[ours.passed]:>10} {ours.seconds:6.2f} {watched:>6}  "
            f"{','.join(ours.hints)}{named}{found}",
            flush=True,
        )
        for side, run in (("original", original), ("ours", ours), ("watch", watch)):
            if run.detail and not bug:
                print(f"    {side}: {run.detail}")

    totals = _totals(records)
    document = {
        "meta": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "world_size": WORLD,
            "backend": "gloo",
            "fork_server_start_s": round(warm_s, 2),
            "argv": sys.argv[1:],
        },
        "not_run": NOT_RUN,
        "totals": totals,
        "records": records,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=1))
    print()
    print(json.dumps(totals, indent=1))
    print(f"not run: {len(NOT_RUN)} groups (see the JSON); results written to {args.json}")
    return 0


def _totals(records: list[dict[str, Any]]) -> dict[str, Any]:
    real = [r for r in records if not r["bug"]]
    planted = [r for r in records if r["bug"]]
    per_bug: dict[str, dict[str, int]] = {}
    for r in planted:
        row = per_bug.setdefault(
            r["bug"], {"planted": 0, "original": 0, "ours": 0, "named": 0, "watch": 0}
        )
        row["planted"] += 1
        row["original"] += not r["original"]["passed"]
        row["ours"] += not r["ours"]["passed"]
        row["named"] += bool(r["ours"]["named"])
        row["watch"] += bool(r["watch"]["hints"])

    def seconds(side: str) -> dict[str, float]:
        values = [r[side]["seconds"] for r in records]
        return {
            "median": round(statistics.median(values), 2) if values else 0.0,
            "max": round(max(values, default=0.0), 2),
        }

    # the refusal case passes on the original when DDP refuses, and ours fails it then
    def agrees(r: dict[str, Any]) -> bool:
        refuses = CASES[r["case"]].asserts == "refuses"
        return bool(r["original"]["passed"] == (r["ours"]["passed"] != refuses))

    return {
        "cases_run": len(real),
        "by_project": {
            p: sum(r["source"]["project"] == p for r in real)
            for p in sorted({r["source"]["project"] for r in real})
        },
        "original_passed": sum(r["original"]["passed"] for r in real),
        "ours_passed": sum(r["ours"]["passed"] for r in real),
        "agreement": sum(agrees(r) for r in real),
        "false_alarms": [r["case"] for r in real if r["original"]["passed"] and not agrees(r)],
        "missed_by_ours": [
            r["case"] for r in real if not r["original"]["passed"] and not agrees(r)
        ],
        "planted": len(planted),
        "caught_by_original": sum(not r["original"]["passed"] for r in planted),
        "caught_by_ours": sum(not r["ours"]["passed"] for r in planted),
        "named_by_ours": sum(bool(r["ours"]["named"]) for r in planted),
        "watch_false_alarms": [r["case"] for r in real if not r["watch"]["passed"]],
        "watched_planted": sum(not r["watch"]["detail"].startswith("not run") for r in planted),
        "caught_by_watch": sum(bool(r["watch"]["hints"]) for r in planted),
        "per_bug": per_bug,
        "seconds_original": seconds("original"),
        "seconds_ours": seconds("ours"),
        "seconds_watch": seconds("watch"),
    }


if __name__ == "__main__":
    sys.exit(main())
