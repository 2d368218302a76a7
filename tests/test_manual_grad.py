"""Hand-written gradients of scalar functions: right ones pass, each kind of wrong one is caught.

Every case runs in float64 and in float32 with the native dtype policy, and each wrong
derivative must be named as the odd one out, with the hint that fits its bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from _functions import square_half
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk

DTYPES = [pytest.param("float64", id="float64"), pytest.param("native", id="float32-native")]

B = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.3, 4.0], [2.5, -0.7, 1.2]], dtype=torch.float64)


@dataclass(frozen=True)
class Case:
    """A scalar fn, its right derivative, a wrong one, and what the checker should say."""

    fn: Callable[..., torch.Tensor]
    right: Callable[..., Any]
    wrong: Callable[..., Any]
    hint: str  # a Hint.kind expected among the hints for the wrong derivative
    text: str  # a phrase expected in the failure message
    point: Callable[[torch.dtype], torch.Tensor]


def _spread(dtype: torch.dtype) -> torch.Tensor:
    # away from 0, where |x| and friends have their kink
    return torch.tensor([-1.7, -0.9, -0.4, 0.3, 0.8, 1.3, 2.1], dtype=dtype)


def _matrix(dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor([[0.2, -1.1, 0.7], [1.5, 0.4, -0.3], [-0.6, 0.9, 1.8]], dtype=dtype)


CASES = {
    "missing_factor": Case(
        fn=lambda x: (x**2).sum(),
        right=lambda x: 2 * x,
        wrong=lambda x: x,
        hint="factor",
        text="missing factor of 2",
        point=_spread,
    ),
    "sign": Case(
        fn=lambda x: torch.cos(x).sum(),
        right=lambda x: -torch.sin(x),
        wrong=lambda x: torch.sin(x),
        hint="sign",
        text="a sign error",
        point=_spread,
    ),
    "transposed": Case(
        fn=lambda w: (w @ B.to(w.dtype)).trace(),
        right=lambda w: B.to(w.dtype).T,
        wrong=lambda w: B.to(w.dtype),
        hint="transposed",
        text="transposed",
        point=_matrix,
    ),
    "chain_rule_forgotten": Case(
        fn=lambda x: torch.sin(x**2).sum(),
        right=lambda x: torch.cos(x**2) * 2 * x,
        wrong=lambda x: torch.cos(x**2),
        hint="inner_factor",
        text="chain rule",
        point=_spread,
    ),
    "wrong_for_negative_inputs": Case(
        fn=lambda x: (x * x.abs()).sum(),
        right=lambda x: 2 * x.abs(),
        wrong=lambda x: 2 * x,
        hint="region",
        text="< 0",
        point=_spread,
    ),
}


def _x(case: Case, dtype: str) -> torch.Tensor:
    native = torch.float64 if dtype == "float64" else torch.float32
    return case.point(native).requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_the_right_derivative_passes(case: Case, dtype: str) -> None:
    result = gk.assert_matches_manual(case.fn, case.right, _x(case, dtype), dtype=dtype)
    assert result.passed and result.odd_one_out is None
    assert result.dtype == ("float64" if dtype == "float64" else "float32")
    assert all(p.mismatched == 0 for p in result.pairs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_each_wrong_derivative_is_caught_and_named(case: Case, dtype: str) -> None:
    x = _x(case, dtype)
    with pytest.raises(gk.GradientMismatchError) as info:
        gk.assert_matches_manual(case.fn, case.wrong, x, dtype=dtype)
    result = info.value.result
    assert isinstance(result, gk.results.ManualCheckResult)
    assert result.odd_one_out == "manual"
    text = str(info.value)
    assert "your derivative disagrees with both autograd and finite differences at index" in text
    assert case.hint in [h.kind for h in result.hints], text
    assert case.text in text
    assert "Reproduce: gradcheck_kit.check_matches_manual(" in text
    # the worst entry carries all three values, and the other two agree there
    worst = result.pairs[0].worst[0]
    assert worst.odd_one_out == "manual"
    assert worst.autograd == pytest.approx(worst.numeric, rel=1e-2, abs=1e-3)
    assert worst.manual != pytest.approx(worst.autograd, rel=1e-2, abs=1e-3)


def test_the_message_reads_like_assert_close_with_the_three_values() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    result = gk.check_matches_manual(lambda x: (x**2).sum(), lambda x: x, x, name="loss")
    lines = result.summary().splitlines()
    assert lines[0] == (
        "[gradcheck] Derivatives disagree! (check_matches_manual of 'loss', full mode, float64)"
    )
    assert lines[2].startswith(
        "Odd one out: your derivative disagrees with both autograd and finite differences at "
        "index (2,) of 'input': yours 3, autograd 6, finite differences 6"
    )
    assert "Mismatched elements: 3 / 3 (100.0%); odd one out: yours 3" in lines
    assert any(line.startswith("Likely cause: the mistake is in your derivative") for line in lines)


def test_a_wrong_backward_makes_autograd_the_odd_one_out() -> None:
    # fn's custom Function forgets the factor 2; the hand-written derivative is right
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).requires_grad_()
    result = gk.check_matches_manual(lambda x: square_half(x).sum(), lambda x: 2 * x, x)
    assert not result.passed and result.odd_one_out == "autograd"
    text = result.summary()
    assert "autograd disagrees with both your derivative and finite differences" in text
    assert "autograd ≈ 0.5 ×" in text


def test_a_shared_mistake_makes_finite_differences_the_odd_one_out() -> None:
    # the hand-written derivative repeats the custom backward's bug: only FD disagrees
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).requires_grad_()
    result = gk.check_matches_manual(lambda x: square_half(x).sum(), lambda x: x, x)
    assert result.odd_one_out == "numeric"
    assert "finite differences disagree with both your derivative and autograd" in result.summary()


def test_three_different_answers_are_all_differ() -> None:
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).requires_grad_()
    result = gk.check_matches_manual(lambda x: square_half(x).sum(), lambda x: 3 * x, x)
    assert result.odd_one_out == "none"
    assert "all disagree" in result.summary()


def test_several_inputs_and_one_wrong_gradient() -> None:
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    y = 3 * x - 1

    def loss(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((w * x + b - y) ** 2).mean()

    def grads(w: torch.Tensor, b: torch.Tensor, db_factor: float = 2.0) -> tuple[Any, ...]:
        r = w * x + b - y
        return (2 * r * x).mean(), (db_factor * r).mean()

    w = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    assert gk.check_matches_manual(loss, grads, (w, b)).passed
    result = gk.check_matches_manual(loss, lambda w, b: grads(w, b, 1.0), (w, b))
    assert [p.passed for p in result.pairs] == [True, False]
    assert result.pairs[1].input == "inputs[1]"


def test_none_for_inputs_without_gradient_and_keyword_inputs() -> None:
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor, power: int) -> torch.Tensor:
        return (x**power).sum()

    assert gk.check_matches_manual(fn, lambda x, power: (power * x**2, None), (x, 3)).passed
    assert gk.check_matches_manual(fn, lambda x, power: 3 * x**2, {"x": x, "power": 3}).passed


def test_msg_is_put_before_the_report_or_rewrites_it() -> None:
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(gk.GradientMismatchError, match=r"^grad_fn of the loss\n\n\[gradcheck\]"):
        gk.assert_matches_manual(lambda x: (x**2).sum(), lambda x: x, x, msg="grad_fn of the loss")
    with pytest.raises(gk.GradientMismatchError, match=r"^SHORT$"):
        gk.assert_matches_manual(lambda x: (x**2).sum(), lambda x: x, x, msg=lambda _: "SHORT")


def test_a_random_fn_is_reported_and_replay_checks_it() -> None:
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(x, 0.5).sum()

    def grad(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(torch.ones_like(x), 0.5)  # the same mask

    with pytest.raises(gk.errors.NondeterministicFunctionError, match="rng='replay'"):
        gk.assert_matches_manual(fn, grad, x)
    assert gk.check_matches_manual(fn, grad, x, rng="replay").passed


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 3), min_size=1, max_size=2),
    seed=st.integers(0, 2**16),
    bug=st.sampled_from(["none", "factor", "sign", "offset"]),
    dtype=st.sampled_from(["float64", "native"]),
)
def test_verdict_follows_the_bug_at_random_points(
    shape: list[int], seed: int, bug: str, dtype: str
) -> None:
    gen = torch.Generator().manual_seed(seed)
    native = torch.float64 if dtype == "float64" else torch.float32
    x = (torch.rand(shape, generator=gen, dtype=native) + 0.5).requires_grad_()
    wrong = {
        "none": lambda g: g,
        "factor": lambda g: 3 * g,
        "sign": lambda g: -g,
        "offset": lambda g: g + 1,
    }[bug]

    def fn(x: torch.Tensor) -> torch.Tensor:
        return (torch.exp(-x) * x**2).sum()

    def grad(x: torch.Tensor) -> torch.Tensor:
        return wrong(torch.exp(-x) * (2 * x - x**2))

    result = gk.check_matches_manual(fn, grad, x, dtype=dtype)
    assert result.passed == (bug == "none"), result.summary()
    if bug != "none":
        assert result.odd_one_out == "manual"
