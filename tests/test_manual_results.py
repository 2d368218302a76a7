"""Results of the hand-written-derivative checks: schema, round trip, one published record each."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _functions import square_half
from _schemas import validate_results

import gradcheck_kit as gk
from gradcheck_kit._src import recording
from gradcheck_kit._src.results import (
    FunctionAuditResult,
    ManualCheckResult,
    SameTrainingResult,
    SecondOrderResult,
)


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (x,) = ctx.saved_tensors
        return x * grad, grad.sum()  # missing factor 2 and one value too many


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class HalfHessian(Cube):
    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x.detach() * x * grad  # right gradient, half the second derivative


def _x() -> torch.Tensor:
    return torch.linspace(-1, 1, 5, dtype=torch.float64).requires_grad_()


def _step(p: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    return p * (1 - 0.1 * factor)


CHECKS: dict[str, Callable[[], Any]] = {
    "manual_pass": lambda: gk.check_matches_manual(lambda x: (x**2).sum(), lambda x: 2 * x, _x()),
    "manual_fail": lambda: gk.check_matches_manual(
        lambda x: square_half(x).sum(), lambda x: 3 * x, _x()
    ),
    "manual_vjp_fast": lambda: gk.check_matches_manual(
        torch.sin, inputs=_x(), manual_vjp=lambda v, x: v * torch.sin(x), mode="fast"
    ),
    "manual_random": lambda: gk.check_matches_manual(
        lambda x: torch.nn.functional.dropout(x, 0.5).sum(), lambda x: torch.ones_like(x), _x()
    ),
    "second_order_pass": lambda: gk.check_second_order(torch.tanh, _x()),
    "second_order_fail": lambda: gk.check_second_order(lambda x: HalfHessian.apply(x).sum(), _x()),
    "audit_fail": lambda: gk.check_autograd_function(Square, _x()),
    "audit_pass": lambda: gk.check_autograd_function(Cube, _x()),
    "training_pass": lambda: gk.check_same_training(_step, _step, torch.ones(3), steps=3),
    "training_fail": lambda: gk.check_same_training(
        _step, lambda p: _step(p, 2.0), torch.ones(3), steps=3
    ),
}

TYPES = {
    "manual": ManualCheckResult,
    "second_order": SecondOrderResult,
    "autograd_function": FunctionAuditResult,
    "same_training": SameTrainingResult,
}


@pytest.mark.parametrize("make", CHECKS.values(), ids=list(CHECKS))
def test_one_record_per_check_valid_and_round_tripping(make: Callable[[], Any]) -> None:
    published: list[Any] = []
    unsubscribe = recording.subscribe(published.append)
    try:
        result = make()
    finally:
        unsubscribe()
    # nested checks (the audit's, second order's) are parts of it, not results of their own
    assert published == [result]
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    validate_results({"schema_version": gk.results.SCHEMA_VERSION, "results": [data]})
    again = TYPES[data["kind"]].from_dict(data)
    assert again.to_dict() == result.to_dict()
    labelled = result.with_test_id("tests/x.py::test")
    assert labelled.to_dict()["test_id"] == "tests/x.py::test" and type(labelled) is type(result)
    assert bool(result) == result.passed == data["passed"]
    assert isinstance(result.summary(), str) and result.summary().startswith("[gradcheck]")


def test_failures_carry_a_hint_for_one_line_reports() -> None:
    for key in ("manual_fail", "second_order_fail", "audit_fail", "training_fail"):
        data = CHECKS[key]().to_dict()
        assert data["passed"] is False, key
        assert isinstance(data["hint"], str) and data["hint"], key
