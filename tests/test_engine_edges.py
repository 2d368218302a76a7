"""Verdicts and errors at the edges of finite differences: outputs that change shape, a
function that raises next to the point, what an error leaves behind, and auto mode's choice."""

from __future__ import annotations

import gc

import pytest
import torch
from _functions import OneEntryWrong

import gradcheck_kit as gk
from gradcheck_kit._src.engine.memory import AllocationCounter


def f64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def keep_above_half(x: torch.Tensor) -> torch.Tensor:
    """A selection: the entries >= 0.5 (one sits exactly on the threshold)."""
    return x[x >= 0.5] * 2.0


@pytest.mark.parametrize("mode", ["full", "fast", "auto"])
def test_an_output_that_changes_shape_gets_a_verdict_naming_output_shapes_and_point(
    mode: str,
) -> None:
    x = f64(0.9, 0.5, 0.1, 0.7)
    result = gk.check_gradients(keep_above_half, x, mode=mode)
    assert not result.passed and result.status == "shape_changed"
    hint = result.hints[0]
    assert hint.kind == "shape_changed" and hint.output == "output"
    assert "shape (3,) at the point being checked, but shape (2,)" in hint.text
    assert "finite differences cannot be taken across it" in hint.text
    if mode == "full":
        # the coordinate that crossed the threshold, and the step that took it there
        assert "input at index (1,) moved by -1e-06 (from 0.5 to 0.499999)" in hint.text
    summary = result.summary()
    assert summary.startswith("[gradcheck] fn's outputs change shape under a small step")
    with pytest.raises(gk.errors.OutputShapeChangedError, match="discrete choice"):
        gk.assert_gradients_close(keep_above_half, x, mode=mode)
    # the result round-trips through the JSON schema with its status
    again = gk.GradcheckResult.from_dict(result.to_dict())
    assert again.status == "shape_changed"


def test_outputs_that_change_structure_get_the_same_verdict() -> None:
    def matches(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(v * 1.0 for v in x if v > 0.5)  # one output per match

    result = gk.check_gradients(matches, f64(0.9, 0.5, 0.7), mode="full")
    assert result.status == "shape_changed"
    assert "the outputs" in result.hints[0].text


def test_a_function_raising_next_to_the_point_says_where_and_what_to_do() -> None:
    def log_barrier(x: torch.Tensor) -> torch.Tensor:
        if bool((x <= 0).any()):
            raise ValueError("log barrier outside its domain")
        return torch.log(x).sum()

    x = f64(2.0, 5e-7, 3.0)  # the step 1e-6 crosses 0 at index 1
    with pytest.raises(gk.errors.PerturbedEvaluationError) as info:
        gk.check_gradients(log_barrier, x, mode="full")
    text = str(info.value)
    assert "ValueError: log barrier outside its domain" in text
    assert "input at index (1,) moved by -1e-06 (from 5e-07 to -5e-07)" in text
    assert "smaller eps" in text and "further from the edge" in text
    assert isinstance(info.value.__cause__, ValueError)
    # a smaller step stays inside the domain
    assert gk.check_gradients(log_barrier, x, mode="full", eps=1e-9, rtol=1e-2).passed


def test_an_error_leaves_nothing_of_the_check_allocated() -> None:
    x = torch.randn(300, dtype=torch.float64, requires_grad=True)
    x0 = x.detach().clone()

    def fails_when_entry_7_moves(t: torch.Tensor) -> torch.Tensor:
        # under vmap, bool() of a batched tensor raises: the check falls back to a loop
        # over the batch it built, and the loop meets the error at entry 7
        if bool(t[7] != x0[7]):
            raise RuntimeError("boom")
        return torch.tanh(t) * 2

    gc.collect()
    with AllocationCounter() as counter, pytest.raises(gk.errors.PerturbedEvaluationError) as info:
        gk.check_gradients(fails_when_entry_7_moves, x, mode="full")
    gc.collect()
    # the error is still held (as a test framework holds it), but not the batch its
    # frames saw: the stacked perturbed inputs alone were 601 x 300 float64 (1.4 MB)
    assert "input at index (7,)" in str(info.value)
    assert counter.peak > 1_400_000
    assert counter.live < 20_000, counter.live


def test_auto_records_its_choice_and_the_figures_behind_it() -> None:
    small = gk.check_gradients(torch.sin, torch.randn(4, dtype=torch.float64, requires_grad=True))
    assert small.mode == "full" and small.mode_requested == "auto"
    assert any(n.startswith("auto: full mode") for n in small.notes), small.notes
    big = gk.check_gradients(torch.sin, torch.randn(20_000, dtype=torch.float64).requires_grad_())
    assert big.mode == "fast"
    (note,) = [n for n in big.notes if n.startswith("auto:")]
    assert "full mode (40,000 perturbed evaluations" in note and "predicted at" in note


def test_auto_takes_full_mode_to_diagnose_a_failure_fast_mode_found() -> None:
    x = torch.randn(500, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(OneEntryWrong.apply, x)
    assert not result.passed and result.mode == "full"
    assert any("auto: full mode after fast mode failed" in n for n in result.notes)
    assert result.pairs[0].mismatched == 1 and result.pairs[0].error_map is not None


def test_a_function_that_vmaps_differently_is_evaluated_point_by_point() -> None:
    # The batched evaluation carries the unperturbed point; when it differs from the
    # plain call, the check falls back to a loop instead of trusting vmap.
    def odd_under_vmap(x: torch.Tensor) -> torch.Tensor:
        batched = torch._C._functorch.is_batchedtensor(x)
        return torch.sin(x) * (3.0 if batched else 1.0)

    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(odd_under_vmap, x, mode="full")
    assert result.passed and not result.vectorized
    assert any("differs from the plain call" in n for n in result.notes), result.notes


def test_roundoff_that_moves_between_calls_is_not_randomness() -> None:
    # LAPACK and MKL may sum in another order from call to call: an entry far below the
    # outputs' scale then differs beyond its own roundoff, but not beyond the scale's.
    calls = [0]

    def reordered(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        y = torch.stack([x.sum(), 1e-9 * x[0]])
        jitter = torch.tensor([0.0, (calls[0] % 2) * 1e-16], dtype=x.dtype)
        return y + jitter * y.detach().abs().max()

    result = gk.check_gradients(reordered, f64(0.5, 1.5, -2.0), mode="fast")
    assert result.passed and result.status == "passed", result.summary()

    def random(x: torch.Tensor) -> torch.Tensor:
        return x * (1 + 1e-6 * torch.rand(()))

    assert gk.check_gradients(random, f64(0.5, 1.5), mode="fast").status == "nondeterministic"
