"""The gradient checker on CUDA tensors: float64, native float32 with TF32 on and off, state.

Every test here needs a GPU and skips in CI with a reason naming the missing device.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from support.fingerprint import fingerprint
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src.engine.precision import Tf32Settings
from gradcheck_kit._src.state.rng import capture_rng_state

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA device not available: torch.cuda.is_available() is False",
)


def _mlp(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 4)).to("cuda", dtype)


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)
    ).cuda()


@pytest.fixture
def tf32_on() -> Iterator[None]:
    """TF32 for cuBLAS matmuls and cuDNN convolutions, as many training scripts set it."""
    saved = Tf32Settings.capture()
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        saved.restore()


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_float64_mlp_on_cuda_passes(mode: str) -> None:
    model = _mlp(torch.float64)
    x = torch.randn(8, 32, device="cuda", dtype=torch.float64)
    result = gk.check_module_gradients(model, x, mode=mode)  # type: ignore[arg-type]
    assert result.passed, result.summary()
    assert result.mode == mode


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_native_float32_on_cuda_without_tf32_passes(mode: str) -> None:
    model = _mlp(torch.float32)
    x = torch.randn(8, 32, device="cuda")
    result = gk.check_module_gradients(model, x, mode=mode, dtype="native")  # type: ignore[arg-type]
    assert result.passed, result.summary()
    assert result.dtype == "float32"


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_native_float32_with_tf32_on_passes_says_so_and_restores(tf32_on: None, mode: str) -> None:
    before = Tf32Settings.capture()
    model, x = _convnet(), torch.randn(2, 3, 6, 6, device="cuda")
    result = gk.check_module_gradients(model, x, mode=mode, dtype="native")  # type: ignore[arg-type]
    assert result.passed, result.summary()
    assert any("TF32 was on for cuBLAS matmuls" in note for note in result.notes)
    assert Tf32Settings.capture() == before


def test_a_wrong_backward_is_caught_on_cuda_with_its_location() -> None:
    class WrongTanh(torch.autograd.Function):
        @staticmethod
        def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
            y = torch.tanh(x)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> torch.Tensor:
            (y,) = ctx.saved_tensors  # type: ignore[attr-defined]
            wrong = 1 - y**2
            wrong[3] = wrong[3] * 1.5  # one entry off
            return g * wrong

    x = torch.randn(6, device="cuda", dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(WrongTanh.apply, x, mode="full")
    assert not result.passed
    (failing,) = [p for p in result.pairs if not p.passed]
    assert failing.mismatched == 1 and failing.worst[0].input_index == (3,)


def test_cpu_and_cuda_checks_agree_on_the_analytic_jacobian() -> None:
    x = torch.randn(8, 32, dtype=torch.float64)
    cpu = gk.check_module_gradients(_mlp(torch.float64).cpu(), x, mode="full")
    gpu = gk.check_module_gradients(_mlp(torch.float64), x.cuda(), mode="full")
    assert cpu.passed and gpu.passed
    assert [(p.output, p.input) for p in cpu.pairs] == [(p.output, p.input) for p in gpu.pairs]
    assert max(p.max_abs_error for p in gpu.pairs) < 1e-7


def test_check_leaves_cuda_rng_parameters_and_grads_untouched() -> None:
    torch.cuda.init()
    model = nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.3), nn.Linear(16, 2)).cuda()
    x = torch.randn(4, 16, device="cuda", dtype=torch.float32)
    model(x).sum().backward()  # existing .grad that a check must not touch
    before_rng, before = capture_rng_state(), fingerprint(model, x)
    result = gk.check_module_gradients(model, x, dtype="float64", rng="replay", mode="fast")
    assert result.passed, result.summary()
    assert capture_rng_state() == before_rng
    assert fingerprint(model, x) == before
    assert next(model.parameters()).device.type == "cuda"


def test_cuda_rng_is_restored_when_fn_raises() -> None:
    torch.cuda.init()
    x = torch.randn(4, device="cuda", dtype=torch.float64, requires_grad=True)
    before = capture_rng_state()

    def fn(t: torch.Tensor) -> torch.Tensor:
        torch.rand(3, device="cuda")
        raise ValueError("user bug")

    with pytest.raises(ValueError, match="user bug"):
        gk.check_gradients(fn, x)
    assert capture_rng_state() == before
