"""Diagnoses built from the situations where they once misled.

Each test rebuilds the situation a user met and asserts what the message says
(the real cause) and what it no longer says (the misleading guess).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _schemas import validate_results
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradcheck_kit as gk

# --------------------------------------------------------------------------- graph reach


class Swish(torch.autograd.Function):
    """x * sigmoid(x): its forward runs sigmoid with grad mode off, as every Function's does."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        scale = float(s.mean().item())  # a Python number inside forward cuts nothing
        ctx.save_for_backward(x, s)
        return x * s * scale / scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, s = ctx.saved_tensors
        return grad * (s + x * s * (1 - s))


class RoundSign(torch.autograd.Function):
    """Returns its input's sign, marked non-differentiable."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = torch.sign(x)
        ctx.mark_non_differentiable(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        return torch.zeros_like(grad)


class SwishNet(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 1)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h = RoundSign.apply(h) if self.how == "sign" else Swish.apply(h)
        if self.how == "detach":
            h = h.detach()
        return self.b(h)


def test_graph_reach_blames_the_detach_not_the_function_forward() -> None:
    model, x = SwishNet("detach"), torch.randn(3, 4)
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_graph_reaches(lambda: model(x).sum(), model)
    text = str(err.value)
    assert "does not reach 2 of 4 parameters" in text
    assert "'a.weight', 'a.bias': detach returns a tensor without autograd history" in text
    assert "h = h.detach()" in text
    assert "sigmoid" not in text and "grad mode off" not in text


def test_graph_reach_passes_through_a_custom_function() -> None:
    model, x = SwishNet("plain"), torch.randn(3, 4)
    gk.assert_graph_reaches(lambda: model(x).sum(), model)


def test_graph_reach_blames_a_function_whose_output_is_not_differentiable() -> None:
    model, x = SwishNet("sign"), torch.randn(3, 4)
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_graph_reaches(lambda: model(x).sum(), model)
    text = str(err.value)
    assert "'a.weight', 'a.bias': RoundSign.apply returned a tensor that does not require" in text
    assert "RoundSign.apply(h) if" in text  # the line that called it


def test_graph_reach_blames_a_function_called_under_no_grad() -> None:
    w = torch.randn(4, requires_grad=True)

    def loss() -> torch.Tensor:
        with torch.no_grad():
            h = Swish.apply(w)
        return (h * w).sum()

    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_graph_reaches(loss, {"w": w, "v": torch.ones(1, requires_grad=True)})
    text = str(err.value)
    # w still reaches the output through `h * w`; only the unused v is reported.
    assert "'v': no operation in the computation read it" in text

    def cut() -> torch.Tensor:
        with torch.no_grad():
            h = Swish.apply(w)
        return (h * 2).sum()

    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_graph_reaches(cut, {"w": w})
    assert "'w': Swish.apply returned a tensor that does not require grad" in str(err.value)


# --------------------------------------------------------------------------- in-place forward


class ClampInPlace(torch.autograd.Function):
    """ReLU that clamps its input in place and forgets ctx.mark_dirty."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.clamp_(min=0)
        ctx.save_for_backward(x)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (y > 0)


class AddOneInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.add_(1)
        return x * 2

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return 2 * grad


@pytest.mark.parametrize("function", [ClampInPlace, AddOneInPlace])
@pytest.mark.parametrize("positive", [False, True])
def test_audit_names_an_in_place_write_in_forward_not_randomness(
    function: Any, positive: bool
) -> None:
    x = torch.randn(5, dtype=torch.float64)
    x = (x.abs() + 0.1 if positive else x).requires_grad_()
    result = gk.check_autograd_function(function, (x,))
    assert not result.passed
    text = result.summary()
    failed = {f.check: f.text for f in result.failed}
    # clamp_ of positive values changes nothing but still writes: the version counter tells
    assert list(failed) == ["inputs_unchanged"], text
    assert "forward modifies its input inputs[0] (x) in place without ctx.mark_dirty(x)" in text
    assert "x = x.clone()" in text
    assert "random" not in text and "rng=" not in text


def test_plain_function_writing_its_input_is_not_called_random() -> None:
    def scale(values: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            values.mul_(2)  # the bug: the input itself is doubled on every call
        return values * 3

    result = gk.check_gradients(scale, torch.randn(4, dtype=torch.float64, requires_grad=True))
    assert not result.passed
    assert result.hints[0].kind == "in_place_input"
    assert "fn modifies its input input in place" in result.hints[0].text
    assert "values = values.clone()" in result.hints[0].text
    assert "rng='replay'" not in str(result.hints)


# --------------------------------------------------------------------------- double backward


class CubeNoGradBackward(torch.autograd.Function):
    """x ** 3 with a backward computed under no_grad: right once, not twice differentiable."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        with torch.no_grad():
            return 3 * x**2 * grad


class CubeOnceDifferentiable(CubeNoGradBackward):
    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return 3 * x**2 * grad


class CubeHalfDetached(CubeNoGradBackward):
    """Right values (x^2 + 2 x^2), but a third of the second derivative is detached."""

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return (x.detach() ** 2 + 2 * x**2) * grad


def _x64() -> torch.Tensor:
    return torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def test_a_first_order_function_passes_with_a_note_on_double_backward() -> None:
    result = gk.check_autograd_function(CubeNoGradBackward, _x64().requires_grad_())
    assert result.passed, result.summary()
    finding = next(f for f in result.findings if f.check == "double_backward")
    assert finding.status == "skipped"
    assert finding.text.startswith("not twice differentiable")
    assert "@once_differentiable" in finding.text and "check_second_order" in finding.text
    required = gk.check_autograd_function(
        CubeNoGradBackward, _x64().requires_grad_(), second_order=True
    )
    assert "double_backward" in {f.check for f in required.failed}


def test_a_once_differentiable_function_passes_cleanly() -> None:
    result = gk.assert_autograd_function(CubeOnceDifferentiable, _x64().requires_grad_())
    statuses = {f.check: f.status for f in result.findings}
    assert "failed" not in statuses.values()
    assert statuses["double_backward"] == "skipped"
    assert result.second_order is None  # nothing run against a declared first-order backward


def test_a_wrong_second_derivative_that_autograd_would_give_fails() -> None:
    result = gk.check_autograd_function(CubeHalfDetached, _x64().requires_grad_())
    assert not result.passed
    failed = {f.check: f.text for f in result.failed}
    assert list(failed) == ["double_backward"], result.summary()
    assert failed["double_backward"].startswith("double backward disagrees")


# --------------------------------------------------------------------------- blur border

BOX = torch.ones(3, 3, dtype=torch.float64) / 9
GAUSS = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64) / 16


def blur_function(kernel: torch.Tensor, padding: str) -> Any:
    """A 3x3 blur (zero padding) whose backward pads the gradient another way at the border."""

    class Blur(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, image: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.conv2d(image, kernel.to(image.dtype)[None, None], padding=1)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            flipped = kernel.to(grad.dtype).flip(0, 1)[None, None]
            padded = torch.nn.functional.pad(grad, (1, 1, 1, 1), mode=padding)
            return torch.nn.functional.conv2d(padded, flipped)  # right inside, wrong at edges

    return Blur


@pytest.mark.parametrize("kernel", [BOX, GAUSS], ids=["box", "gauss"])
@pytest.mark.parametrize("padding", ["reflect", "replicate"])
def test_a_blur_wrong_at_the_border_gets_a_border_hint_not_a_factor(
    kernel: torch.Tensor, padding: str
) -> None:
    image = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(blur_function(kernel, padding).apply, image, mode="full")
    assert not result.passed
    kinds = [h.kind for h in result.hints]
    assert kinds[0] == "border" and "factor" not in kinds, result.hints
    text = result.hints[0].text
    assert text.startswith("the mismatch is concentrated at the border of input 'input'")
    assert "(rows 0 and 7, columns 0 and 7;" in text
    assert "check padding/edge handling in the backward" in text
    assert "factor" not in result.summary()


@settings(max_examples=8, deadline=None)
@given(
    height=st.integers(5, 9),
    width=st.integers(5, 9),
    padding=st.sampled_from(["reflect", "replicate", "circular"]),
)
def test_border_hint_names_the_image_edges(height: int, width: int, padding: str) -> None:
    gen = torch.Generator().manual_seed(height * 10 + width)
    image = torch.randn(1, 1, height, width, dtype=torch.float64, generator=gen)
    fn = blur_function(GAUSS, padding).apply
    result = gk.check_gradients(fn, image.requires_grad_(), mode="full")
    border = [h for h in result.hints if h.kind == "border"]
    assert border, result.hints
    assert f"rows 0 and {height - 1}, columns 0 and {width - 1};" in border[0].text


def test_a_uniform_factor_on_a_blur_is_still_a_factor() -> None:
    class HalfBlur(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, image: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.conv2d(image, GAUSS[None, None], padding=1)

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.conv2d(grad, GAUSS[None, None], padding=1) / 2

    image = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(HalfBlur.apply, image, mode="full")
    assert [h.kind for h in result.hints] == ["factor"]
    assert "missing factor of 2" in result.hints[0].text


@settings(max_examples=40, deadline=None)
@given(
    wrong=st.sets(
        st.sampled_from([0, 1, 2, 5, 7, 8, 15, 16, 23, 56, 60, 63, 27, 36]), min_size=2, max_size=6
    )
)
def test_scattered_errors_on_an_image_are_not_called_a_border(wrong: set[int]) -> None:
    from gradcheck_kit._src.engine.diagnose import Block, diagnose

    x = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    numeric = torch.eye(64, dtype=torch.float64) * 2
    analytic = numeric.clone()
    for j in wrong:
        analytic[j, j] += 1.0 + j / 64  # an error with no pattern of value
    block = Block(
        "output", "input", (1, 8, 8), (1, 8, 8), analytic, numeric, analytic != numeric, x
    )
    # even 6 scattered errors that all happen to sit on the edge (a chance of 0.5 %) are not
    # evidence enough: a padding bug spoils a whole edge
    assert "border" not in [h.kind for h in diagnose([block])]


# --------------------------------------------------------------------------- fast mode


class DetachedNorm(nn.Module):
    """Standardises its input with a mean and spread that autograd does not see."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True).detach()
        spread = x.std(dim=-1, keepdim=True).detach()
        return (x - mean) / (spread + 1e-5)


class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = DetachedNorm()
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.norm(self.fc1(x))))


class ScaledNet(nn.Module):
    """Its `scale` parameter reaches the output only through .detach()."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.scale = nn.Parameter(torch.ones(16))
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)) * self.scale.detach())


def _squared(out: torch.Tensor) -> torch.Tensor:
    return out.pow(2).sum()


def test_fast_mode_failure_says_what_was_projected_and_where_it_goes_wrong() -> None:
    torch.manual_seed(0)
    result = gk.check_module_gradients(NormNet(), torch.randn(5, 8), loss_fn=_squared, mode="fast")
    assert not result.passed and result.mode == "fast"
    assert result.entries == 8 * 16 + 16 + 16 * 4 + 4
    text = result.summary()
    assert "Mismatched elements" not in text
    assert "The projected check differs: 1 of 1 random projection of 212 entries" in text
    assert "Wrong entry, found by bisecting the failing projection" in text
    hint = next(h for h in result.hints if h.kind == "some_inputs")
    assert "only the gradients with respect to 'params/fc1.weight', 'params/fc1.bias'" in hint.text
    assert "('params/fc2.weight', 'params/fc2.bias') agree" in hint.text
    assert ".detach()" in hint.text


def test_full_mode_names_the_same_parameters() -> None:
    torch.manual_seed(0)
    result = gk.check_module_gradients(NormNet(), torch.randn(5, 8), loss_fn=_squared, mode="full")
    assert [h.kind for h in result.hints] == ["some_inputs"], result.hints
    assert "Mismatched elements: 128 / 128 (100.0%)" in result.summary()


def test_fast_mode_names_a_detached_parameter() -> None:
    torch.manual_seed(0)
    result = gk.check_module_gradients(
        ScaledNet(), torch.randn(5, 8), loss_fn=_squared, mode="fast"
    )
    assert not result.passed
    kinds = [h.kind for h in result.hints]
    assert kinds[:2] == ["zero", "one_input"], result.hints
    assert "autograd gives no gradient for input 'params/scale'" in result.hints[0].text
    assert "is it detached" in result.hints[0].text


def test_fast_mode_result_with_entries_is_valid_json() -> None:
    torch.manual_seed(0)
    result = gk.check_module_gradients(NormNet(), torch.randn(5, 8), loss_fn=_squared, mode="fast")
    data = result.to_dict()
    validate_results({"schema_version": 1, "results": [data]})
    assert gk.GradcheckResult.from_dict(data).entries == 212


class DecaysInForward(nn.Module):
    """Shrinks its own weight on every call: no two calls see the same parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.weight.mul_(0.9)
        return (self.weight * x).sum()


def test_a_module_writing_its_parameter_in_forward_is_named() -> None:
    module = DecaysInForward()
    before = module.weight.detach().clone()
    result = gk.check_module_gradients(module, torch.randn(3))
    assert not result.passed
    hint = result.hints[0]
    assert hint.kind == "in_place_input" and hint.input == "params/weight"
    assert "fn modifies its input params/weight in place" in hint.text
    assert "clone it before" in hint.text
    assert torch.equal(module.weight.detach(), before)  # the check left it as it was


def test_fast_mode_names_a_uniform_factor_but_not_a_border_error() -> None:
    x = torch.randn(4000, dtype=torch.float64, requires_grad=True)
    halved = gk.check_gradients(lambda t: t.detach() * t, x, mode="fast")
    assert halved.hints[0].kind == "factor" and halved.hints[0].factor == pytest.approx(0.5)
    assert "a missing factor of 2?" in halved.hints[0].text
    image = torch.randn(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    blurred = gk.check_gradients(blur_function(BOX, "reflect").apply, image, mode="fast")
    assert not blurred.passed
    assert "factor" not in [h.kind for h in blurred.hints]


@settings(max_examples=30, deadline=None)
@given(
    k=st.floats(-4, 4).filter(lambda v: abs(v) > 0.1),
    entry_k=st.floats(-4, 4).filter(lambda v: abs(v) > 0.1),
    numeric=st.floats(0.1, 10),
)
def test_projected_factor_needs_the_projection_and_the_entry_to_agree(
    k: float, entry_k: float, numeric: float
) -> None:
    from gradcheck_kit._src.engine.diagnose import projected_factor_hint

    hint = projected_factor_hint((k * numeric, numeric), (entry_k, 1.0), "output", "x")
    if hint is not None:
        assert hint.factor is not None
        assert abs(entry_k - k) <= 0.02 * abs(k)
        assert abs(hint.factor - k) <= 0.021 * max(1.0, abs(k))
