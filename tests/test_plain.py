"""Results to JSON and back through their type hints (gradcheck_kit._src.plain)."""

from __future__ import annotations

import json
import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import gradcheck_kit as gk
from gradcheck_kit._src.results import (
    FunctionAuditResult,
    Hint,
    ManualCheckResult,
    ProbeResult,
    SecondOrderResult,
    TrajectoryDivergence,
)

floats = st.floats(allow_nan=False, width=64) | st.sampled_from([math.inf, -math.inf])


@given(
    reverse=floats,
    forward=st.none() | floats,
    numeric=floats,
    passed=st.booleans(),
)
def test_probe_round_trips_through_strict_json(
    reverse: float, forward: float | None, numeric: float, passed: bool
) -> None:
    probe = ProbeResult(reverse, forward, numeric, error_estimate=1e-9, allowed=4e-9, passed=passed)
    text = json.dumps(probe.to_dict(), allow_nan=False)  # inf is written as a string
    assert ProbeResult.from_dict(json.loads(text)) == probe


def test_nested_tuples_of_mixed_types_come_back_typed() -> None:
    d = TrajectoryDivergence(3, "w", (0, 1), 1.0, 1.5, 0.5, 1e-4, (("w", 0.5), ("b", math.inf)))
    back = TrajectoryDivergence.from_dict(json.loads(json.dumps(d.to_dict())))
    assert back == d and isinstance(back.index, tuple) and back.parameter_errors[1][1] == math.inf


def test_older_data_missing_optional_keys_takes_defaults() -> None:
    assert Hint.from_dict({"kind": "sign", "text": "t"}) == Hint("sign", "t")
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    data = gk.check_matches_manual(lambda x: (x**2).sum(), lambda x: 2 * x, x).to_dict()
    for key in ("odd_one_out", "test_id", "check"):
        data.pop(key)
    back = ManualCheckResult.from_dict(data)
    assert back.odd_one_out is None and back.test_id is None
    assert back.check == "check_matches_manual"


def test_a_nested_second_order_result_keeps_its_class() -> None:
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
            return 2 * x * g

    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    audit = gk.check_autograd_function(Square, x, second_order=True)
    back = FunctionAuditResult.from_dict(json.loads(json.dumps(audit.to_dict())))
    assert isinstance(back.second_order, SecondOrderResult)
    assert type(back.gradient) is gk.GradcheckResult
    assert back.to_dict() == audit.to_dict()
