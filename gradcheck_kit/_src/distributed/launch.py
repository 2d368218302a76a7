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

import contextlib
import faulthandler
import math
import os
import pickle
import queue
import re
import signal
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

__all__ = [
    "Launched",
    "diagnosis",
    "RankJob",
    "RankRun",
    "backend_problem",
    "check_sendable",
    "failure_error",
    "is_collective_timeout",
    "launch",
    "run_on_ranks",
]

# After one rank fails, how long the others get to report before they are stopped:
# a rank blocked in a collective with the failed one never returns by itself.
_GRACE_SECONDS: Final = 2.0
_JOIN_SECONDS: Final = 5.0


def diagnosis(message: str) -> RuntimeError:
    """An error for gradcheck_kit's own checks to raise in a rank: its message is the diagnosis.

    Reported without a traceback, which would only show gradcheck_kit's frames.

    Examples:
        >>> str(diagnosis("parameter 'b' got no gradient on rank 1"))
        "parameter 'b' got no gradient on rank 1"
    """
    error = RuntimeError(message)
    error.gradcheck_kit_diagnosis = True  # type: ignore[attr-defined]
    return error


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
    index: int,
    rank: int,
    world_size: int,
    backend: str,
    store_file: str,
    timeout_s: float,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    results: Any,
    stack_file: str,
) -> None:
    """One rank: join the group, run ``fn(rank, world_size, *args)``, report, leave the group.

    A failure is reported before the group is destroyed, and with the wall-clock time it
    happened: leaving the group makes the ranks blocked on this one fail too, and the
    parent must tell the cause from its consequences.
    """

    def failed(exc: BaseException) -> None:
        if getattr(exc, "gradcheck_kit_diagnosis", False):  # no traceback: the text says it all
            results.put((index, False, f"{type(exc).__name__}: {exc}", time.time()))
            return
        text = "".join(traceback.format_exception(exc)).rstrip()
        # the message's first line heads the report; the whole of it ends the traceback, once
        head = str(exc).partition("\n")[0]
        results.put((index, False, f"{type(exc).__name__}: {head}\n{text}", time.time()))

    if hasattr(signal, "SIGUSR1"):  # the parent asks a rank that hangs where it is
        faulthandler.register(signal.SIGUSR1, file=open(stack_file, "w"), all_threads=False)  # noqa: SIM115 - open until the process ends
    try:
        dist.init_process_group(
            backend,
            init_method=f"file://{store_file}",
            rank=rank,
            world_size=world_size,
            # collectives give up before the run's deadline: a rank blocked waiting for a
            # hung one then says so, and the one that never answers is the one named
            timeout=timedelta(seconds=_collective_timeout(timeout_s)),
        )
    except BaseException as exc:  # a rank that cannot join is reported, by rank
        failed(exc)
        return
    try:
        value = fn(rank, world_size, *args)
    except BaseException as exc:  # every failure of a rank is reported, by rank
        failed(exc)
    else:
        # plain pickle: torch's queue would share tensors through file descriptors that
        # close when this process exits, before the parent has read them
        results.put((index, True, pickle.dumps(value), time.time()))
    finally:
        dist.destroy_process_group()


def check_sendable(value: object, what: str, advice: str) -> None:
    """Refuse, naming ``what``, a value that cannot travel to a rank process by pickle.

    Examples:
        >>> check_sendable(lambda: 0, "make_model", "pass a factory.")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        gradcheck_kit.errors.InvalidArgument: make_model cannot be sent to another process ...
    """
    try:
        pickle.dumps(value)
    except Exception as exc:
        raise InvalidArgument(
            f"{what} cannot be sent to another process ({exc}); {advice}"
        ) from None


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
    check_sendable(
        (fn, tuple(args)),
        f"fn={fn!r:.60} or its args",
        "define fn at module level (each rank imports it by name) and pass picklable args.",
    )
    launched = launch(
        [RankJob(fn, rank, world_size, "group", tuple(args)) for rank in range(world_size)],
        backend=backend,
        timeout=timeout,
    )
    if launched.failures:
        raise failure_error(launched.failures, launched.labels, timeout)
    values = tuple(launched.values[rank] for rank in range(world_size))
    return RankRun(values, launched.seconds)


@dataclass(frozen=True)
class RankJob:
    """One process of a launch: ``fn(rank, world_size, *args)`` in the group named ``group``.

    Processes that share ``group`` form one process group (one store); a launch may
    hold several groups, started together (a single-process reference beside N ranks).
    ``label`` names the process in messages (``"rank 1 of 2"`` when empty).
    """

    fn: Callable[..., Any]
    rank: int
    world_size: int
    group: str
    args: tuple[Any, ...] = ()
    label: str = ""

    @property
    def name(self) -> str:
        """How messages call this process."""
        return self.label or f"rank {self.rank} of {self.world_size}"


@dataclass(frozen=True)
class Launched:
    """What :func:`launch` got back, by job index: values, failures (cause first), labels."""

    values: dict[int, Any]
    failures: dict[int, str]
    labels: tuple[str, ...]
    seconds: float


def launch(jobs: Sequence[RankJob], *, backend: str, timeout: float) -> Launched:
    """Start every job in its own process, wait for all, reap all; failures are returned.

    The caller has validated the jobs (picklable, backend available). Each group gets a
    file store in a temporary folder. ``failures`` maps a job index to its traceback,
    ``"timed out"``, ``"stopped"`` or an exit code, in the order they happened.
    """
    ctx = _context(sorted({job.fn.__module__ for job in jobs} - {"__main__"}))
    results = ctx.Queue()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gradcheck_kit_ranks_") as folder:
        processes = [
            ctx.Process(
                target=_rank_main,
                args=(
                    index,
                    job.rank,
                    job.world_size,
                    backend,
                    os.path.join(folder, f"store-{_safe(job.group)}"),
                    timeout,
                    job.fn,
                    job.args,
                    results,
                    os.path.join(folder, f"stack-{index}"),
                ),
                name=f"gradcheck_kit-{_safe(job.group)}-rank{job.rank}",
                daemon=True,
            )
            for index, job in enumerate(jobs)
        ]
        try:
            for process in processes:
                process.start()
            stacks = [os.path.join(folder, f"stack-{index}") for index in range(len(jobs))]
            values, failures = _collect(processes, results, started + timeout, stacks)
        finally:
            _stop(processes)
            results.close()
            results.join_thread()
    labels = tuple(job.name for job in jobs)
    return Launched(values, failures, labels, time.perf_counter() - started)


def _context(modules: Sequence[str]) -> Any:
    """Where rank processes come from: a fork server that has imported torch once.

    Each rank is then a fork of a process that imported torch but ran nothing (no
    threads, no CUDA), which starts in a fraction of the second a fresh interpreter
    takes, and the server is reused by every later launch of this process. As with
    spawn, arguments travel by pickle and the parent's ``__main__`` is imported by
    path. ``modules`` (those of the functions to run) are imported by the server
    when it starts, with ``torch._dynamo``, which DDP and the optimizers import on
    first use (a second of every rank's start otherwise). Without a fork server
    (Windows), spawn.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "torch._dynamo", __name__, *modules])
    return ctx


def _safe(group: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in group)


def _collect(
    processes: list[Any], results: Any, deadline: float, stacks: Sequence[str]
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
                # waiting in a collective for a rank that never came is not a cause
                suspects = all(is_collective_timeout(t) for t in failures.values())
                late = [r for r in range(len(processes)) if r not in values and r not in failures]
                where = _where(processes, late, stacks) if suspects else {}
                for rank in late:
                    failures[rank] = "timed out" + where.get(rank, "") if suspects else "stopped"
            continue
        if ok:
            values[rank] = pickle.loads(payload)
        else:
            failures[rank] = payload
            happened[rank] = when
    # the order they happened in, not the order they arrived in
    ordered = sorted(failures, key=lambda r: happened.get(r, math.inf))
    return values, {r: failures[r] for r in ordered}


# Frames that are not the user's: the caller of a hung rank's innermost frame is sought
# outside them.
_LIBRARY_PATHS = (
    "/torch/",
    "/multiprocessing/",
    "/threading.py",
    "gradcheck_kit/_src/distributed/",
)


def _where(processes: list[Any], late: list[int], stacks: Sequence[str]) -> dict[int, str]:
    """Where each late rank is: its Python stack, dumped by faulthandler on SIGUSR1.

    A new line, then ``at FILE:LINE in FUNC`` for a rank in its own code, or
    ``waiting inside torch ... called at FILE:LINE in FUNC`` for one blocked in torch
    (a collective, a backward).
    """
    if not hasattr(signal, "SIGUSR1"):
        return {}
    for rank in late:
        with contextlib.suppress(OSError):
            os.kill(processes[rank].pid, signal.SIGUSR1)
    found: dict[int, str] = {}
    give_up = time.perf_counter() + 1.0
    while len(found) < len(late) and time.perf_counter() < give_up:
        time.sleep(0.05)
        for rank in late:
            if rank not in found:
                frames = _frames(stacks[rank])
                if frames:
                    found[rank] = _describe(frames)
    return found


def _frames(path: str) -> list[tuple[str, str, str]]:
    """(file, line, function) of a faulthandler dump, most recent first."""
    try:
        text = open(path).read()  # noqa: SIM115 - a small file written once
    except OSError:
        return []
    return re.findall(r'File "([^"]+)", line (\d+) in (\S+)', text)


def _describe(frames: list[tuple[str, str, str]]) -> str:
    own = [f for f in frames if not any(lib in f[0] for lib in _LIBRARY_PATHS)]
    if not own:
        return ""
    file, line, func = own[0]
    at = f"{os.path.basename(file)}:{line} in {func}"
    if "/torch/" in frames[0][0]:
        return f"\nwaiting inside torch (a collective, a backward) called at {at}"
    return f"\nat {at}"


def _timed_out(text: str) -> bool:
    return text.startswith("timed out")


def _collective_timeout(timeout: float) -> float:
    """How long a collective waits: long enough for a slow rank, short of the deadline."""
    return max(0.75 * timeout, timeout - 10.0)


def is_collective_timeout(text: str) -> bool:
    """Whether a rank's failure is a collective that gave up waiting for another rank.

    Examples:
        >>> is_collective_timeout("RuntimeError: [gloo] Timed out waiting 6000ms for recv")
        True
    """
    head = text.partition("\n")[0]
    return "Timed out waiting" in head or ("timed out" in head.lower() and "gloo" in head.lower())


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


def failure_error(
    failures: dict[int, str], labels: Sequence[str], timeout: float
) -> RankFailedError:
    """The :class:`RankFailedError` for a launch's failures (cause first), naming each process."""
    # ``failures`` is in the order they happened: the first is the cause, and ranks that
    # failed after it (a collective with a rank that left) or were stopped follow from it
    own = {i: t for i, t in failures.items() if t != "stopped"} or failures
    silent = [i for i, t in own.items() if _timed_out(t)]
    # a rank stuck in its own code comes before the ranks waiting inside torch for it
    silent.sort(key=lambda i: "waiting inside torch" in own[i])
    first = (
        silent[0]
        if silent and all(_timed_out(t) or is_collective_timeout(t) for t in own.values())
        else next(iter(own))
    )
    what = own[first]

    def names(indices: Sequence[int]) -> str:
        return ", ".join(labels[i] for i in sorted(indices))

    if _timed_out(what):
        stuck = what.partition("\n")[2]
        lines = [
            f"{labels[first]} did not finish within timeout={timeout:g} s"
            + (f", {stuck}" if stuck else "")
            + f" (timed out: {names(silent)}).",
            (
                f"Likely cause: {labels[first]} is busy or stuck in its own code (a loop, a "
                "wait, a read) while the others wait for it."
                if stuck.startswith("at ")
                else "Likely cause: a collective (all_reduce, barrier, a DDP backward) that "
                "another rank never entered: a branch on the rank, or a parameter unused on "
                "some ranks."
            ),
        ]
    else:
        head, _, detail = what.partition("\n")
        lines = [f"{labels[first]} failed: {head}"]
        if detail:
            lines.append(detail)
    after = [i for i, t in own.items() if i != first and not _timed_out(t)]
    waiting = [i for i in silent if i != first and "waiting inside torch" in own[i]]
    if waiting:
        lines.append(
            "Waiting for it: "
            + "; ".join(f"{labels[i]} {own[i].partition(chr(10))[2]}" for i in waiting)
            + "."
        )
    waited = [i for i in after if is_collective_timeout(own[i])]
    if waited and _timed_out(what):
        lines.append(f"Gave up waiting for it in a collective: {names(waited)}.")
        after = [i for i in after if i not in waited]
    if after:
        lines.append(f"Failed after it (a collective with a rank that had left): {names(after)}.")
    stopped = [i for i, t in failures.items() if t == "stopped"]
    if stopped:
        lines.append(f"Stopped after it (blocked waiting for it): {names(stopped)}.")
    lines.append("Every process of the run has been stopped.")
    return RankFailedError("\n".join(lines), first, dict(failures))
