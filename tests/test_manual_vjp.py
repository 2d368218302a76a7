"""Hand-written vector-Jacobian products of vector-valued functions, in full and fast mode."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import gradcheck_kit as gk

DTYPES = [pytest.param("float64", id="float64"), pytest.param("native", id="float32-native")]


def _x(dtype: str, n: int = 6) -> torch.Tensor:
    native = torch.float64 if dtype == "float64" else torch.float32
    return torch.linspace(-1.5, 1.7, n, dtype=native).requires_grad_()


def x_sin_x(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sin(x)


def vjp_right(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v * (torch.sin(x) + x * torch.cos(x))


def vjp_product_rule_forgotten(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v * x * torch.cos(x)


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_vjp_right_and_wrong(dtype: str, mode: str) -> None:
    x = _x(dtype)
    right = gk.check_matches_manual(x_sin_x, inputs=x, manual_vjp=vjp_right, mode=mode, dtype=dtype)
    assert right.passed and right.interface == "vjp" and right.mode == mode
    wrong = gk.check_matches_manual(
        x_sin_x, inputs=x, manual_vjp=vjp_product_rule_forgotten, mode=mode, dtype=dtype
    )
    assert not wrong.passed and wrong.odd_one_out == "manual"
    assert "manual_vjp=manual_vjp" in wrong.summary()


def test_full_mode_reports_output_and_input_index() -> None:
    x = _x("float64")
    result = gk.check_matches_manual(x_sin_x, inputs=x, manual_vjp=vjp_product_rule_forgotten)
    pair = result.pairs[0]
    assert (pair.output, pair.output_shape, pair.total) == ("output", (6,), 36)
    # the Jacobian is diagonal: only its 6 diagonal entries can be wrong
    assert pair.manual_wrong == 6
    assert all(e.output_index == e.input_index for e in pair.worst)
    assert "(output 'output' index (" in result.summary()


def test_matrix_product_with_a_transposed_gradient() -> None:
    w = torch.tensor([[0.3, -1.2, 0.5], [2.0, 0.1, -0.7], [0.4, 0.9, 1.1]], dtype=torch.float64)
    a = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)

    def right(v: torch.Tensor, w: torch.Tensor, a: torch.Tensor) -> tuple[Any, ...]:
        return torch.outer(v, a), w.T @ v

    def transposed(v: torch.Tensor, w: torch.Tensor, a: torch.Tensor) -> tuple[Any, ...]:
        return torch.outer(a, v), w.T @ v

    inputs = (w.requires_grad_(), a.requires_grad_())
    assert gk.check_matches_manual(torch.mv, inputs=inputs, manual_vjp=right).passed
    result = gk.check_matches_manual(torch.mv, inputs=inputs, manual_vjp=transposed)
    assert [p.passed for p in result.pairs] == [False, True]
    assert "transposed" in [h.kind for h in result.hints]


def test_tuple_outputs_get_a_tuple_grad_output() -> None:
    x = _x("float64", 4)

    def both(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sin(x), torch.cos(x)

    def vjp(v: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return v[0] * torch.cos(x) - v[1] * torch.sin(x)

    def vjp_one_sign_off(v: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return v[0] * torch.cos(x) + v[1] * torch.sin(x)

    assert gk.check_matches_manual(both, inputs=x, manual_vjp=vjp).passed
    result = gk.check_matches_manual(both, inputs=x, manual_vjp=vjp_one_sign_off)
    assert [(p.output, p.passed) for p in result.pairs] == [
        ("output[0]", True),
        ("output[1]", False),
    ]
    assert "sign" in [h.kind for h in result.hints]


def test_auto_mode_projects_large_outputs() -> None:
    x = torch.linspace(-1, 1, 100, dtype=torch.float64).requires_grad_()
    calls: list[int] = []

    def counted(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return vjp_right(v, x)

    result = gk.check_matches_manual(x_sin_x, inputs=x, manual_vjp=counted)
    assert result.passed and result.mode == "fast" and len(calls) == 4
    assert result.pairs[0].output == "projections"
    assert not gk.check_matches_manual(
        x_sin_x, inputs=x, manual_vjp=vjp_product_rule_forgotten, n_probes=2
    ).passed


def test_a_scalar_fn_may_use_manual_vjp_too() -> None:
    x = _x("float64")
    result = gk.check_matches_manual(
        lambda x: (x**3).sum(), inputs=x, manual_vjp=lambda v, x: v * 3 * x**2
    )
    assert result.passed


def test_manual_grad_for_a_vector_fn_points_to_manual_vjp() -> None:
    x = _x("float64")
    with pytest.raises(gk.InvalidArgument, match=r"float64 tensor of shape \(6,\).*manual_vjp="):
        gk.check_matches_manual(torch.sin, torch.cos, x)
