"""gradcheck_kit.strategies: what they generate, their validation, and use with checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit import strategies as gks

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(shape=gks.shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
def test_shapes_respect_their_bounds(shape: tuple[int, ...]) -> None:
    assert 1 <= len(shape) <= 3
    assert all(2 <= side <= 4 for side in shape)


@FAST
@given(dtype=gks.floating_dtypes(sizes=(16, 32)))
def test_floating_dtypes_by_size(dtype: torch.dtype) -> None:
    assert dtype in (torch.float16, torch.float32)


@FAST
@given(
    x=gks.tensors(
        gks.floating_dtypes(),
        gks.shapes(max_dims=2, max_side=5),
        min_value=-3.0,
        max_value=3.0,
        min_magnitude=0.25,
    )
)
def test_tensors_are_well_conditioned_by_default(x: torch.Tensor) -> None:
    assert x.dtype in (torch.float32, torch.float64)
    assert not x.requires_grad
    assert bool(torch.isfinite(x).all())
    assert bool((x.abs() >= 0.25).all()) and bool((x.abs() <= 3.0).all())
    assert x.unique().numel() == x.numel()  # distinct: no ties


@FAST
@given(x=gks.tensors(shape=(6,), elements=st.just(0.0), distinct=False))
def test_elements_is_the_escape_hatch(x: torch.Tensor) -> None:
    assert x.tolist() == [0.0] * 6


@FAST
@given(x=gks.differentiable_tensors(shape=st.just((2, 3))))
def test_differentiable_tensors_are_fresh_leaves(x: torch.Tensor) -> None:
    assert x.requires_grad and x.is_leaf and x.grad is None
    assert x.shape == (2, 3) and x.dtype == torch.float64


@FAST
@given(x=gks.differentiable_tensors(shape=gks.shapes(max_dims=2, max_side=4)))
def test_property_test_of_an_op_passes_for_a_right_gradient(x: torch.Tensor) -> None:
    gk.assert_gradients_close(torch.tanh, x)


class _HalfGradientExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        y = x.exp()
        ctx.save_for_backward(y)  # type: ignore[attr-defined]
        return y

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * y / 2


@FAST
@given(x=gks.differentiable_tensors(shape=gks.shapes(max_dims=2, max_side=4)))
def test_property_test_of_an_op_catches_a_wrong_gradient(x: torch.Tensor) -> None:
    with pytest.raises(gk.GradientMismatchError):
        gk.assert_gradients_close(_HalfGradientExp.apply, x)


@FAST
@given(
    model=gks.sequential_modules(3, out_features=2, max_layers=3, max_width=5),
    x=gks.tensors(shape=(4, 3)),
)
def test_sequential_modules_are_smooth_and_checkable(model: nn.Sequential, x: torch.Tensor) -> None:
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert 1 <= len(linears) <= 3
    assert linears[0].in_features == 3 and linears[-1].out_features == 2
    assert not any(isinstance(m, nn.ReLU) for m in model)
    gk.assert_module_gradients(model, x)


def test_sequential_modules_replay_their_weights_and_leave_the_global_rng() -> None:
    before = torch.random.get_rng_state()
    drawn: list[list[torch.Tensor]] = []

    @settings(max_examples=1, database=None, derandomize=True)
    @given(model=gks.sequential_modules(2, out_features=1, min_layers=2, max_layers=2))
    def collect(model: nn.Sequential) -> None:
        drawn.append([p.detach().clone() for p in model.parameters()])

    collect()
    collect()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert len(drawn) == 2
    assert all(torch.equal(a, b) for a, b in zip(drawn[0], drawn[1], strict=True))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: gks.shapes(min_dims=3, max_dims=1), "min_dims=3 is larger than max_dims=1"),
        (lambda: gks.shapes(min_side=0), "min_side=0 must be >= 1"),
        (lambda: gks.shapes(max_side=2.5), "max_side=2.5 must be an int"),
        (lambda: gks.floating_dtypes(sizes=(8,)), "floating sizes are 16, 32, 64"),
        (lambda: gks.floating_dtypes(sizes=()), "sizes=\\(\\) is empty"),
        (lambda: gks.tensors(min_value=2.0, max_value=1.0), "min_value=2.0 is larger than"),
        (lambda: gks.tensors(min_value=-0.05, max_value=0.05), "no value in"),
        (lambda: gks.tensors(min_magnitude=-1.0), "min_magnitude=-1.0 must be >= 0"),
        (lambda: gks.tensors(max_value=float("inf")), "must be finite"),
        (lambda: gks.sequential_modules(0), "in_features=0 must be >= 1"),
        (lambda: gks.sequential_modules(2, activations=()), "activations=\\(\\) is empty"),
        (lambda: gks.sequential_modules(2, min_width=5, max_width=2), "min_width=5 is larger"),
    ],
)
def test_bad_arguments_name_argument_and_value(make: object, match: str) -> None:
    with pytest.raises(gk.InvalidArgument, match=match):
        make()  # type: ignore[operator]


def test_a_non_floating_dtype_is_explained_when_drawn() -> None:
    strategy = gks.tensors(torch.int64, (2,))

    @settings(max_examples=1, database=None)
    @given(x=strategy)
    def draw(x: torch.Tensor) -> None:
        pass

    with pytest.raises(gk.InvalidArgument, match="not a floating dtype"):
        draw()
