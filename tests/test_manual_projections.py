"""Hand-written derivatives of large inputs: random projections over the inputs (fast mode)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clock import steady_engine_clock

import gradcheck_kit as gk

N_LARGE = 100_000


def _x(n: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()


def _weights(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.linspace(0.5, 2.0, n, dtype=dtype)


def _loss(a: torch.Tensor) -> Any:
    def loss(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(a * x).sum()

    return loss


def _grad(a: torch.Tensor) -> Any:
    def grad(x: torch.Tensor) -> torch.Tensor:
        return a * (1 - torch.tanh(a * x) ** 2)

    return grad


@pytest.fixture
def steady_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    # evaluation counts depend on measured call times (loop or batch, rows that fit)
    steady_engine_clock(monkeypatch)


@pytest.mark.usefixtures("steady_clock")
def test_a_right_gradient_of_100k_inputs_passes_at_a_constant_cost() -> None:
    evaluations = []
    # both sizes above the 65,536 entries from which fn is evaluated point by point (below,
    # one vmapped call evaluates all points and counts once)
    for n in (70_000, N_LARGE):
        x = _x(n)
        before = x.detach().clone()
        a = _weights(n)
        result = gk.check_matches_manual(_loss(a), _grad(a), x)
        assert result.passed and result.mode == "fast" and result.mode_requested == "auto"
        assert result.odd_one_out is None
        (pair,) = result.pairs
        assert (pair.output, pair.input, pair.total) == ("projections", "directions", 4)
        assert any("4 random direction(s)" in note for note in result.notes)
        # the user's objects are left as they were
        assert torch.equal(x.detach(), before) and x.grad is None
        evaluations.append(result.evaluations)
    # fn twice to see it is deterministic, 2 per probe, and manual_grad once
    assert evaluations[0] == evaluations[1] <= 20


@pytest.mark.usefixtures("steady_clock")
def test_one_wrong_entry_among_100k_is_named_as_yours() -> None:
    x = _x(N_LARGE)
    a = _weights(N_LARGE)
    right = _grad(a)

    def one_entry_wrong(x: torch.Tensor) -> torch.Tensor:
        g = right(x).clone()
        g[54_321] = -g[54_321]  # a sign error in one entry
        return g

    result = gk.check_matches_manual(_loss(a), one_entry_wrong, x)
    assert not result.passed and result.odd_one_out == "manual" and result.mode == "fast"
    assert result.evaluations <= 20
    # your derivative and autograd differ at one entry, which its own finite differences judge
    entry, probes = result.pairs
    assert (entry.input, entry.total, entry.manual_wrong) == ("input", 1, 1)
    assert entry.worst[0].input_index == (54_321,)
    assert (probes.output, probes.input, probes.total) == ("projections", "directions", 4)
    assert result.hints[0].kind == "odd_one_out" and "sign" in [h.kind for h in result.hints]
    text = result.summary()
    assert (
        "your derivative disagrees with both autograd and finite differences at index (54321,)"
        in text
    )
    assert "at 1 of 100,000 entries" in text and "mode='fast'" in text


def test_a_large_error_shows_in_every_projection() -> None:
    x = _x(N_LARGE)
    a = _weights(N_LARGE)
    result = gk.check_matches_manual(_loss(a), lambda x: _grad(a)(x) + 1e-2, x)
    assert not result.passed and result.odd_one_out == "manual"
    entry, probes = result.pairs
    # Rademacher signs weigh every entry: 100,000 small errors add up in every probe
    assert entry.manual_wrong == 5 and probes.manual_wrong == 4


class SharedWrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x) * 1.01


def test_a_formula_shared_by_yours_and_autograd_is_caught_by_the_projections() -> None:
    x = _x(20_000)
    result = gk.check_matches_manual(
        lambda x: SharedWrongBackward.apply(x).sum(), lambda x: torch.cos(x) * 1.01, x
    )
    # the two agree entry by entry: only the finite differences of the probes can object
    assert not result.passed and result.odd_one_out == "numeric"
    assert [p.input for p in result.pairs] == ["directions"]


class WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.cos(x) * 1.5  # a stray factor


def test_a_wrong_custom_backward_is_named_as_autograd() -> None:
    x = _x(20_000)
    result = gk.check_matches_manual(
        lambda x: WrongBackward.apply(x).sum(), lambda x: torch.cos(x), x
    )
    assert not result.passed and result.odd_one_out == "autograd" and result.mode == "fast"
    assert "autograd disagrees with both" in result.summary()


def test_manual_vjp_of_a_vector_valued_fn_projects_both_sides() -> None:
    x = _x(20_000)
    calls: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        return x * torch.sin(x)

    def vjp(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return v * (torch.sin(x) + x * torch.cos(x))

    def vjp_product_rule_forgotten(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v * x * torch.cos(x)

    result = gk.check_matches_manual(fn, inputs=x, manual_vjp=vjp, n_probes=3)
    assert result.passed and result.mode == "fast" and result.interface == "vjp"
    assert len(calls) == 3 and result.pairs[0].total == 3
    assert any("output projection" in note for note in result.notes)
    assert result.evaluations <= 20
    wrong = gk.check_matches_manual(fn, inputs=x, manual_vjp=vjp_product_rule_forgotten)
    assert not wrong.passed and wrong.odd_one_out == "manual"


def test_float32_native_passes_for_a_right_derivative() -> None:
    x = _x(N_LARGE // 2, torch.float32)
    a = _weights(N_LARGE // 2, torch.float32)
    result = gk.check_matches_manual(_loss(a), _grad(a), x, dtype="native")
    assert result.passed and result.mode == "fast" and result.dtype == "float32"
    wrong = gk.check_matches_manual(
        _loss(a), lambda x: 1 - torch.tanh(a * x) ** 2, x, dtype="native"
    )
    assert not wrong.passed and wrong.odd_one_out == "manual"


def test_auto_projects_above_4096_inputs_and_stays_full_below() -> None:
    for n, mode, total in ((4097, "fast", 4), (300, "full", 300)):
        a = _weights(n)
        result = gk.check_matches_manual(_loss(a), _grad(a), _x(n))
        assert result.passed and result.mode == mode
        assert sum(p.total for p in result.pairs) == total
    # asked for, fast mode projects small inputs too; full mode is full at any size
    a = _weights(10)
    assert gk.check_matches_manual(_loss(a), _grad(a), _x(10), mode="fast").mode == "fast"
    n = 5000
    a = _weights(n)
    full = gk.check_matches_manual(_loss(a), _grad(a), _x(n), mode="full")
    assert full.passed and full.mode == "full" and full.pairs[0].total == n


def test_several_inputs_share_the_directions() -> None:
    w, b = _x(3000, seed=1), _x(2000, seed=2)

    def fn(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(w).sum() * b.square()).sum()

    def grad(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (1 - torch.tanh(w) ** 2) * b.square().sum(), 2 * b * torch.tanh(w).sum()

    result = gk.check_matches_manual(fn, grad, (w, b))
    assert result.passed and result.mode == "fast"
    assert any("5,000 checked input entries" in note for note in result.notes)

    def grad_b_wrong(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gw, gb = grad(w, b)
        return gw, gb.flip(0)

    wrong = gk.check_matches_manual(fn, grad_b_wrong, (w, b))
    assert not wrong.passed and wrong.odd_one_out == "manual"
    assert "'inputs[1]'" in wrong.summary()


@settings(max_examples=20, deadline=None)
@given(
    a=st.floats(-3.0, 3.0),
    b=st.floats(-3.0, 3.0),
    n=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_right_derivatives_of_smooth_functions_pass(a: float, b: float, n: int, seed: int) -> None:
    x = _x(n, seed=seed)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(a * x) * b).sum()

    def grad(x: torch.Tensor) -> torch.Tensor:
        return a * b * (1 - torch.tanh(a * x) ** 2)

    result = gk.check_matches_manual(fn, grad, x, mode="fast", seed=seed % 7)
    assert result.passed, result.summary()
