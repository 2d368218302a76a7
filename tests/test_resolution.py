"""Resolution: the default tolerance follows the finite differences' error estimate.

A backward off by a uniform 0.1 % (float64) or 1 % (float32) fails in both modes;
every result states the smallest uniform relative error it would have caught; a
near-1 factor gets its own hint; normalisations and kinks in float32 still pass.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk
from gradcheck_kit.results import Resolution


class _Scaled(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``k``."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, k: float
    ) -> torch.Tensor:
        ctx.k = k  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor
    ) -> tuple[torch.Tensor, None]:
        return g * ctx.k, None  # type: ignore[attr-defined]


def _scaled(fn: Callable[..., torch.Tensor], k: float) -> Callable[..., torch.Tensor]:
    return lambda *xs: fn(*[_Scaled.apply(x, k) for x in xs])


def _inputs(dtype: torch.dtype, *shapes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes)


_W = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
F64_CASES = {
    "exp": (torch.exp, [(5,)]),
    "matmul": (torch.matmul, [(3, 4), (4, 2)]),
    "softmax": (lambda x: torch.softmax(x, -1), [(2, 5)]),
}
F32_CASES = {
    "square": (torch.square, [(5,)]),
    "tanh": (torch.tanh, [(5,)]),
    "linear_weight": (lambda w: F.linear(_W, w), [(3, 4)]),
}


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("name", list(F64_CASES))
def test_float64_uniform_tenth_of_a_percent_fails(name: str, mode: str) -> None:
    fn, shapes = F64_CASES[name]
    xs = _inputs(torch.float64, *shapes)
    assert gk.check_gradients(fn, xs, mode=mode).passed
    assert not gk.check_gradients(_scaled(fn, 1.001), xs, mode=mode).passed


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("name", list(F32_CASES))
def test_float32_uniform_one_percent_fails(name: str, mode: str) -> None:
    fn, shapes = F32_CASES[name]
    xs = _inputs(torch.float32, *shapes)
    assert gk.check_gradients(fn, xs, mode=mode, dtype="native").passed
    assert not gk.check_gradients(_scaled(fn, 1.01), xs, mode=mode, dtype="native").passed


def test_explicit_rtol_keeps_its_meaning() -> None:
    (x,) = _inputs(torch.float64, (5,))
    assert gk.check_gradients(_scaled(torch.exp, 1.001), x, rtol=1e-2).passed
    assert not gk.check_gradients(_scaled(torch.exp, 1.02), x, rtol=1e-2).passed


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_resolution_is_stated_per_block_and_holds(mode: str) -> None:
    x, w = _inputs(torch.float64, (3, 4), (4, 2))
    result = gk.check_gradients(torch.matmul, (x, w), mode=mode)
    assert result.passed
    assert [r.block for r in result.resolution] == ["inputs[0]", "inputs[1]"]
    assert all(0 < r.relative < 1e-3 for r in result.resolution)
    assert any("would catch relative errors ≥" in note for note in result.notes)
    assert result.to_dict()["resolution"][0]["block"] == "inputs[0]"
    # a uniform error a little above the stated resolution on one input is caught
    k = 1 + 2 * result.resolution[1].relative
    wrong = gk.check_gradients(lambda a, b: torch.matmul(a, _Scaled.apply(b, k)), (x, w), mode=mode)
    assert not wrong.passed


def test_float32_resolution_is_coarser_than_float64() -> None:
    (x64,) = _inputs(torch.float64, (5,))
    (x32,) = _inputs(torch.float32, (5,))
    r64 = gk.check_gradients(torch.tanh, x64).resolution[0].relative
    r32 = gk.check_gradients(torch.tanh, x32, dtype="native").resolution[0].relative
    assert r64 < 1e-4 < r32 < 1e-2


def test_resolution_text() -> None:
    assert Resolution("params/weight", 3e-7).text() == (
        "would catch relative errors ≥ 3e-07 on params/weight"
    )


def test_near_one_factor_hint() -> None:
    (x,) = _inputs(torch.float64, (6,))
    result = gk.check_gradients(_scaled(torch.exp, 1.001), x, mode="full")
    assert not result.passed
    assert result.hint is not None
    assert "analytic ≈ 1.001 × numeric everywhere" in result.hint
    assert "(a 0.1% scale error)" in result.hint


def _f32(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return ((torch.rand(shape, generator=gen) * 2 - 1) * scale).requires_grad_()


# Normalisations divide by a standard deviation: the finite differences' roundoff is
# amplified by 1/std, which the per-entry error estimate carries into the allowance.
NORMS: dict[str, Callable[..., torch.Tensor]] = {
    "batch_norm": lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
    "instance_norm": lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
    "group_norm": lambda x, w, b: F.group_norm(x, 2, w, b),
}


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("scale", [0.05, 1.0, 9.0])
@pytest.mark.parametrize("name", list(NORMS))
def test_float32_normalisations_pass(name: str, scale: float, mode: str) -> None:
    x = _f32(3, 4, 5, scale=scale)
    w, b = _f32(4, seed=1), _f32(4, seed=2)
    result = gk.check_gradients(NORMS[name], (x, w, b), mode=mode, dtype="native")
    assert result.passed, result.summary()


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_float32_prelu_near_its_kink_passes(mode: str) -> None:
    # entries within a step of 0: the step crosses the kink, smaller steps see past it
    x = torch.tensor([-1e-3, -2e-4, 3e-4, 2e-3, 0.5, -0.7]).requires_grad_()
    a = torch.tensor([0.25]).requires_grad_()
    result = gk.check_gradients(F.prelu, (x, a), mode=mode, dtype="native")
    assert result.passed, result.summary()


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_float32_round_with_decimals_passes(mode: str) -> None:
    # a staircase: zero slope between jumps 1e-3 apart, which the base float32 step
    # (4.9e-3 for |x| <= 1, more beyond) crosses; smaller steps see the flat parts
    gen = torch.Generator().manual_seed(4)
    x = ((torch.rand(20, generator=gen) * 2 - 1) * 2).requires_grad_()
    result = gk.check_gradients(lambda t: torch.round(t, decimals=3), x, mode=mode, dtype="native")
    assert result.passed, result.summary()


def test_float32_kink_does_not_hide_a_scale_error() -> None:
    # a smooth region keeps its tight allowance next to entries that straddle a kink
    x = torch.tensor([-1e-3, 3e-4, 0.5, -0.7, 1.3]).requires_grad_()
    wrong = _scaled(torch.tanh, 1.01)
    # full mode: the property is per entry (fast mode's projection sees the kink's spread)
    check = gk.check_gradients(lambda t: wrong(F.relu(t) + t), x, dtype="native", mode="full")
    assert not check.passed


def test_report_detail_shows_the_resolution() -> None:
    from gradcheck_kit.report.document import make_document
    from gradcheck_kit.report.html import render_html

    (x,) = _inputs(torch.float64, (4,))
    passed = gk.check_gradients(torch.exp, x, mode="full").to_dict()
    failed = gk.check_gradients(_scaled(torch.exp, 1.01), x, mode="full").to_dict()
    failed["name"] = "scaled_exp"
    text = render_html(make_document([passed, failed]))
    # a passed check's one line carries the note, a failure's detail the setting
    assert "would catch relative errors ≥" in text
    value = failed["resolution"][0]["relative"]
    assert f"<b>resolution</b> ≥ {value:.4g} on input" in text


@settings(max_examples=15, deadline=None)
@given(
    values=st.lists(st.floats(-3, 3), min_size=2, max_size=6),
    factor=st.sampled_from([1.0, 4.0, 30.0]),
)
def test_a_uniform_error_above_the_stated_resolution_fails(
    values: list[float], factor: float
) -> None:
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(torch.sinh, x, mode="full")
    assert result.passed
    (stated,) = result.resolution
    wrong = gk.check_gradients(_scaled(torch.sinh, 1 + 1.5 * stated.relative), x, mode="full")
    assert not wrong.passed
    if factor > 1:  # a coarser error fails too
        coarser = _scaled(torch.sinh, 1 + 1.5 * factor * stated.relative)
        assert not gk.check_gradients(coarser, x, mode="full").passed
