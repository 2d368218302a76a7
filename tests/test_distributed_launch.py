"""run_on_ranks: N local gloo ranks; a rank that raises, hangs or dies is named, none is left."""

from __future__ import annotations

import os
import pickle
import time

import pytest
import torch.distributed as dist
from support import ranks

import gradcheck_kit as gk
from gradcheck_kit._src.distributed.launch import backend_problem, run_on_ranks

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo in this torch build"
)


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_runs_in_its_own_process_in_one_group(world_size: int) -> None:
    run = run_on_ranks(ranks.all_reduce_rank, world_size, args=(2.0,), timeout=120)
    total = 2.0 * sum(range(world_size))
    assert [value for value, _ in run.values] == [total] * world_size
    pids = {pid for _, pid in run.values}
    assert len(pids) == world_size and os.getpid() not in pids
    assert not any(ranks.alive(pid) for pid in pids) and ranks.no_rank_process_left()


def test_a_rank_that_raises_is_named_with_its_error_and_the_blocked_ones_are_stopped() -> None:
    with pytest.raises(gk.errors.RankFailedError) as err:
        run_on_ranks(ranks.raise_on_rank_one, 2, timeout=120)
    assert err.value.rank == 1
    text = str(err.value)
    assert "rank 1 of 2 failed: ValueError: bad batch on rank 1" in text
    assert "raise_on_rank_one" in text  # the traceback shows the user's frame
    assert ranks.no_rank_process_left()
    again = pickle.loads(pickle.dumps(err.value))
    assert (again.rank, again.failures, str(again)) == (1, err.value.failures, text)


def test_a_rank_that_hangs_ends_the_run_at_the_timeout() -> None:
    started = time.perf_counter()
    with pytest.raises(gk.errors.RankFailedError) as err:
        run_on_ranks(ranks.hang_on_rank_zero, 2, timeout=15)
    assert time.perf_counter() - started < 15 + 15  # the timeout, and stopping the processes
    assert err.value.rank == 0
    assert err.value.failures == {0: "timed out\nat ranks.py:30 in hang_on_rank_zero"}
    # where it hung, from its stack
    assert "did not finish within timeout=15 s, at ranks.py:30 in hang_on_rank_zero" in str(
        err.value
    )
    assert ranks.no_rank_process_left()


def test_a_rank_that_dies_is_named_with_its_exit_code() -> None:
    with pytest.raises(gk.errors.RankFailedError) as err:
        run_on_ranks(ranks.exit_on_rank_one, 2, timeout=120)
    assert err.value.rank == 1 and "died with exit code 3" in str(err.value)
    assert ranks.no_rank_process_left()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world_size": 1}, "world_size=1 must be >= 2"),
        ({"world_size": True}, "world_size"),
        ({"backend": "smoke"}, "use 'gloo' (CPU)"),
        ({"timeout": 0}, "timeout"),
        ({"fn": lambda rank, world_size: rank}, "define fn at module level"),
        ({"args": (lambda: 0,)}, "pass picklable args"),
    ],
)
def test_bad_input_is_refused_before_any_process_starts(
    kwargs: dict[str, object], message: str
) -> None:
    call = {"fn": ranks.all_reduce_rank, "world_size": 2, **kwargs}
    with pytest.raises(gk.errors.InvalidArgument, match=None) as err:
        run_on_ranks(**call)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_nccl_without_gpus_suggests_gloo() -> None:
    import torch

    if torch.cuda.device_count() > 0 and dist.is_nccl_available():
        pytest.skip("this machine can run nccl")
    problem = backend_problem("nccl")
    assert problem is not None and "use 'gloo' on the CPU" in problem
