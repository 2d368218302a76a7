"""check_ddp_gradients / assert_ddp_gradients: DDP ranks against one process.

``world_size`` local ranks (spawned, one gloo group on 127.0.0.1 through a file
store) each run the user's training step on their shard of a global batch, with
the model in ``DistributedDataParallel``; beside them one process runs the same
step on the whole batch (a group of one, so the same code runs unchanged). The
gradient every optimizer step applies, the parameters after it and the buffers
are compared per rank with that run and between the ranks (:mod:`.ddp_compare`).
Under ``torchrun`` (a process group already initialised, or the ``env://``
variables set) the ranks are the torchrun processes, across hosts if need be, and
rank 0 starts the single-process run beside itself.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import torch
import torch.distributed as dist
from torch.distributed.distributed_c10d import PrefixStore
from torch.distributed.rendezvous import rendezvous
from torch.utils import _pytree as pytree

from .. import recording
from ..engine.run import fn_name
from ..engine.tolerances import machine_eps
from ..errors import DdpGradientError, InvalidArgument
from ..raising import Msg, fail_unless_passed
from ..results import DdpCheckResult, Hint
from ..serial import one_at_a_time
from ..state.rng import seed_everything
from ..state.snapshot import preserved
from ..validation import (
    check_bool,
    check_callable,
    check_int,
    check_keywords,
    check_msg,
    check_nonnegative,
    check_positive,
)
from .ddp_compare import compare_records
from .ddp_rank import UNUSED_MARK, DdpSpec, ProcessRecord, default_step, even_shard, run_process
from .launch import RankJob, backend_problem, check_sendable, failure_error, launch

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DdpOptions", "assert_ddp_gradients", "check_ddp_gradients"]

_REFERENCE = "the single-process run"
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DdpOptions(TypedDict, total=False):
    """What :func:`check_ddp_gradients` and :func:`assert_ddp_gradients` take by keyword.

    Examples:
        >>> options: DdpOptions = {"world_size": 2, "steps": 3}
        >>> sorted(options)
        ['steps', 'world_size']
    """

    step: Callable[..., Any]
    make_optimizer: Callable[..., torch.optim.Optimizer]
    shard: Callable[[Any, int, int], Any]
    world_size: int
    backend: str
    steps: int
    wrap: bool
    atol: float
    rtol: float
    seed: int
    timeout: float
    name: str


def _default_rtol(dtype: str) -> float:
    # gradients averaged over ranks are sums in another order: a few ulps per step, and
    # the weights carry them along; half the digits of the dtype, as check_same_training
    return math.sqrt(machine_eps(getattr(torch, dtype, torch.float32)))


def _validate(make_model: object, make_batch: object, options: dict[str, Any]) -> None:
    check_keywords(options, DdpOptions, "check_ddp_gradients")
    if isinstance(make_model, torch.nn.Module):
        raise InvalidArgument(
            f"make_model is a {type(make_model).__name__} instance; pass a factory that builds "
            "it (a module-level function, or functools.partial of one): every rank builds "
            "its own model in its own process, and a model cannot be sent there."
        )
    check_callable(make_model, "make_model", "pass a function that builds the model")
    check_callable(make_batch, "make_batch", "pass a function that returns the global batch")
    for key in ("step", "make_optimizer", "shard"):
        if key in options:
            check_callable(options[key], key)
    if "world_size" in options:
        check_int(options["world_size"], "world_size")
    check_int(options.get("steps", 1), "steps", min_value=1)
    check_int(options.get("seed", 0), "seed", min_value=0)
    check_bool(options.get("wrap", True), "wrap")
    check_positive(options.get("timeout", 60.0), "timeout", allow_none=False)
    check_positive(options.get("rtol"), "rtol")
    check_nonnegative(options.get("atol"), "atol")
    factory = "define it at module level (each rank imports it by name) or use functools.partial"
    check_sendable(make_model, f"make_model={make_model!r:.60}", f"pass a factory: {factory}.")
    for key in ("step", "make_optimizer", "shard"):
        if key in options:
            check_sendable(options[key], f"{key}={options[key]!r:.60}", factory + ".")


def _global_batch(make_batch: Callable[[], Any], seed: int, world_size: int, even: bool) -> Any:
    seed_everything(seed)
    batch = make_batch()
    leaves = pytree.tree_leaves(batch)
    if not any(isinstance(leaf, torch.Tensor) for leaf in leaves):
        raise InvalidArgument(
            f"make_batch returned {type(batch).__name__} without a tensor; it must return the "
            "global batch: a tensor, or a tuple/list/dict of tensors (inputs, targets)."
        )
    if even:
        for path, leaf in pytree.tree_flatten_with_path(batch)[0]:
            if isinstance(leaf, torch.Tensor) and leaf.dim() and leaf.shape[0] % world_size:
                raise InvalidArgument(
                    f"batch{pytree.keystr(path)} has {leaf.shape[0]} samples, not a multiple of "
                    f"world_size={world_size}: the ranks would get unequal shards, whose mean "
                    "over ranks is not the mean over the batch. Make the global batch a "
                    "multiple of world_size, or pass shard=."
                )
    check_sendable(batch, "the batch", "return tensors (and plain Python values) from make_batch.")
    return batch


def _torchrun_env() -> bool:
    return all(v in os.environ for v in _TORCHRUN_VARIABLES)


# The env:// store of this process, kept for the next check: each check joins its own
# group through a new prefix of it. Joining env:// afresh each time would race: a rank that
# joins the next check's group before rank 0 has left the last one meets stale keys, or a
# store that is going away, and waits forever.
_ENV_STORE: list[Any] = []
_ENV_JOINS = itertools.count()


def _join_env_group(backend: str, timeout: float) -> None:
    """Join the torchrun group from the env:// variables, or say why the port is the problem."""
    from datetime import timedelta

    wait = timedelta(seconds=timeout)
    if not _ENV_STORE:
        try:
            store, _, _ = next(iter(rendezvous("env://", timeout=wait)))
        except Exception as exc:
            text = str(exc)
            if "address already in use" in text.lower() or "EADDRINUSE" in text:
                raise InvalidArgument(
                    f"MASTER_PORT={os.environ['MASTER_PORT']} on MASTER_ADDR="
                    f"{os.environ['MASTER_ADDR']} is already in use: pick another port "
                    "(torchrun --master_port=PORT) and start every rank with it."
                ) from None
            raise
        _ENV_STORE.append(store)
    dist.init_process_group(
        backend,
        store=PrefixStore(f"gradcheck_kit/{next(_ENV_JOINS)}", _ENV_STORE[0]),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=wait,
    )


def _failed_result(
    failures: dict[int, str], labels: tuple[str, ...], world_size: int, **common: Any
) -> DdpCheckResult:
    """A failed result naming the process that failed first, with the likely cause."""
    error = failure_error(failures, labels, common["timeout"])
    first = error.rank
    text = str(error)
    failed_rank = -1 if labels[first] == _REFERENCE else first
    hints: list[Hint] = []
    if UNUSED_MARK in text or "Expected to have finished reduction" in text:
        hints.append(
            Hint(
                "unused",
                "a parameter took no part in the forward on some ranks, so DDP never reduced "
                "it: use every parameter on every rank, or wrap with "
                "DistributedDataParallel(find_unused_parameters=True).",
            )
        )
    elif "SyncBatchNorm" in text and "GPU" in text:
        hints.append(
            Hint(
                "batchnorm",
                "torch runs SyncBatchNorm on GPUs only: check it with backend='nccl' on GPUs; "
                "on the CPU, keep BatchNorm and expect per-rank statistics.",
            )
        )
    elif failures[first].startswith("timed out"):
        hints.append(
            Hint(
                "hang",
                "a rank waited in a collective (a DDP backward, all_reduce, barrier) that "
                "another rank never entered: a parameter unused on some ranks, a branch on the "
                "rank, or ranks taking different numbers of steps.",
            )
        )
    elif failed_rank == -1:
        hints.append(
            Hint(
                "rank_error",
                "the step fails in a single process too, before any distribution: run it once "
                "on one process to debug it.",
            )
        )
    else:
        hints.append(
            Hint("rank_error", f"the step raised on rank {failed_rank}: see its traceback above.")
        )
    return DdpCheckResult(
        passed=False,
        failed_rank=failed_rank,
        rank_failure=text,
        hints=tuple(hints),
        world_size=world_size,
        **{k: v for k, v in common.items() if k != "timeout"},
    )


def _spawned(spec: DdpSpec, world_size: int, backend: str, timeout: float) -> Any:
    jobs = [RankJob(run_process, rank, world_size, "ddp", (spec,)) for rank in range(world_size)]
    jobs.append(RankJob(run_process, 0, 1, "reference", (spec,), label=_REFERENCE))
    return launch(jobs, backend=backend, timeout=timeout)


def _in_group(spec: DdpSpec, backend: str, timeout: float) -> tuple[Any, ...]:
    """Under torchrun: this process is one rank; rank 0 also starts the reference."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    started = time.perf_counter()
    reference: list[Any] = [None]
    if rank == 0:
        launched = launch(
            [RankJob(run_process, 0, 1, "reference", (spec,), label=_REFERENCE)],
            backend=backend,
            timeout=timeout,
        )
        reference[0] = (launched.values.get(0), launched.failures, launched.labels)
    dist.broadcast_object_list(reference, src=0)
    own: ProcessRecord | None = None
    error = ""
    try:
        own = run_process(rank, world_size, spec)
    except Exception as exc:  # gathered and reported by rank, as the spawned ranks are
        error = f"{type(exc).__name__}: {exc}"
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, (own, error))
    return reference[0], gathered, time.perf_counter() - started


@one_at_a_time
def check_ddp_gradients(
    make_model: Callable[[], torch.nn.Module],
    make_batch: Callable[[], Any],
    **options: Unpack[DdpOptions],
) -> DdpCheckResult:
    """Run a DDP training step on several ranks and compare it with one process.

    ``world_size`` ranks each build the model (``make_model()``), wrap it in
    ``DistributedDataParallel`` (unless it already is, or ``wrap=False`` for a
    hand-written all-reduce), build the optimizer and run ``step(model, shard,
    optimizer)`` ``steps`` times on their shard of the global batch
    (``make_batch()``, split along dim 0 by ``shard``). One more process runs the
    same code on the whole batch. The gradient each optimizer step applies, the
    parameters after it and the floating buffers are compared per rank with that
    run (``allowed = atol + rtol * |reference|``, ``atol`` by default ``rtol``
    times the tensor's largest entry, ``rtol`` by default half the digits of the
    dtype) and between ranks. The hints name the cause: gradients off by the
    world size (a summed loss, a double division), a parameter never reduced or
    unused on some ranks, a step inside ``no_sync()``, ranks given the same batch
    or the same random numbers, weights changed on one rank only, BatchNorm
    statistics per shard. A rank that raises or hangs ends the check within
    ``timeout`` with a failed result naming it; no process is left behind.

    Everything sent to the ranks must pickle: pass factories (module-level
    functions or ``functools.partial``), not models. Each rank is seeded with
    ``seed + rank`` before ``make_model`` (DDP copies rank 0's weights); the
    single-process run with ``seed``. A step that draws random numbers (dropout)
    is compared between ranks only. Under ``torchrun`` (env:// rendezvous, across
    hosts), call it on every rank: the torchrun processes are the ranks.

    Args:
        make_model: builds the model (an ``nn.Module``, or one already wrapped in
            ``DistributedDataParallel`` with the options you train with).
        make_batch: returns the global batch (tensors; ``(inputs, targets)`` for
            the default step), called once with ``seed``.
        step: ``step(model, batch, optimizer)``, one training step; default:
            ``mse_loss(model(inputs), targets)``, backward, ``optimizer.step()``.
        make_optimizer: ``make_optimizer(params)``; default ``SGD(lr=0.1)``.
        shard: ``shard(batch, rank, world_size)``, a rank's part of the batch;
            default: contiguous equal parts along dim 0.
        world_size: ranks to start (at least 2; default 2). Under torchrun, the
            group's size.
        backend: ``"gloo"`` (CPU, default) or ``"nccl"`` (one GPU a rank).
        steps: calls of ``step`` per process (default 1).
        wrap: wrap a plain module in ``DistributedDataParallel`` (default True).
        atol, rtol: tolerances (defaults above).
        seed: seeds the batch and the processes (default 0).
        timeout: seconds for the whole run, start-up included (default 60).
        name: the label in messages and reports (default: the step's name).

    Returns:
        A :class:`~gradcheck_kit.results.DdpCheckResult`, also published to the report.

    Raises:
        InvalidArgument: a model instead of a factory, something that cannot be
            pickled, ``world_size < 2``, a backend that cannot run here (nccl
            without GPUs: use gloo), a batch that does not split evenly.

    Examples:
        >>> import functools, torch, gradcheck_kit as gk
        >>> make_model = functools.partial(torch.nn.Linear, 4, 1)
        >>> def make_batch():
        ...     return torch.randn(8, 4), torch.randn(8, 1)
        >>> result = gk.check_ddp_gradients(make_model, make_batch)  # doctest: +SKIP
        >>> result.passed, result.kind  # doctest: +SKIP
        (True, 'ddp')
    """
    _validate(make_model, make_batch, dict(options))
    started = time.perf_counter()
    backend = options.get("backend", "gloo")
    problem = backend_problem(backend)
    if problem is not None:
        raise InvalidArgument(problem + ".")
    timeout = float(options.get("timeout", 60.0))
    seed = int(options.get("seed", 0))
    steps = int(options.get("steps", 1))
    step = options.get("step", default_step)
    shard = options.get("shard", even_shard)
    joined_here = False
    if not dist.is_initialized() and _torchrun_env():
        _join_env_group(backend, timeout)
        joined_here = True
    try:
        in_group = dist.is_initialized()
        world_size = options.get("world_size", dist.get_world_size() if in_group else 2)
        if world_size < 2:
            raise InvalidArgument(
                f"world_size={world_size!r} must be >= 2: a distributed check compares ranks."
            )
        if in_group and world_size != dist.get_world_size():
            raise InvalidArgument(
                f"world_size={world_size} but this process group has "
                f"{dist.get_world_size()} ranks (torchrun --nproc_per_node/--nnodes); leave "
                "world_size out under torchrun."
            )
        with preserved():
            batch = _global_batch(make_batch, seed, world_size, shard is even_shard)
        spec = DdpSpec(
            make_model=make_model,
            batch=batch,
            step=step,
            make_optimizer=options.get("make_optimizer"),
            shard=shard,
            steps=steps,
            seed=seed,
            wrap=bool(options.get("wrap", True)),
        )
        result = _run(spec, world_size, backend, timeout, in_group, options, started)
    finally:
        if joined_here:
            dist.destroy_process_group()
    recording.publish(result)
    return result


def _run(
    spec: DdpSpec,
    world_size: int,
    backend: str,
    timeout: float,
    in_group: bool,
    options: Any,
    started: float,
) -> DdpCheckResult:
    common: dict[str, Any] = {
        "name": options.get("name") or fn_name(spec.step),
        "backend": backend,
        "steps": spec.steps,
        "optimizer_steps": 0,
        "dtype": "float32",
        "atol": options.get("atol"),
        "rtol": options.get("rtol") or _default_rtol("float32"),
        "seed": spec.seed,
        "timeout": timeout,
    }
    if not in_group:
        launched = _spawned(spec, world_size, backend, timeout)
        launch_s = launched.seconds
        if launched.failures:
            return _failed_result(
                launched.failures,
                launched.labels,
                world_size,
                launch_s=launch_s,
                duration_s=time.perf_counter() - started,
                **common,
            )
        ranks = [launched.values[r] for r in range(world_size)]
        reference = launched.values[world_size]
    else:
        (ref_value, ref_failures, ref_labels), gathered, launch_s = _in_group(
            spec, backend, timeout
        )
        if ref_failures:
            return _failed_result(
                ref_failures,
                ref_labels,
                world_size,
                launch_s=launch_s,
                duration_s=time.perf_counter() - started,
                **common,
            )
        failed = {r: err for r, (_, err) in enumerate(gathered) if err}
        if failed:
            labels = tuple(f"rank {r} of {world_size}" for r in range(world_size))
            return _failed_result(
                failed,
                labels,
                world_size,
                launch_s=launch_s,
                duration_s=time.perf_counter() - started,
                **common,
            )
        ranks = [record for record, _ in gathered]
        reference = ref_value
    dtype = reference.dtype
    rtol = options.get("rtol") or _default_rtol(dtype)
    comparison = compare_records(reference, ranks, atol=options.get("atol"), rtol=rtol)
    judged = [
        leaf
        for leaf in (*comparison.leaves, *comparison.across_ranks)
        if comparison.judged_against_reference or leaf in comparison.across_ranks
    ]
    common.update(
        dtype=dtype,
        rtol=rtol,
        optimizer_steps=len(reference.steps),
    )
    del common["timeout"]
    return DdpCheckResult(
        passed=comparison.passed,
        world_size=world_size,
        parameters=reference.parameters,
        leaves=comparison.leaves,
        across_ranks=comparison.across_ranks,
        compared_with_reference=comparison.judged_against_reference,
        max_abs_error=max((leaf.max_abs_error for leaf in judged), default=0.0),
        hints=comparison.hints,
        notes=comparison.notes,
        launch_s=launch_s,
        duration_s=time.perf_counter() - started,
        **common,
    )


def assert_ddp_gradients(
    make_model: Callable[[], torch.nn.Module],
    make_batch: Callable[[], Any],
    *,
    msg: Msg = None,
    **options: Unpack[DdpOptions],
) -> DdpCheckResult:
    """Like :func:`check_ddp_gradients`, but raise :class:`DdpGradientError` when it fails.

    The message names the tensor, the rank, the optimizer step and the values
    where the ranks and one process differ, then the likely cause (``Hint:``).

    Examples:
        >>> import gradcheck_kit as gk
        >>> gk.assert_ddp_gradients(make_model, make_batch, world_size=1)  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: world_size=1 must be >= 2: ...
    """
    check_msg(msg)
    result = check_ddp_gradients(make_model, make_batch, **options)
    return fail_unless_passed(result, DdpGradientError, msg)
