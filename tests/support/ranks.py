"""Functions a test runs on several ranks: each rank imports them by name (spawn)."""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def all_reduce_rank(rank: int, world_size: int, scale: float = 1.0) -> tuple[float, int]:
    """Sum ``scale * rank`` over the ranks; return it with this process's pid."""
    t = torch.tensor([scale * rank])
    dist.all_reduce(t)
    return float(t), os.getpid()


def raise_on_rank_one(rank: int, world_size: int) -> int:
    """Rank 1 raises; the others wait in a barrier that rank 1 never reaches."""
    if rank == 1:
        raise ValueError("bad batch on rank 1")
    dist.barrier()
    return rank


def hang_on_rank_zero(rank: int, world_size: int) -> int:
    """Rank 0 sleeps far past any timeout; the others return at once."""
    if rank == 0:
        time.sleep(600)
    return rank


def exit_on_rank_one(rank: int, world_size: int) -> int:
    """Rank 1 leaves the interpreter without a word (as a crash or os._exit does)."""
    if rank == 1:
        os._exit(3)
    return rank


def alive(pid: int) -> bool:
    """Whether a process with this pid still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def no_rank_process_left() -> bool:
    """No process started by gradcheck_kit's launcher is still running."""
    import multiprocessing

    return not [p for p in multiprocessing.active_children() if p.name.startswith("gradcheck_kit")]
