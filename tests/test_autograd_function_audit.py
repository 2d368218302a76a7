"""Audits of custom autograd.Functions: every misuse the issue lists is found and named."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from support.fingerprint import fingerprint
from torch.autograd.function import once_differentiable

import gradcheck_kit as gk

Function = torch.autograd.Function


class Cube(Function):
    """x**3 with a right backward; the base of most misuse below."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class CubeWithJvp(Cube):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x**3

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x**2 * tangent


class CubeWrongJvp(CubeWithJvp):
    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return -3 * x**2 * tangent


class CubeJvpWithoutSaveForForward(Cube):
    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors  # empty in forward mode: save_for_forward was not called
        return 3 * x**2 * tangent


class CubeMissingFactor(Cube):
    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return x**2 * grad


class CubeOnce(Cube):
    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class ExpSavesIntermediate(Function):
    """Saves exp(x), computed inside forward, and returns 2 exp(x): double backward is 0."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        e = torch.exp(x)
        ctx.save_for_backward(e)
        return 2 * e

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (e,) = ctx.saved_tensors
        return 2 * e * grad


class ScaleGradForFloat(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: float) -> torch.Tensor:
        ctx.k = k
        return x * k

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad * ctx.k, (grad * 0).sum()  # a gradient for the float k


class MulOneGradient(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        _, y = ctx.saved_tensors
        return grad * y  # forgot the gradient for y


class DoubleFloat32Grad(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return torch.tensor(2.0) * grad.float()  # float32 for a float64 input


class BroadcastGrad(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return (grad / 2).expand(4, *grad.shape)  # summed by autograd: 4 * (grad / 2) = 2 grad


class ReturnsStatistic(Function):
    """Returns (2x, sum x) and marks the sum non-differentiable although it depends on x."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.sum()
        ctx.mark_non_differentiable(total)
        return 2 * x, total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return 2 * grad


class ReturnsMask(ReturnsStatistic):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (x > 0).to(x.dtype)
        ctx.mark_non_differentiable(mask)
        return 2 * x, mask


class MutatesSavedInput(Cube):
    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x.mul_(x) * grad  # squares the caller's x in place


class CountsCalls(Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.calls = 0
        return 2 * x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        ctx.calls += 1
        return 2 * grad * ctx.calls


def _x(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([-1.3, -0.4, 0.6, 1.1], dtype=dtype, requires_grad=True)


def _statuses(result: gk.results.FunctionAuditResult) -> dict[str, str]:
    return {f.check: f.status for f in result.findings}


@pytest.mark.parametrize("dtype", ["float64", "native"])
@pytest.mark.parametrize("function", [Cube, CubeWithJvp, ReturnsMask])
def test_right_functions_pass_every_check(function: Any, dtype: str) -> None:
    x = _x(torch.float64 if dtype == "float64" else torch.float32)
    result = gk.assert_autograd_function(function, x, dtype=dtype)
    statuses = _statuses(result)
    assert "failed" not in statuses.values(), result.summary()
    assert statuses["backward"] == statuses["double_backward"] == "passed"
    assert statuses["forward_mode"] == ("passed" if function is CubeWithJvp else "skipped")


CAUGHT = {
    "backward_wrong": (CubeMissingFactor, "backward", "missing factor of 3"),
    "jvp_wrong": (CubeWrongJvp, "forward_mode", "jvp is wrong (backward agrees"),
    "jvp_without_save_for_forward": (
        CubeJvpWithoutSaveForForward,
        "forward_mode",
        "save_for_forward",
    ),
    "gradient_for_a_float": (ScaleGradForFloat, "non_tensor_gradient", "which is a float (2.0)"),
    "too_few_gradients": (MulOneGradient, "gradient_count", "1 value(s) for 2 forward input(s)"),
    "float32_gradient": (
        DoubleFloat32Grad,
        "gradient_dtype",
        "float32 for input, which is float64",
    ),
    "broadcast_gradient": (BroadcastGrad, "gradient_shape", "sums it down"),
    "marked_but_differentiable": (ReturnsStatistic, "non_differentiable", "silently dropped"),
    "backward_mutates_input": (MutatesSavedInput, "inputs_unchanged", "backward modified input"),
    "backward_not_repeatable": (CountsCalls, "repeatable", "called twice"),
}


@pytest.mark.parametrize(("function", "check", "phrase"), CAUGHT.values(), ids=list(CAUGHT))
def test_each_misuse_is_caught_and_named(function: Any, check: str, phrase: str) -> None:
    x = _x()
    inputs: Any = {
        ScaleGradForFloat: (x, 2.0),
        MulOneGradient: (x, torch.ones(4, dtype=torch.float64, requires_grad=True)),
    }.get(function, x)
    before = fingerprint(inputs)
    with pytest.raises(gk.errors.AutogradFunctionError) as info:
        gk.assert_autograd_function(function, inputs)
    result = info.value.result
    assert isinstance(result, gk.results.FunctionAuditResult)
    failed = {f.check: f.text for f in result.failed}
    assert check in failed, result.summary()
    assert phrase in failed[check]
    assert f"FAILED  {check}:" in str(info.value)
    assert "Reproduce: gradcheck_kit.check_autograd_function(" in str(info.value)
    assert fingerprint(inputs) == before  # the audit worked on copies


def test_double_backward_of_an_intermediate_fails_only_when_required() -> None:
    # Right to first order, but its gradient has no graph back to x: torch's gradcheck
    # passes it (second derivatives are gradgradcheck's), so the audit reports it
    # as not twice differentiable unless second derivatives are asked for.
    result = gk.check_autograd_function(ExpSavesIntermediate, _x())
    assert result.passed, result.summary()
    assert _statuses(result)["double_backward"] == "skipped"
    required = gk.check_autograd_function(ExpSavesIntermediate, _x(), second_order=True)
    failed = {f.check: f.text for f in required.failed}
    assert "neither inputs nor outputs" in failed["double_backward"]


def test_once_differentiable_is_skipped_unless_required() -> None:
    result = gk.check_autograd_function(CubeOnce, _x())
    assert result.passed
    assert _statuses(result)["double_backward"] == "skipped"
    assert "@once_differentiable" in result.summary()
    required = gk.check_autograd_function(CubeOnce, _x(), second_order=True)
    assert _statuses(required)["double_backward"] == "failed"
    skipped = gk.check_autograd_function(Cube, _x(), second_order=False)
    assert _statuses(skipped)["double_backward"] == "skipped" and skipped.second_order is None


def test_a_failing_backward_carries_the_core_result_and_hint() -> None:
    result = gk.check_autograd_function(CubeMissingFactor, _x())
    assert result.gradient is not None and not result.gradient.passed
    assert "Backward against finite differences:" in result.summary()
    assert result.hint is not None and "backward disagrees with finite differences" in result.hint


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (Cube.apply, "Pass the class Cube, not Cube.apply"),
        (torch.sin, "is not a torch.autograd.Function subclass"),
    ],
)
def test_not_a_function_class(function: Any, message: str) -> None:
    with pytest.raises(gk.InvalidArgument, match=message):
        gk.check_autograd_function(function, _x())


def test_bad_arguments() -> None:
    with pytest.raises(gk.InvalidArgument, match="positional arguments only"):
        gk.check_autograd_function(Cube, {"x": _x()})
    with pytest.raises(gk.InvalidArgument, match="nothing to check"):
        gk.check_autograd_function(Cube, torch.ones(3))
    with pytest.raises(gk.InvalidArgument, match="second_order='yes'"):
        gk.check_autograd_function(Cube, _x(), second_order="yes")  # type: ignore[arg-type]
