"""Tensors fn or loss_fn captured in float32 while the check runs in float64."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk
from gradcheck_kit._src.engine.captured import captured_tensors, explain_dtype_error

MODES = ["full", "fast"]

torch.manual_seed(0)
GLOBAL_TARGET = torch.randn(5, 3)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())


def _x() -> torch.Tensor:
    return torch.randn(5, 4, generator=torch.Generator().manual_seed(1))


def _huber_loss_with(target: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    # huber_loss's backward does not promote float32 to float64 (torch 2.13, CPU):
    # "Found dtype Float but expected Double", as mse_loss's did on older releases
    return lambda pred: F.huber_loss(pred, target, reduction="sum")


def _global_huber(pred: torch.Tensor) -> torch.Tensor:
    return F.huber_loss(pred, GLOBAL_TARGET, reduction="sum")


def test_the_construction_fails_in_plain_torch() -> None:
    """The failure the library works around: without it the backward raises."""
    pred = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    loss = F.huber_loss(pred, torch.randn(5, 3), reduction="sum")
    with pytest.raises(RuntimeError, match="Found dtype Float but expected Double"):
        loss.backward()


def _bits(t: torch.Tensor) -> tuple[torch.dtype, bytes]:
    return t.dtype, t.detach().numpy().tobytes()


@pytest.mark.parametrize("mode", MODES)
def test_closure_target_is_cast_for_the_check_and_named_in_a_note(mode: str) -> None:
    target = torch.randn(5, 3)
    before = _bits(target)
    loss_fn = _huber_loss_with(target)
    result = gk.check_module_gradients(_net(), _x(), loss_fn=loss_fn, mode=mode)
    assert result.passed, result.notes
    notes = [n for n in result.notes if n.startswith("captured ")]
    assert notes == [
        "captured float32 tensor 'target' (shape (5, 3), captured by loss_fn) was used as "
        "float64 during the check"
    ]
    # the closure holds the user's own tensor again, bit for bit
    assert loss_fn.__closure__ is not None
    assert loss_fn.__closure__[0].cell_contents is target
    assert _bits(target) == before


@pytest.mark.parametrize("mode", MODES)
def test_global_target_is_cast_and_restored(mode: str) -> None:
    before = GLOBAL_TARGET
    result = gk.check_module_gradients(_net(), _x(), loss_fn=_global_huber, mode=mode)
    assert result.passed
    assert any("'GLOBAL_TARGET'" in n and "a global read by loss_fn" in n for n in result.notes)
    assert GLOBAL_TARGET is before and GLOBAL_TARGET.dtype == torch.float32


def test_check_gradients_casts_a_captured_tensor_in_forward_too() -> None:
    end = torch.rand(6)
    x = torch.rand(6, dtype=torch.float64, requires_grad=True)
    # lerp refuses mixed dtypes in its forward: "expected dtype double for `end`..."
    result = gk.check_gradients(lambda t: torch.lerp(t, end, 0.3), x)
    assert result.passed
    assert any("'end'" in n for n in result.notes)


class _ScaleBy(torch.autograd.Function):
    """A Function whose backward uses a float32 tensor with an op that does not promote."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return x * w

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (w,) = ctx.saved_tensors
        # lerp(grad, w, 0) is grad, but lerp refuses a float64 grad beside a float32 w
        return torch.lerp(grad, w.expand_as(grad), 0.0) * w, None


@pytest.mark.parametrize("mode", MODES)
def test_a_custom_backward_that_meets_the_captured_dtype_works(mode: str) -> None:
    w = torch.rand(4) + 0.5
    x = torch.rand(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="double"):
        _ScaleBy.apply(x, w).sum().backward()  # plain torch: the backward raises
    result = gk.check_gradients(lambda t: _ScaleBy.apply(t, w), x, mode=mode)
    assert result.passed
    assert any("'w'" in n for n in result.notes)


def test_function_that_mixes_dtypes_on_purpose_is_left_as_it_is() -> None:
    w = torch.randn(3, 2)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    # float32 arithmetic inside: loose tolerances, and a step float32 can see
    result = gk.check_gradients(
        lambda t: (t.float() @ w).double(), x, eps=1e-2, atol=1e-3, rtol=1e-2
    )
    assert result.passed, result.notes
    assert not any(n.startswith("captured ") for n in result.notes)


class _HoldsTarget(torch.nn.Module):
    """A loss module keeping its target as a plain attribute (not a buffer)."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target

    def forward(self, pred: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(pred, self.target, reduction="sum")


def test_a_tensor_reached_another_way_raises_invalid_argument_with_the_fix() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = _HoldsTarget(torch.randn(5, 3))
    with pytest.raises(gk.InvalidArgument) as info:
        gk.check_module_gradients(net, _x(), loss_fn=loss, mode="fast")
    text = str(info.value)
    assert "Found dtype Float but expected Double" in text
    assert "dtype='native'" in text and "attribute" in text
    assert isinstance(info.value.__cause__, RuntimeError)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_native_dtype_needs_no_cast() -> None:
    target = torch.randn(5, 3)
    result = gk.check_module_gradients(
        _net(), _x(), loss_fn=_huber_loss_with(target), dtype="native", mode="fast"
    )
    assert result.passed
    assert not any(n.startswith("captured ") for n in result.notes)


def test_other_errors_are_not_reworded() -> None:
    assert explain_dtype_error(RuntimeError("shape mismatch"), "float64") is None
    dtype_error = RuntimeError("Found dtype Float but expected Double")
    assert explain_dtype_error(dtype_error, "native") is None

    def broken(t: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom, not about float or double")

    with pytest.raises(RuntimeError, match="boom"):
        gk.check_gradients(broken, torch.rand(3, dtype=torch.float64, requires_grad=True))


@settings(max_examples=20, deadline=None)
@given(
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
    depth=st.integers(0, 2),
    shape=st.lists(st.integers(1, 3), min_size=0, max_size=2),
)
def test_captured_tensors_finds_lower_precision_at_any_closure_depth(
    dtype: torch.dtype, depth: int, shape: list[int]
) -> None:
    hidden = torch.zeros(shape, dtype=dtype)

    def inner(t: torch.Tensor) -> torch.Tensor:
        return t + hidden

    fn: Callable[[torch.Tensor], torch.Tensor] = inner
    for _ in range(depth):
        fn = (lambda f: lambda t: f(t))(fn)
    found = captured_tensors([fn], "fn")
    if dtype == torch.float64:
        assert found == []
    else:
        (c,) = found
        assert c.name == "hidden" and c.tensor is hidden
        assert c.owner == ("fn" if depth == 0 else "f")


class _MseWithoutPromotion(torch.autograd.Function):
    """mse_loss(reduction="sum") as torch 2.11's CUDA backward behaved with a float32 target."""

    @staticmethod
    def forward(ctx: Any, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(pred, target)
        return (pred - target).square().sum()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        pred, target = ctx.saved_tensors
        if target.dtype != pred.dtype:
            raise RuntimeError(
                f"Found dtype {str(target.dtype)[6:].title()} but expected "
                f"{'Double' if pred.dtype == torch.float64 else 'Float'}"
            )
        return 2 * grad * (pred - target), None


def test_the_dynamic_graph_example_passes_where_the_backward_does_not_promote() -> None:
    """examples/test_dynamic_graph.py's check, with torch 2.11's non-promoting backward."""
    import random

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    class Dynamic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net(x)
            for _ in range(random.randint(0, 2)):  # a new graph at every call
                out = out.tanh()
            return out

    x, y = torch.randn(6, 20), torch.randn(6, 3)
    result = gk.assert_module_gradients(
        Dynamic(), x, loss_fn=lambda pred: _MseWithoutPromotion.apply(pred, y), rng="replay"
    )
    assert any("'y' (shape (6, 3), captured by loss_fn)" in n for n in result.notes)
    assert y.dtype == torch.float32


def test_a_float32_module_called_by_fn_is_named_as_the_likely_cause() -> None:
    net = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(gk.InvalidArgument, match="check_module_gradients") as info:
        gk.check_gradients(lambda t: net(t), x)
    assert "dtype='native'" in str(info.value)
    assert gk.check_gradients(lambda t: net(t), x, dtype="native").passed


def test_closure_is_restored_when_the_second_try_fails_too() -> None:
    target = torch.randn(5, 3)
    other = _HoldsTarget(torch.randn(5, 3))  # reached through an attribute: not cast

    def loss_fn(pred: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(pred, target, reduction="sum") + other(pred)

    with pytest.raises(gk.InvalidArgument, match="Found dtype Float but expected Double"):
        gk.check_module_gradients(_net(), _x(), loss_fn=loss_fn, mode="fast")
    assert loss_fn.__closure__ is not None
    cells = {c.cell_contents is target for c in loss_fn.__closure__}
    assert True in cells and target.dtype == torch.float32
