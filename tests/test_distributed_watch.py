"""watch_training on every rank of a DDP loop: the ranks are compared after every step.

One launch of two gloo ranks runs every loop of ``support/ddp_loops.py`` (a correct one,
and one per planted bug); each test reads what the ranks' watchers reported.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist
from support import ddp_loops

import gradcheck_kit as gk
from gradcheck_kit._src.distributed.launch import run_on_ranks
from gradcheck_kit._src.training.across_ranks import BATCH_STEPS, COMPARE_EVERY
from gradcheck_kit.results import TrainingReport

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="no gloo in this torch build"
)
WORLD = 2


@pytest.fixture(scope="module")
def loops() -> tuple[dict[str, dict[str, Any]], ...]:
    return run_on_ranks(ddp_loops.watched_loops, WORLD, timeout=150).values


def _findings(loops: Any, scenario: str, rank: int) -> list[tuple[Any, ...]]:
    return [tuple(f) for f in loops[rank][scenario]["findings"]]


def _same_on_every_rank(loops: Any, scenario: str) -> list[tuple[Any, ...]]:
    found = _findings(loops, scenario, 0)
    for rank in range(1, WORLD):
        assert _findings(loops, scenario, rank) == found
        # word for word: every rank judged the same gathered numbers
        assert (
            loops[rank][scenario]["report"]["findings"] == loops[0][scenario]["report"]["findings"]
        )
    return found


@needs_gloo
@pytest.mark.parametrize("scenario", ["correct", "correct_broadcast", "bn_unsynced_allowed"])
def test_a_correct_ddp_loop_gives_no_finding_on_any_rank(loops: Any, scenario: str) -> None:
    for rank in range(WORLD):
        result = loops[rank][scenario]
        assert result["findings"] == [], result["summary"]
        report = TrainingReport.from_dict(result["report"])
        assert (report.rank, report.world_size, report.optimizer_steps) == (
            rank,
            WORLD,
            ddp_loops.STEPS,
        )
        assert report.backward_passes == ddp_loops.STEPS * ddp_loops.MICRO
        assert f"on rank {rank} of {WORLD}" in result["summary"]


@needs_gloo
def test_a_few_numbers_per_step_in_one_all_gather_per_batch_of_steps(loops: Any) -> None:
    # One all-gather every BATCH_STEPS (64) steps, then one for the rest at the end of the
    # watch; never the tensors. Two flags per step; one checksum per tensor at steps 1-16,
    # 32, 48 and 64 (COMPARE_EVERY = 16), and of the state after the last step (68) at the end.
    assert (BATCH_STEPS, COMPARE_EVERY, ddp_loops.STEPS) == (64, 16, 68)
    for rank in range(WORLD):
        # SyncBatchNorm-like buffers compared: 6 gradients, 6 parameters, 3 buffers
        assert loops[rank]["correct"]["gathers"] == [2 * 64 + 19 * 15, 2 * (4 + 1) + 15]
        # DDP re-broadcasts buffers at forward: only gradients and parameters
        assert loops[rank]["correct_broadcast"]["gathers"] == [2 * 64 + 19 * 12, 2 * 5 + 12]
        assert loops[rank]["edit_on_rank_0_not_distributed"]["gathers"] == []


@needs_gloo
def test_a_parameter_changed_on_rank_0_only_is_named_on_every_rank(loops: Any) -> None:
    assert _same_on_every_rank(loops, "edit_on_rank_0") == [
        ("params_differ_across_ranks", "fc1.bias", 3, (0, 1))
    ]
    (finding,) = loops[1]["edit_on_rank_0"]["report"]["findings"]
    # every comparison from the edit on (steps 3-16, 32, 48, 64, the end of the watch), of
    # which a finding keeps the first ten steps
    assert finding["ranks"] == [0, 1] and finding["steps"] == list(range(3, 13))
    assert finding["occurrences"] == 14 + 3 + 1
    assert "agreed after step" not in finding["found"]  # step 2 was compared: exact
    assert (
        "after step 3 of SGD 'fc1.bias' is not the same on every rank: ranks 0 and 1 differ"
        in (finding["found"])
    )
    assert "if rank == 0" in finding["cause"]
    assert "on ranks 0 and 1" in loops[1]["edit_on_rank_0"]["summary"]


@needs_gloo
def test_a_checkpoint_loaded_on_rank_0_only_is_seen_at_the_first_step(loops: Any) -> None:
    assert _same_on_every_rank(loops, "load_on_rank_0") == [
        ("params_differ_across_ranks", "head.weight", 1, (0, 1))
    ]


@needs_gloo
def test_a_hand_rolled_all_reduce_that_skips_a_parameter_is_grad_not_reduced(loops: Any) -> None:
    # head.bias then differs as a parameter too: its gradient is named as the cause, once
    assert _same_on_every_rank(loops, "hand_rolled") == [
        ("grad_not_reduced", "head.bias", 1, (0, 1))
    ]
    (finding,) = loops[0]["hand_rolled"]["report"]["findings"]
    assert finding["occurrences"] == 19  # the steps whose gradients are compared: 1-16, 32, 48, 64
    assert "averaged by hand" in finding["cause"] and "dist.all_reduce(p.grad)" in finding["fix"]
    (every,) = loops[0]["hand_rolled_every_step"]["report"]["findings"]
    assert every["occurrences"] == ddp_loops.STEPS  # compare_every=1


@needs_gloo
def test_a_change_between_two_comparisons_is_found_at_the_next_one(loops: Any) -> None:
    assert _same_on_every_rank(loops, "edit_late_on_rank_0") == [
        ("params_differ_across_ranks", "fc1.bias", 32, (0, 1))
    ]
    (finding,) = loops[0]["edit_late_on_rank_0"]["report"]["findings"]
    assert finding["found"].endswith("(compared every few steps: the ranks agreed after step 16)")


@needs_gloo
def test_a_step_inside_no_sync_is_named_not_each_parameter(loops: Any) -> None:
    assert _same_on_every_rank(loops, "step_inside_no_sync") == [
        ("step_inside_no_sync", None, 1, (0, 1))
    ]
    (finding,) = loops[0]["step_inside_no_sync"]["report"]["findings"]
    assert "gradients of 6 parameters that are not the same on every rank" in finding["found"]
    assert "no_sync()" in finding["fix"]
    # a step whose tensors are not compared still sends its flag; the parameters it moved
    # apart, seen at the next comparison (step 32), are explained by it, not reported
    assert _same_on_every_rank(loops, "step_20_inside_no_sync") == [
        ("step_inside_no_sync", None, 20, (0, 1))
    ]
    (late,) = loops[0]["step_20_inside_no_sync"]["report"]["findings"]
    assert late["found"].endswith("so its backward was not all-reduced")


@needs_gloo
def test_batchnorm_statistics_that_differ_are_named_and_can_be_allowed(loops: Any) -> None:
    assert _same_on_every_rank(loops, "bn_unsynced") == [
        ("buffers_differ_across_ranks", "bn.running_mean", 1, (0, 1)),
        ("buffers_differ_across_ranks", "bn.running_var", 1, (0, 1)),
    ]
    finding = loops[0]["bn_unsynced"]["report"]["findings"][0]
    assert "buffers_may_differ=['bn.running_mean']" in finding["fix"]
    assert loops[0]["bn_unsynced_allowed"]["findings"] == []


@needs_gloo
def test_a_finding_of_one_rank_is_reported_by_that_rank_only(loops: Any) -> None:
    assert _findings(loops, "no_zero_grad_on_rank_1", 0) == []
    found = _findings(loops, "no_zero_grad_on_rank_1", 1)
    assert {kind for kind, *_ in found} == {"grad_not_reset"}
    assert {ranks for *_, ranks in found} == {(1,)}
    assert "on rank 1\n" in loops[1]["no_zero_grad_on_rank_1"]["summary"]


@needs_gloo
def test_distributed_false_turns_the_cross_rank_checks_off(loops: Any) -> None:
    for rank in range(WORLD):
        result = loops[rank]["edit_on_rank_0_not_distributed"]
        assert result["findings"] == []
        assert "rank" not in result["report"]


def test_distributed_true_without_a_process_group_is_refused_on_entry() -> None:
    model = torch.nn.Linear(2, 1)
    watcher = gk.watch_training(
        model, torch.optim.SGD(model.parameters(), lr=0.1), distributed=True
    )
    with pytest.raises(gk.InvalidArgument, match=r"distributed=True, but torch\.distributed"):
        watcher.__enter__()


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"distributed": "yes"}, gk.InvalidArgument, "distributed='yes' must be None, True"),
        ({"buffers_may_differ": 3}, gk.errors.InvalidArgumentType, "buffers_may_differ=3"),
        ({"compare_every": 0}, gk.InvalidArgument, "compare_every=0 must be >= 1"),
    ],
)
def test_bad_distributed_options_are_refused(options: Any, error: type, text: str) -> None:
    model = torch.nn.Linear(2, 1)
    with pytest.raises(error, match=None) as err:
        gk.watch_training(model, torch.optim.SGD(model.parameters(), lr=0.1), **options)
    assert text in str(err.value)


def test_a_single_process_loop_is_not_compared_and_its_records_are_unchanged() -> None:
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gk.watch_training(model, opt, on_error="record") as watch:
        for _ in range(2):
            model(torch.ones(1, 2)).sum().backward()
            opt.step()
    report = watch.report
    assert report is not None and report.rank is None and report.findings
    data = report.to_dict()
    assert "rank" not in data and all("ranks" not in f for f in data["findings"])
    assert TrainingReport.from_dict(data) == report


def test_the_report_shows_the_rank_and_a_findings_ranks() -> None:
    from gradcheck_kit.report.training_detail import training_detail

    record = {
        "check": "watch_training",
        "rank": 1,
        "world_size": 2,
        "findings": [
            {
                "title": "Parameter differs across ranks",
                "parameter": "w",
                "step": 3,
                "ranks": [0, 1],
            }
        ],
    }
    detail, used = training_detail(record)
    assert ("rank", "1") in detail.settings and ("ranks", "2") in detail.settings
    labels = [label for label, _ in detail.findings[0].facts]
    assert labels[:3] == ["parameter", "step", "ranks"]
    assert {"rank", "world_size"} <= used
