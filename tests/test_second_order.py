"""Second derivatives: double backward against finite differences of the gradient."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _functions import cube_detaches_grad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fingerprint import fingerprint
from torch.autograd.function import once_differentiable

import gradcheck_kit as gk


class CubeHalfHessian(torch.autograd.Function):
    """Right first derivative 3x², but one factor x is detached: the Hessian comes out 3x."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x.detach() * x * grad


class CubeOnce(CubeHalfHessian):
    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x * x * grad


class CubeInPlace(CubeHalfHessian):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x**3
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        out = 3 * y.pow(2.0 / 3.0) * grad
        y.mul_(1.0)  # modifies the saved output in place: double backward refuses
        return out


def _x(dtype: str = "float64", n: int = 5) -> torch.Tensor:
    native = torch.float64 if dtype == "float64" else torch.float32
    return torch.linspace(0.3, 1.9, n, dtype=native).requires_grad_()


FUNCTIONS = {
    "cubic_sum": lambda x: (x**3).sum(),
    "softplus_of_matrix_square": lambda x: torch.nn.functional.softplus(
        torch.outer(x, x) @ x
    ).sum(),
    "vector_valued_tanh": torch.tanh,
    "log_sum_exp": lambda x: torch.logsumexp(2 * x, dim=0),
}


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("dtype", ["float64", "native"])
@pytest.mark.parametrize("fn", FUNCTIONS.values(), ids=list(FUNCTIONS))
def test_smooth_functions_pass(fn: Any, dtype: str, mode: str) -> None:
    result = gk.assert_second_order(fn, _x(dtype), mode=mode, dtype=dtype)
    assert isinstance(result, gk.results.SecondOrderResult) and isinstance(
        result, gk.GradcheckResult
    )
    assert result.kind == "second_order" and result.mode == mode
    if mode == "full":
        assert result.pairs[0].output == "grad[input]"
    else:
        assert result.probes and all(p.passed for p in result.probes)


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("dtype", ["float64", "native"])
def test_a_wrong_hessian_is_caught(dtype: str, mode: str) -> None:
    with pytest.raises(gk.GradientMismatchError) as info:
        gk.assert_second_order(
            lambda x: CubeHalfHessian.apply(x).sum(), _x(dtype), mode=mode, dtype=dtype
        )
    text = str(info.value)
    assert text.startswith("[gradcheck] Second derivatives are not close! (check_second_order")
    assert "d grad[input][i] / d input[j]" in text
    assert "Reproduce: gradcheck_kit.check_second_order(" in text
    if mode == "full":
        assert "missing factor of 2" in text


def test_once_differentiable_has_no_second_derivative() -> None:
    result = gk.check_second_order(lambda x: CubeOnce.apply(x).sum(), _x())
    assert not result.passed
    assert result.hints[0].kind == "double_backward"
    assert "@once_differentiable" in result.hints[0].text


def test_a_double_backward_that_raises_is_a_failed_result() -> None:
    result = gk.check_second_order(lambda x: CubeInPlace.apply(x).sum(), _x())
    assert not result.passed and not result.pairs
    assert result.summary().startswith("[gradcheck] Double backward failed!")
    assert "modified in place" in result.hints[0].text


def test_mixed_second_derivatives_of_two_inputs() -> None:
    x, y = _x(n=3), _x(n=3).detach().flip(0).requires_grad_()
    result = gk.check_second_order(lambda x, y: (torch.sin(x * y) * x).sum(), (x, y), mode="full")
    assert result.passed
    blocks = {(p.output, p.input) for p in result.pairs}
    grads = ("grad[inputs[0]]", "grad[inputs[1]]")
    assert blocks == {(g, b) for g in grads for b in ("inputs[0]", "inputs[1]", "grad_output")}


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("vector_valued", [False, True])
def test_a_backward_that_detaches_grad_output_fails_second_order(
    mode: str, vector_valued: bool
) -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        y = cube_detaches_grad(x)
        return y if vector_valued else y.sum()

    # right first derivative and right d/dx of the gradient; wrong d/d(grad_output),
    # which a penalty on an inner layer's gradient uses
    x = _x(n=4)
    assert gk.check_gradients(fn, x).passed
    result = gk.check_second_order(fn, x, mode=mode)  # type: ignore[arg-type]
    assert not result.passed
    bad = [p for p in result.pairs if not p.passed]
    assert bad and all(p.input.startswith("grad_output") for p in bad)
    assert all(p.passed for p in result.pairs if p.input == "input")
    assert any(h.text.startswith("with respect to grad_output") for h in result.hints) or (
        mode == "fast"
    )


def test_grad_output_pairs_are_named_per_output() -> None:
    x = _x(n=3)
    result = gk.check_second_order(lambda x: (x.sin(), (x * x).sum()), x, mode="full")
    assert result.passed, result.summary()
    assert {p.input for p in result.pairs} == {"input", "grad_output[0]", "grad_output[1]"}


def test_vector_valued_fn_is_reduced_with_a_noted_random_cotangent() -> None:
    result = gk.check_second_order(torch.tanh, _x())
    assert any("<v, fn(inputs)>" in note for note in result.notes)


def test_leaves_no_trace_and_rejects_misuse() -> None:
    x = _x()
    x.grad = torch.ones_like(x)
    before = fingerprint(x)
    gk.check_second_order(lambda x: CubeHalfHessian.apply(x).sum(), x)
    gk.check_second_order(lambda x: (x**4).sum(), x, mode="fast")
    assert fingerprint(x) == before, before.diff(fingerprint(x))
    with pytest.raises(gk.InvalidArgument, match="mode='exact'"):
        gk.check_second_order(torch.sin, x, mode="exact")  # type: ignore[arg-type]
    with pytest.raises(gk.InvalidArgument, match="not callable"):
        gk.check_second_order(x, x)  # type: ignore[arg-type]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), seed=st.integers(0, 2**16), scale=st.sampled_from([0.5, 1.0, 3.0]))
def test_hessian_of_random_quadratic_forms(n: int, seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    x = torch.randn(n, generator=gen, dtype=torch.float64).requires_grad_()

    def quadratic(x: torch.Tensor) -> torch.Tensor:
        return scale * x @ a @ x + torch.exp(x).sum()

    assert gk.check_second_order(quadratic, x).passed
