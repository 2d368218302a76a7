"""check_ddp_gradients: 2 gloo ranks against one process; every planted DDP bug is named."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import pytest
import torch
import torch.distributed as dist
from _schemas import validate_results
from support import ddp_steps as s
from support import ranks

import gradcheck_kit as gk
from gradcheck_kit._src import recording
from gradcheck_kit._src.results import DdpCheckResult
from gradcheck_kit.errors import DdpGradientError, InvalidArgument

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo in this torch build"
)


def _kinds(result: DdpCheckResult) -> list[str]:
    return [h.kind for h in result.hints]


def test_a_correct_loop_with_no_sync_accumulation_and_clipping_passes() -> None:
    result = gk.check_ddp_gradients(s.Net, s.make_batch, step=s.accumulate_clip_step, steps=2)
    assert result.passed, result.summary()
    assert result.compared_with_reference and result.optimizer_steps == 2
    # every parameter of every rank was compared: gradient and weights after each step
    assert {(leaf.parameter, leaf.what, leaf.rank) for leaf in result.leaves} == {
        (name, what, rank)
        for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
        for what in ("grad", "param")
        for rank in (0, 1)
    }
    assert 0 < result.max_abs_error < 1e-5
    assert ranks.no_rank_process_left()


def test_a_correct_hand_written_all_reduce_passes_with_adam_and_three_ranks() -> None:
    result = gk.check_ddp_gradients(
        s.broadcast_net,
        s.make_batch,
        step=s.all_reduce_step,
        wrap=False,
        make_optimizer=s.adam,
        world_size=4,
        steps=2,
    )
    assert result.passed, result.summary()
    assert result.world_size == 4 and {leaf.rank for leaf in result.leaves} == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("case", "options", "kind", "named"),
    [
        ("summed loss", {"step": s.summed_loss_step}, "factor", "1/world_size (×0.5)"),
        ("divided twice", {"step": s.divided_twice_step}, "factor", "1/world_size (×0.5)"),
        ("step in no_sync", {"step": s.step_inside_no_sync}, "no_sync", "inside a no_sync()"),
        ("weights on rank 0", {"step": s.edit_on_rank_zero_step}, "one_rank_weights", "fc2.weight"),
        ("same batch", {"shard": s.same_shard}, "same_batch", "ranks 0 and 1 got the same batch"),
        (
            "gradient hook on rank 0",
            {"step": s.hook_on_rank_zero_step},
            "hooks",
            "gradient hooks are not the same on every rank ('fc1.weight' on ranks [0]",
        ),
        (
            "skipped all-reduce",
            {"step": s.skip_fc2_all_reduce_step, "wrap": False, "make_model": s.broadcast_net},
            "not_reduced",
            "['fc2.bias', 'fc2.weight']",
        ),
        (
            "same seed",
            {"make_model": s.dropout_net_seeded_alike},
            "same_seed",
            "dropout masks (and every random draw) are identical",
        ),
        ("per-shard batchnorm", {"make_model": s.batchnorm_net}, "batchnorm", "SyncBatchNorm"),
        (
            "unused on a rank",
            {"make_model": functools.partial(s.Net, extra=True)},
            "unused",
            "['extra.weight', 'extra.bias'] got no gradient on this rank (rank 1, step 1)",
        ),
        (
            "unused, find_unused_parameters",
            {"make_model": s.unused_ok_net},
            "unused",
            "'extra.weight' on ranks [1]",
        ),
    ],
)
def test_each_planted_bug_is_caught_and_named(
    case: str, options: dict[str, Any], kind: str, named: str
) -> None:
    make_model = options.pop("make_model", s.Net)
    result = gk.check_ddp_gradients(make_model, s.make_batch, timeout=60, **options)
    assert not result.passed, case
    assert kind in _kinds(result), (case, result.summary())
    assert named in result.summary(), result.summary()
    assert "Reproduce: gradcheck_kit.check_ddp_gradients(" in result.summary()
    assert ranks.no_rank_process_left()


def test_a_gradient_hook_is_a_bug_only_where_the_ranks_differ() -> None:
    alike = gk.check_ddp_gradients(s.Net, s.make_batch, step=s.hook_on_every_rank_step)
    assert alike.passed, alike.summary()
    apart = gk.check_ddp_gradients(s.Net, s.make_batch, step=s.hook_on_rank_zero_step)
    # the hook explains the gradients and so the weights that differ: no other hint
    assert _kinds(apart) == ["hooks"], apart.summary()


def test_the_factor_is_shown_where_the_gradients_differ() -> None:
    result = gk.check_ddp_gradients(s.Net, s.make_batch, step=s.summed_loss_step)
    (worst,) = [leaf for leaf in result.leaves if leaf.what == "grad" and leaf.rank == 1][:1]
    assert worst.mismatched == worst.numel
    assert worst.value == pytest.approx(worst.reference / 2, rel=1e-5)
    # the ranks agree with each other: the reduction itself is right
    assert not result.across_ranks


def test_a_frozen_integer_parameter_first_does_not_set_the_dtype() -> None:
    # PyTorch's own DDP test model (distributed_test.py's Net) registers a frozen long
    # parameter before its layers: the tolerances come from the floating parameters
    result = gk.check_ddp_gradients(s.FrozenIntegerFirst, s.make_batch)
    assert result.passed, result.summary()
    assert result.dtype == "float32"


def test_a_loop_ending_inside_no_sync_without_an_optimizer_is_judged_at_its_last_sync() -> None:
    # accelerate's test_distributed_sync: three backwards, the first and last under
    # no_sync(), no optimizer: the last gradients are unreduced on purpose
    result = gk.check_ddp_gradients(
        s.Net, s.make_batch, step=s.accumulate_no_optimizer_step, steps=3
    )
    assert result.passed, result.summary()
    assert "after the last backward outside no_sync()" in result.summary()
    summed = functools.partial(s.accumulate_no_optimizer_step, reduction="sum")
    result = gk.check_ddp_gradients(s.Net, s.make_batch, step=summed, steps=3)
    assert not result.passed and not result.across_ranks, result.summary()
    # without an optimizer step the factor is read from the gradients compared
    assert "1/world_size (×0.5)" in result.summary(), result.summary()


def test_dropout_seeded_per_rank_is_compared_across_ranks_only() -> None:
    result = gk.check_ddp_gradients(s.dropout_net, s.make_batch)
    assert result.passed, result.summary()
    assert not result.compared_with_reference
    assert "compared across ranks only" in result.summary()


def test_a_rank_that_raises_fails_the_check_naming_it() -> None:
    result = gk.check_ddp_gradients(s.Net, s.make_batch, step=s.raise_on_rank_one_step)
    assert not result.passed and result.failed_rank == 1
    assert "rank 1 of 2 failed: ValueError: corrupt shard on rank 1" in result.summary()
    assert ranks.no_rank_process_left()


def test_a_rank_that_hangs_ends_at_the_timeout_with_no_process_left() -> None:
    started = time.perf_counter()
    result = gk.check_ddp_gradients(s.Net, s.make_batch, step=s.hang_on_rank_one_step, timeout=8)
    assert time.perf_counter() - started < 8 + 30  # ends, however loaded the machine
    assert not result.passed and result.failed_rank == 1
    assert "did not finish within timeout=8 s" in result.summary()
    assert "hang" in _kinds(result)
    assert ranks.no_rank_process_left()


def test_assert_raises_with_the_result_and_publishes_a_valid_record() -> None:
    published: list[Any] = []
    unsubscribe = recording.subscribe(published.append)
    try:
        with pytest.raises(DdpGradientError) as err:
            gk.assert_ddp_gradients(s.Net, s.make_batch, step=s.summed_loss_step, msg="ddp")
    finally:
        unsubscribe()
    assert err.value.result is published[-1] and err.value.result.kind == "ddp"
    assert str(err.value).startswith("ddp")
    record = err.value.result.to_dict()
    validate_results({"schema_version": 1, "results": [record]})
    assert DdpCheckResult.from_dict(json.loads(json.dumps(record))) == err.value.result


def test_the_callers_rng_and_grad_mode_are_left_as_they_were() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    gk.check_ddp_gradients(s.Net, s.make_batch, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.is_grad_enabled() and not dist.is_initialized()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gk.check_ddp_gradients(s.Net(), s.make_batch), "pass a factory"),
        (lambda: gk.check_ddp_gradients(lambda: s.Net(), s.make_batch), "pass a factory"),
        (lambda: gk.check_ddp_gradients(s.Net, s.make_batch, world_size=1), "must be >= 2"),
        (
            lambda: gk.check_ddp_gradients(s.Net, s.make_batch, backend="nccl"),
            "use 'gloo' on the CPU",
        ),
        (lambda: gk.check_ddp_gradients(s.Net, s.odd_batch), "not a multiple of world_size=2"),
        (lambda: gk.check_ddp_gradients(s.Net, lambda: 3), "without a tensor"),
        (
            lambda: gk.check_ddp_gradients(s.Net, s.make_batch, step=lambda m, b, o: None),
            "step=",
        ),
        (lambda: gk.check_ddp_gradients(s.Net, s.make_batch, stpes=2), "stpes"),  # type: ignore[call-arg]
        (lambda: gk.check_ddp_gradients(s.Net, s.make_batch, steps=0), "steps"),
    ],
)
def test_bad_input_is_refused_before_any_process_starts(call: Any, message: str) -> None:
    if "gloo" in message and torch.cuda.device_count() > 0:
        pytest.skip("GPUs are present: nccl can run")
    with pytest.raises(InvalidArgument) as err:
        call()
    assert message in str(err.value)
    assert ranks.no_rank_process_left()
