"""Results serialise to the documented schema and read back; messages stand on their own."""

from __future__ import annotations

import json
import re

import pytest
import torch
from _functions import OneEntryWrong, square_half
from _schemas import validate_results

import gradcheck_kit as gk
from gradcheck_kit._src.results import GradcheckResult


def _x(n: int = 5) -> torch.Tensor:
    return torch.linspace(-1, 1, n, dtype=torch.float64).requires_grad_()


def _results() -> list[GradcheckResult]:
    return [
        gk.check_gradients(torch.sin, _x()),
        gk.check_gradients(square_half, _x(), mode="full"),
        gk.check_gradients(square_half, _x(), mode="fast"),
        gk.check_gradients(OneEntryWrong.apply, _x(1000), mode="fast"),
        gk.check_gradients(lambda t: torch.nn.functional.dropout(t, 0.5), _x()),
        gk.check_module_gradients(torch.nn.Linear(3, 2), torch.randn(2, 3)),
        gk.check_gradients(
            lambda t: t.sqrt(), torch.tensor([1e-7, 1.0], dtype=torch.float64, requires_grad=True)
        ),
    ]


def test_every_result_validates_against_the_schema_and_round_trips() -> None:
    results = _results()
    document = {
        "schema_version": gk.results.SCHEMA_VERSION,
        "results": [r.to_dict() for r in results],
    }
    text = json.dumps(document, allow_nan=False)  # strict JSON: no NaN/Infinity literals
    validate_results(json.loads(text))
    for r in results:
        again = GradcheckResult.from_dict(json.loads(json.dumps(r.to_dict())))
        assert again.to_dict() == r.to_dict()


def test_mismatch_message_says_what_where_why_and_how_to_reproduce() -> None:
    with pytest.raises(gk.GradientMismatchError) as info:
        gk.assert_gradients_close(square_half, _x(), mode="full")
    text = str(info.value)
    lines = text.splitlines()
    assert lines[0] == (
        "[gradcheck] Gradients are not close! "
        "(check_gradients of 'SquareHalf.apply', full mode, float64)"
    )
    assert "Mismatched elements: 4 / 25 (16.0%)" in text  # x = 0 has no error to find
    # x = -1 and x = 1 tie for the largest error; either is the right place to point at.
    # The allowance is atol (1e-5) plus the finite differences' error estimate, not
    # 1e-3 of the value: the default rtol follows the estimate.
    assert re.search(
        r"Greatest absolute difference: 1 at output index \(([04]),\), input index \(\1,\) "
        r"\(up to 1e-05 allowed\)",
        text,
    )
    assert "The failure occurred for output 'output', input 'input'" in text
    assert "Hint: analytic ≈ 0.5 × numeric" in text and "factor of 2" in text
    assert (
        "Reproduce: import torch, gradcheck_kit; gradcheck_kit.assert_gradients_close(fn, " in text
    )
    # made at run time, so no import reaches it: named with its file, to re-create
    assert "re-create before pasting: fn (SquareHalf.apply at " in text
    assert info.value.result is not None and not info.value.result.passed


def test_msg_prefix_and_callable() -> None:
    with pytest.raises(gk.GradientMismatchError, match=r"^layer 3\n\n\[gradcheck\]"):
        gk.assert_gradients_close(square_half, _x(), msg="layer 3")
    with pytest.raises(gk.GradientMismatchError, match=r"^CUSTOM$"):
        gk.assert_gradients_close(square_half, _x(), msg=lambda text: "CUSTOM")


def test_nondeterministic_assertion_type_and_text() -> None:
    with pytest.raises(gk.errors.NondeterministicFunctionError, match="rng='replay'"):
        gk.assert_gradients_close(lambda t: torch.nn.functional.dropout(t, 0.5), _x())


def test_passing_summary_and_result_bool() -> None:
    result = gk.assert_gradients_close(torch.sin, _x())
    assert bool(result) is True
    assert result.summary().startswith(
        "[gradcheck] Gradients match (check_gradients of 'torch.sin'"
    )


def test_results_are_published_for_recorders() -> None:
    from gradcheck_kit._src import recording

    seen: list[GradcheckResult] = []
    unsubscribe = recording.subscribe(seen.append)
    try:
        gk.check_gradients(torch.sin, _x())
        with pytest.raises(gk.GradientMismatchError):
            gk.assert_gradients_close(square_half, _x())
    finally:
        unsubscribe()
    gk.check_gradients(torch.sin, _x())
    assert [r.passed for r in seen] == [True, False]


def test_full_mode_blocks_carry_a_pooled_error_map() -> None:
    from _functions import TransposedMatmul

    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 40, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.randn(40, generator=g, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(TransposedMatmul.apply, (w, a), mode="full")
    by_input = {p.input: p for p in result.pairs}
    wrong, right = by_input["inputs[0]"], by_input["inputs[1]"]
    assert wrong.error_map is not None and right.error_map is None  # passing: no map
    m = wrong.error_map
    assert (m.rows, m.cols) == (40, 1600)
    assert len(m.abs_error) * m.row_step >= 40 and len(m.abs_error[0]) * m.col_step >= 1600
    assert max(len(m.abs_error), len(m.abs_error[0])) <= 32
    # pooling keeps the total count and the peak of the block
    assert sum(map(sum, m.mismatched)) == wrong.mismatched
    assert max(map(max, m.abs_error)) == pytest.approx(wrong.max_abs_error, rel=1e-4)
    data = result.to_dict()
    assert gk.GradcheckResult.from_dict(data).to_dict() == data
    assert gk.GradcheckResult.from_dict(data) == result


def test_fast_mode_has_no_error_map() -> None:
    x = torch.randn(5000, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(lambda t: t * t, x, mode="fast")
    assert all(p.error_map is None for p in result.pairs)
