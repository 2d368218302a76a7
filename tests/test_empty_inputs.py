"""Empty inputs and outputs: nothing to check passes with a note, as torch's gradcheck passes.

Parametrised tests over shapes that include 0 are common; ``empty="error"``
makes such a check an error instead.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk
from gradcheck_kit.report.document import make_document
from gradcheck_kit.report.html import generate_html

MODES = ["full", "fast", "auto"]


def f64(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64).add_(0.5).requires_grad_()


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(0, 3), min_size=1, max_size=3).filter(lambda s: 0 in s),
    mode=st.sampled_from(MODES),
    op=st.sampled_from([torch.sin, torch.exp, lambda t: t.sum(dim=0), lambda t: t * 2]),
)
def test_an_empty_input_passes_with_nothing_to_check_like_torch(
    shape: list[int], mode: str, op
) -> None:
    x = f64(*shape)
    assert torch.autograd.gradcheck(op, (x,))
    result = gk.check_gradients(op, x, mode=mode)
    assert result.passed and result.status == "empty"
    assert result.notes[0].startswith("nothing to check: every checked input is empty")
    assert "Nothing to check" in result.summary()
    gk.assert_gradients_close(op, x, mode=mode)  # passes, raises nothing


@pytest.mark.parametrize(
    "fn, inputs, why",
    [
        (torch.mm, (f64(3, 0), f64(0, 4)), "every checked input is empty"),
        (torch.linalg.det, (f64(0, 0),), "every checked input is empty"),
        (lambda t: t[:0] * 3, (f64(4),), "every output fn returns is empty"),
    ],
)
def test_empty_jacobians_of_real_ops_pass_with_the_reason(fn, inputs, why: str) -> None:
    result = gk.check_gradients(fn, inputs)
    assert result.passed and result.status == "empty" and why in result.notes[0]


def test_empty_error_makes_an_empty_check_an_error_naming_the_input() -> None:
    why = r"every checked input is empty \(input \(0, 3\)\)"
    with pytest.raises(gk.InvalidArgument, match=why):
        gk.check_gradients(torch.sin, f64(0, 3), empty="error")
    with pytest.raises(gk.InvalidArgument, match="empty='error'"):
        gk.check_module_gradients(torch.nn.Linear(3, 2).double(), f64(0, 3), empty="error")
    with pytest.raises(gk.InvalidArgument, match="empty='nope' is not one of 'pass', 'error'"):
        gk.check_gradients(torch.sin, f64(2), empty="nope")  # type: ignore[arg-type]


def test_an_empty_input_beside_a_full_one_is_noted_and_the_other_is_checked() -> None:
    class DoubledBackward(torch.autograd.Function):
        @staticmethod
        def forward(x: torch.Tensor) -> torch.Tensor:
            return x.sin()

        @staticmethod
        def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def]
            (x,) = ctx.saved_tensors
            return 2 * grad * x.cos()

    def fn(empty: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([empty, DoubledBackward.apply(x)])

    good = gk.check_gradients(lambda e, x: torch.cat([e, x.sin()]), (f64(0), f64(3)))
    assert good.passed and good.status == "passed"
    assert "inputs[0] (0,) empty: nothing to compare there" in good.notes
    bad = gk.check_gradients(fn, (f64(0), f64(3)))
    assert not bad.passed and bad.status == "mismatch"


def test_manual_second_order_and_module_checks_pass_an_empty_batch() -> None:
    x = f64(0, 3)
    manual = gk.check_matches_manual(torch.sin, inputs=x, manual_vjp=lambda g, t: g * t.cos())
    assert manual.passed and manual.status == "empty"
    assert manual.summary().startswith("[gradcheck] Nothing to check")
    assert gk.check_second_order(torch.sin, x).status == "empty"
    module = gk.check_module_gradients(torch.nn.Linear(3, 2).double(), torch.ones(0, 3))
    assert module.passed and module.status == "empty"


def test_the_report_says_nothing_to_check() -> None:
    record = gk.check_gradients(torch.sin, f64(0)).to_dict()
    page = "".join(generate_html(make_document([record])))
    assert "<td>nothing to check<td>" in page.replace("\n", "")
