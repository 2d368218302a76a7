"""Run a function on N local ranks of a ``torch.distributed`` process group.

Each rank is a fresh process (multiprocessing's ``spawn``, as
``torch.multiprocessing.spawn`` uses: CUDA cannot be forked) that joins the
group through a file store in a temporary folder, so concurrent runs never race
for a TCP port. The parent collects every rank's return value. A rank that
raises, hangs past the timeout or dies ends the run: the other ranks, likely
blocked in a collective waiting for it, are stopped, every process is reaped,
and :class:`RankFailedError` names the rank and what happened to it.
"""

from __future__ import annotations

import math
import os
import pickle
import queue
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import torch.distributed as dist
import torch.multiprocessing as mp

from ..errors import InvalidArgument, RankFailedError
from ..validation import check_callable, check_int, check_positive

__all__ = ["RankRun", "backend_problem", "run_on_ranks"]

# After one rank fails, how long the others get to report before they are stopped:
# a rank blocked in a collective with the failed one never returns by itself.
_GRACE_SECONDS: Final = 2.0
_JOIN_SECONDS: Final = 5.0


@dataclass(frozen=True)
class RankRun:
    """What :func:`run_on_ranks` got back: each rank's return value, in rank order.

    Examples:
        >>> RankRun(values=(3, 4), seconds=1.5).values[1]
        4
    """

    values: tuple[Any, ...]
    seconds: float


def backend_problem(backend: str) -> str | None:
    """Why ``backend`` cannot run here, with what to use instead; None where it can.

    Examples:
        >>> backend_problem("gloo") is None
        True
        >>> print(backend_problem("smoke-signals"))  # doctest: +ELLIPSIS
        backend 'smoke-signals' is not a torch.distributed backend; use 'gloo' (CPU) ... (GPUs)
    """
    if not dist.is_available():
        return "torch.distributed is not available in this torch build"
    checks: dict[str, Callable[[], bool]] = {
        "gloo": dist.is_gloo_available,
        "nccl": dist.is_nccl_available,
        "mpi": dist.is_mpi_available,
    }
    if backend not in checks:
        return (
            f"backend {backend!r} is not a torch.distributed backend; "
            "use 'gloo' (CPU) or 'nccl' (GPUs)"
        )
    if not checks[backend]():
        return f"backend {backend!r} is not available in this torch build; use 'gloo' on the CPU"
    if backend == "nccl":
        import torch

        if torch.cuda.device_count() < 1:
            return "backend 'nccl' needs CUDA GPUs and there are none; use 'gloo' on the CPU"
    return None


def _rank_main(
    rank: int,
    world_size: int,
    backend: str,
    store_file: str,
    timeout_s: float,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
) -> None:
    """One rank: join the group, run ``fn(rank, world_size, *args)``, report, leave the group.

    A failure is reported before the group is destroyed, and with the wall-clock time it
    happened: leaving the group makes the ranks blocked on this one fail too, and the
    parent must tell the cause from its consequences.
    """

    def failed(exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc)).rstrip()
        # the message's first line heads the report; the whole of it ends the traceback, once
        head = str(exc).partition("\n")[0]
        results.put((rank, False, f"{type(exc).__name__}: {head}\n{text}", time.time()))

    try:
        dist.init_process_group(
            backend,
            init_method=f"file://{store_file}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    except BaseException as exc:  # a rank that cannot join is reported, by rank
        failed(exc)
        return
    try:
        value = fn(rank, world_size, *args)
    except BaseException as exc:  # every failure of a rank is reported, by rank
        failed(exc)
    else:
        results.put((rank, True, value, time.time()))
    finally:
        dist.destroy_process_group()


def run_on_ranks(
    fn: Callable[..., Any],
    world_size: int = 2,
    *,
    backend: str = "gloo",
    args: Sequence[Any] = (),
    timeout: float = 120.0,
) -> RankRun:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` local processes in one group.

    ``fn`` must be importable by name (a module-level function: each rank is a
    new interpreter) and its return value picklable. The group is initialised
    before ``fn`` runs and destroyed after it.

    Args:
        fn: the function every rank runs.
        world_size: how many ranks, at least 2.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU a rank).
        args: more arguments for ``fn``, the same on every rank (picklable).
        timeout: seconds the whole run may take, start-up included.

    Returns:
        A :class:`RankRun` with every rank's return value in rank order.

    Raises:
        InvalidArgument: ``world_size < 2``, a backend that cannot run here (naming
            the one that can), or a non-picklable ``fn``.
        RankFailedError: a rank raised (its traceback), did not finish within
            ``timeout``, or died; no process of the run is left behind.

    Examples:
        >>> from gradcheck_kit._src.distributed.launch import run_on_ranks
        >>> run_on_ranks(print, 1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: world_size=1 must be >= 2: ... compares ranks.
    """
    check_callable(fn, "fn", "pass the function every rank runs")
    check_int(world_size, "world_size")
    if world_size < 2:
        raise InvalidArgument(
            f"world_size={world_size!r} must be >= 2: a distributed check compares ranks."
        )
    check_positive(timeout, "timeout", allow_none=False)
    problem = backend_problem(backend)
    if problem is not None:
        raise InvalidArgument(problem + ".")
    try:
        # each rank is a new interpreter: fn and args travel by pickle, fn by its name
        pickle.dumps((fn, tuple(args)))
    except Exception as exc:
        raise InvalidArgument(
            f"fn={fn!r:.60} or its args cannot be sent to another process ({exc}); define fn "
            "at module level (each rank imports it by name) and pass picklable args."
        ) from None
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradcheck_kit_ranks_") as folder:
        store_file = os.path.join(folder, "store")
        processes = [
            ctx.Process(
                target=_rank_main,
                args=(rank, world_size, backend, store_file, timeout, fn, tuple(args), results),
                name=f"gradcheck_kit-rank{rank}",
                daemon=True,
            )
            for rank in range(world_size)
        ]
        try:
            for process in processes:
                process.start()
            values, failures = _collect(processes, results, started + timeout)
        finally:
            _stop(processes)
            results.close()
            results.join_thread()
    if failures:
        raise _failure(failures, world_size, timeout)
    return RankRun(tuple(values[rank] for rank in range(world_size)), time.perf_counter() - started)


def _collect(
    processes: list[Any], results: Any, deadline: float
) -> tuple[dict[int, Any], dict[int, str]]:
    """Every rank's value, or what went wrong with each rank that failed."""
    values: dict[int, Any] = {}
    failures: dict[int, str] = {}
    happened: dict[int, float] = {}
    while len(values) + len(failures) < len(processes):
        if failures:
            # the others may be blocked on the failed rank: give them a moment, no more
            deadline = min(deadline, time.perf_counter() + _GRACE_SECONDS)
        try:
            rank, ok, payload, when = results.get(timeout=0.1)
        except queue.Empty:
            now = time.perf_counter()
            for rank, process in enumerate(processes):
                reported = rank in values or rank in failures
                if not reported and not process.is_alive() and process.exitcode not in (0, None):
                    failures[rank] = f"died with exit code {process.exitcode}"
                    # its death is seen late, by polling; a rank that died without a word
                    # is the cause, the errors of the ranks connected to it follow from it
                    happened[rank] = -math.inf
            if now >= deadline:
                for rank in range(len(processes)):
                    if rank not in values and rank not in failures:
                        failures[rank] = "timed out" if not failures else "stopped"
            continue
        if ok:
            values[rank] = payload
        else:
            failures[rank] = payload
            happened[rank] = when
    # the order they happened in, not the order they arrived in
    ordered = sorted(failures, key=lambda r: happened.get(r, math.inf))
    return values, {r: failures[r] for r in ordered}


def _stop(processes: list[Any]) -> None:
    """Reap every process: join those that finished, terminate, then kill the rest."""
    for process in processes:
        if process.pid is not None:
            process.join(timeout=0.5 if process.is_alive() else None)
    for signal_it in ("terminate", "kill"):
        alive = [p for p in processes if p.pid is not None and p.is_alive()]
        for process in alive:
            getattr(process, signal_it)()
        for process in alive:
            process.join(timeout=_JOIN_SECONDS)


def _failure(failures: dict[int, str], world_size: int, timeout: float) -> RankFailedError:
    # ``failures`` is in the order they happened: the first is the cause, and ranks that
    # failed after it (a collective with a rank that left) or were stopped follow from it
    own = {r: t for r, t in failures.items() if t != "stopped"} or failures
    rank = next(iter(own))
    what = own[rank]
    if what == "timed out":
        lines = [
            f"rank {rank} of {world_size} did not finish within timeout={timeout:g} s "
            f"(ranks timed out: {sorted(r for r, t in own.items() if t == 'timed out')}).",
            "Likely cause: a collective (all_reduce, barrier, a DDP backward) that another "
            "rank never entered: a branch on the rank, or a parameter unused on some ranks.",
        ]
    else:
        head, _, detail = what.partition("\n")
        lines = [f"rank {rank} of {world_size} failed: {head}"]
        if detail:
            lines.append(detail)
    after = [r for r, t in own.items() if r != rank and t != "timed out"]
    if after:
        lines.append(f"Ranks {after} failed after it (a collective with a rank that had left).")
    stopped = sorted(r for r, t in failures.items() if t == "stopped")
    if stopped:
        lines.append(f"Ranks {stopped} were stopped after it (blocked waiting for it).")
    lines.append("Every process of the run has been stopped.")
    return RankFailedError("\n".join(lines), rank, dict(failures))
