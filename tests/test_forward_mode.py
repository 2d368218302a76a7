"""Forward mode (jvp) is judged in full and fast mode where fn supports it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk

MODES = ["full", "fast"]


class _Sin(torch.autograd.Function):
    """sin with a right backward; subclasses choose the jvp."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.sin()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * x.cos()


class WrongJvp(_Sin):
    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 2 * tangent * x.cos()  # a factor of 2 too many, in forward mode only


class RightJvp(_Sin):
    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return tangent * x.cos()


class OneWrongEntryJvp(_Sin):
    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        out = tangent * x.cos()
        out[..., -1] = 0.0  # drops the last entry's derivative
        return out


class BothWrong(_Sin):
    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * grad * x.cos()

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 2 * tangent * x.cos()


class NoJvp(torch.autograd.Function):
    """The old style, without jvp: forward AD cannot run through it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * x.cos()


def _x(n: int = 6, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.linspace(-2.0, 2.0, n, dtype=dtype).requires_grad_()


def _kinds(result: gk.GradcheckResult) -> list[str]:
    return [h.kind for h in result.hints]


def _not_checked(result: gk.GradcheckResult) -> list[str]:
    return [n for n in result.notes if n.startswith("forward mode was not checked")]


@pytest.mark.parametrize("mode", MODES)
def test_wrong_jvp_with_right_vjp_fails_with_its_hint(mode: str) -> None:
    result = gk.check_gradients(WrongJvp.apply, _x(), mode=mode)
    assert not result.passed
    assert result.status == "mismatch"
    assert _kinds(result) == ["forward_ad"]
    assert "check the Function's jvp staticmethod" in (result.hint or "")
    # the backward is right: no Jacobian block fails
    assert all(p.passed for p in result.pairs)


@pytest.mark.parametrize("mode", MODES)
def test_assert_raises_with_the_forward_hint_in_the_message(mode: str) -> None:
    with pytest.raises(gk.GradientMismatchError, match="forward-mode derivative \\(jvp\\)"):
        gk.assert_gradients_close(WrongJvp.apply, _x(), mode=mode)


def test_fast_mode_names_the_three_projections() -> None:
    result = gk.check_gradients(WrongJvp.apply, _x(), mode="fast")
    (probe,) = result.probes
    assert probe.forward is not None and not probe.passed
    # u·(J v) by jvp is twice the one by differences; the vjp's agrees with differences
    assert probe.forward == pytest.approx(2 * probe.numeric, rel=1e-6)
    assert probe.reverse == pytest.approx(probe.numeric, rel=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_one_wrong_forward_entry_is_caught(mode: str) -> None:
    result = gk.check_gradients(OneWrongEntryJvp.apply, _x(9), mode=mode)
    assert not result.passed and "forward_ad" in _kinds(result)
    if mode == "full":
        assert "worst at output[8]" in (result.hint or "")


@pytest.mark.parametrize("mode", MODES)
def test_right_function_passes_and_forward_mode_was_checked(mode: str) -> None:
    result = gk.check_gradients(RightJvp.apply, _x(), mode=mode)
    assert result.passed, result.notes
    assert not _not_checked(result)
    if mode == "fast":
        assert result.probes[0].forward is not None


@pytest.mark.parametrize("mode", MODES)
def test_function_without_jvp_passes_with_a_note(mode: str) -> None:
    result = gk.check_gradients(NoJvp.apply, _x(), mode=mode)
    assert result.passed
    (note,) = _not_checked(result)
    assert "NotImplementedError" in note and "jvp" in note
    assert "forward_ad" not in _kinds(result)


@pytest.mark.parametrize("mode", MODES)
def test_both_wrong_fails_on_the_backward_without_blaming_the_jvp(mode: str) -> None:
    result = gk.check_gradients(BothWrong.apply, _x(), mode=mode)
    assert not result.passed
    assert "forward_ad" not in _kinds(result)
    too = "forward mode (jvp) disagrees with finite differences too"
    assert any(too in n for n in result.notes)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_jvp_is_caught_in_float32_too(mode: str) -> None:
    result = gk.check_gradients(WrongJvp.apply, _x(dtype=torch.float32), mode=mode, dtype="native")
    assert not result.passed and _kinds(result) == ["forward_ad"]
    right = gk.check_gradients(RightJvp.apply, _x(dtype=torch.float32), mode=mode, dtype="native")
    assert right.passed


def test_a_module_using_a_wrong_jvp_fails_in_its_module_check() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return WrongJvp.apply(self.lin(x))

    torch.manual_seed(0)
    for mode in MODES:
        result = gk.check_module_gradients(Net(), torch.randn(2, 4), mode=mode)
        assert not result.passed and _kinds(result) == ["forward_ad"], mode


_OPS = {
    "tanh": torch.tanh,
    "exp": torch.exp,
    "softmax": lambda t: torch.softmax(t, dim=-1),
    "cumprod": lambda t: torch.cumprod(t, dim=-1),
    "norm": lambda t: torch.linalg.vector_norm(t, dim=-1),
    "matmul": lambda t: t @ t.T,
}


@settings(max_examples=15, deadline=None)
@given(
    op=st.sampled_from(sorted(_OPS)),
    rows=st.integers(1, 3),
    cols=st.integers(1, 4),
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**16),
)
def test_plain_torch_ops_pass_with_forward_mode_checked(
    op: str, rows: int, cols: int, mode: str, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(rows, cols, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    result = gk.check_gradients(_OPS[op], x, mode=mode, seed=seed)
    assert result.passed, (op, result.hints, result.notes)
    assert not _not_checked(result)


def test_inputs_at_minus_infinity_do_not_fail_forward_mode() -> None:
    # finite differences of a projection through -inf entries are NaN: they judge no jvp
    x = torch.tensor([[1.0, -float("inf"), 0.5], [0.2, 0.3, -float("inf")]], dtype=torch.float64)
    result = gk.check_gradients(lambda t: torch.softmax(t, -1), x.requires_grad_(), mode="fast")
    assert "forward_ad" not in _kinds(result)
    assert result.passed, result.notes
