"""Tests of gradcheck_kit._src.engine.diagnose: mismatch patterns → hints."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.func import jacrev

from gradcheck_kit._src.engine.diagnose import Block, diagnose, format_factor
from gradcheck_kit._src.errors import InvalidArgument
from gradcheck_kit._src.results import Hint

F64 = torch.float64
ATOL, RTOL = 1e-5, 1e-3
PATTERN_KINDS = {"zero", "sign", "factor", "transposed", "region"}


def jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """d fn(x) / d x as an (out_numel, in_numel) matrix, by autograd."""
    out = fn(x)
    full: torch.Tensor = jacrev(fn)(x)
    return full.reshape(out.numel(), x.numel())


def make_block(
    analytic: torch.Tensor,
    numeric: torch.Tensor,
    x: torch.Tensor,
    *,
    output: str = "output",
    input: str = "inputs[0]",
    output_shape: tuple[int, ...] | None = None,
) -> Block:
    """A block whose mismatch mask is the one a gradient check would compute."""
    mismatch = (analytic - numeric).abs() > ATOL + RTOL * numeric.abs()
    rows = analytic.shape[0]
    return Block(
        output=output,
        input=input,
        output_shape=output_shape if output_shape is not None else (rows,),
        input_shape=tuple(x.shape),
        analytic=analytic,
        numeric=numeric,
        mismatch=mismatch,
        input_values=x.detach().reshape(-1).to(F64),
    )


def kinds(hints: tuple[Hint, ...]) -> list[str]:
    return [hint.kind for hint in hints]


def square(x: torch.Tensor) -> torch.Tensor:
    return x**2


@pytest.fixture
def x12() -> torch.Tensor:
    # Six negative and six positive values, none near 0.
    values = [-2.1, 1.3, -0.7, 0.9, -1.6, 2.4, -0.4, 0.6, -1.2, 1.8, -2.7, 0.3]
    return torch.tensor(values, dtype=F64)


# ------------------------------------------------------------------ nothing to say


def test_no_blocks_and_no_mismatch_give_no_hint(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    assert diagnose([]) == ()
    assert diagnose([make_block(true, true, x12)]) == ()
    # Finite-difference-sized noise stays within tolerance: still nothing.
    noisy = true + 1e-9 * torch.randn(
        true.shape, dtype=F64, generator=torch.Generator().manual_seed(0)
    )
    assert diagnose([make_block(noisy, true, x12)]) == ()


# ------------------------------------------------------------------ factor and sign


def test_missing_factor_of_two(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    hints = diagnose([make_block(0.5 * true, true, x12)])
    assert kinds(hints) == ["factor"]
    hint = hints[0]
    assert hint.factor == pytest.approx(0.5)
    assert "analytic ≈ 0.5 × numeric on every mismatched element" in hint.text
    assert "a missing factor of 2?" in hint.text
    assert "'output'" in hint.text and "'inputs[0]'" in hint.text
    assert (hint.output, hint.input) == ("output", "inputs[0]")


@pytest.mark.parametrize(
    ("k", "shown", "phrase"),
    [
        (2.0, "2", "an extra factor of 2"),
        (3.0, "3", "an extra factor of 3"),
        (0.25, "0.25", "a missing factor of 4"),
        (1 / 64, "0.0156", "a missing factor of 64"),
        (0.731, "0.731", "a wrong scale factor of 0.731"),
        (-0.5, "-0.5", "a sign error and a missing factor of 2"),
        (-3.0, "-3", "a sign error and an extra factor of 3"),
    ],
)
def test_factor_is_named(x12: torch.Tensor, k: float, shown: str, phrase: str) -> None:
    fn: Callable[[torch.Tensor], torch.Tensor] = lambda x: torch.sin(x) * x.sum()  # noqa: E731
    true = jacobian(fn, x12)
    hints = diagnose([make_block(k * true, true, x12)])
    assert kinds(hints) == ["factor"]
    assert hints[0].factor == pytest.approx(k, rel=1e-9)
    assert f"analytic ≈ {shown} × numeric" in hints[0].text
    assert hints[0].text.endswith(f"— {phrase}?")


def test_sign_error(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    hints = diagnose([make_block(-true, true, x12)])
    assert kinds(hints) == ["sign"]
    assert hints[0].factor == -1.0
    assert "sign error" in hints[0].text
    assert "analytic ≈ −numeric on every mismatched element" in hints[0].text


def test_factor_against_real_finite_differences() -> None:
    """FD noise in the numeric Jacobian does not hide the factor."""
    x = torch.linspace(-1.5, 2.0, 7, dtype=F64)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.sin(t) * t.sum() + t**3

    eps = 1e-6
    columns = []
    for j in range(x.numel()):
        step = torch.zeros_like(x)
        step[j] = eps
        columns.append((fn(x + step) - fn(x - step)) / (2 * eps))
    numeric = torch.stack(columns, dim=1)
    true = jacobian(fn, x)
    assert diagnose([make_block(true, numeric, x)]) == ()
    hints = diagnose([make_block(2 * true, numeric, x)])
    assert kinds(hints) == ["factor"]
    assert hints[0].factor == pytest.approx(2.0, rel=1e-6)
    assert "an extra factor of 2" in hints[0].text


def test_factor_on_most_elements_reports_the_share() -> None:
    """Above the sample size the fit is found on a sample and counted exactly on all."""
    gen = torch.Generator().manual_seed(1)
    numeric = (0.5 + torch.rand(200, 200, dtype=F64, generator=gen)) * torch.where(
        torch.rand(200, 200, generator=gen) < 0.5, -1.0, 1.0
    ).to(F64)
    analytic = 0.5 * numeric
    off = torch.randperm(200 * 200, generator=gen)[:1000]
    analytic.view(-1)[off] = 3.0 * numeric.view(-1)[off]
    x = torch.randn(200, dtype=F64, generator=gen)
    hints = diagnose([make_block(analytic, numeric, x)])
    assert kinds(hints) == ["factor"]
    assert hints[0].factor == pytest.approx(0.5)
    assert "on 39000 of 40000 mismatched elements" in hints[0].text


def test_large_block_with_nan_and_the_global_rng_untouched() -> None:
    gen = torch.Generator().manual_seed(7)
    numeric = 0.5 + torch.rand(150, 150, dtype=F64, generator=gen)
    analytic = 0.25 * numeric
    analytic[::10, 3] = math.nan
    analytic[5, ::10] = math.inf
    x = torch.randn(150, dtype=F64, generator=gen)
    block = make_block(analytic, numeric, x)
    state = torch.random.get_rng_state()
    hints = diagnose([block])
    assert torch.equal(state, torch.random.get_rng_state())
    assert kinds(hints) == ["factor"]
    assert hints[0].factor == pytest.approx(0.25)
    assert "a missing factor of 4" in hints[0].text


def test_single_element_gets_a_factor_only_when_it_is_simple() -> None:
    x = torch.tensor([1.5], dtype=F64)
    true = jacobian(square, x)
    assert kinds(diagnose([make_block(0.5 * true, true, x)])) == ["factor"]
    assert "the only mismatched element" in diagnose([make_block(0.5 * true, true, x)])[0].text
    # One arbitrary ratio is no pattern.
    assert diagnose([make_block(0.613 * true, true, x)]) == ()


def test_factor_on_only_half_the_elements_is_no_pattern(x12: torch.Tensor) -> None:
    fn: Callable[[torch.Tensor], torch.Tensor] = lambda x: torch.sin(x) * x.sum()  # noqa: E731
    true = jacobian(fn, x12)
    gen = torch.Generator().manual_seed(6)
    half = torch.rand(true.shape, generator=gen) < 0.5
    wrong = torch.where(half, 0.5 * true, true + torch.randn(true.shape, dtype=F64, generator=gen))
    assert diagnose([make_block(wrong, true, x12)]) == ()


def test_scattered_ratios_are_no_factor(x12: torch.Tensor) -> None:
    fn: Callable[[torch.Tensor], torch.Tensor] = lambda x: torch.sin(x) * x.sum()  # noqa: E731
    true = jacobian(fn, x12)
    gen = torch.Generator().manual_seed(8)
    # Around one half, but each ratio off by up to 10 %: no single factor.
    spread = 1.0 + 0.2 * (torch.rand(true.shape, dtype=F64, generator=gen) - 0.5)
    assert diagnose([make_block(0.5 * true * spread, true, x12)]) == ()


def test_uniform_near_one_factor_is_named_as_a_scale_error(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    # 1.5 % too large on every entry: the default tolerance now resolves this, and a
    # factor that fits this tightly is a constant slightly off in the backward.
    (hint,) = diagnose([make_block(1.015 * true, true, x12)])
    assert hint.kind == "factor" and hint.factor == pytest.approx(1.015)
    assert "1.015 × numeric everywhere" in hint.text and "1.5% scale error" in hint.text


def test_near_one_noise_gives_no_factor(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    gen = torch.Generator().manual_seed(3)
    # 1.5 % too large on average, but each entry off by up to ±1 %: noise, no factor.
    noise = 1.015 + 0.02 * (torch.rand(true.shape, dtype=F64, generator=gen) - 0.5)
    assert diagnose([make_block(true * noise, true, x12)]) == ()


# ------------------------------------------------------------------ transposition


def test_scalar_output_with_transposed_square_input() -> None:
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(4, 4, dtype=F64, generator=gen)
    a = torch.randn(4, dtype=F64, generator=gen)

    def fn(m: torch.Tensor) -> torch.Tensor:
        return (m @ a).sum()

    true = jacobian(fn, w)
    wrong = true.reshape(4, 4).T.reshape(1, 16)
    hints = diagnose([make_block(wrong, true, w, output_shape=())])
    assert kinds(hints) == ["transposed"]
    assert "square input matrix transposed" in hints[0].text
    assert hints[0].input == "inputs[0]"


def test_general_block_transposed_on_the_input_and_on_the_output() -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(3, 3, dtype=F64, generator=gen)
    b = torch.randn(3, 3, dtype=F64, generator=gen)

    def fn(m: torch.Tensor) -> torch.Tensor:
        return m @ b

    true = jacobian(fn, w)
    by_input = true.reshape(9, 3, 3).transpose(1, 2).reshape(9, 9)
    hints = diagnose([make_block(by_input, true, w, output_shape=(3, 3))])
    assert kinds(hints) == ["transposed"]
    assert "square input matrix" in hints[0].text
    by_output = true.reshape(3, 3, 9).transpose(0, 1).reshape(9, 9)
    hints = diagnose([make_block(by_output, true, w, output_shape=(3, 3))])
    assert kinds(hints) == ["transposed"]
    assert "square output matrix" in hints[0].text


def test_non_square_and_symmetric_jacobians_are_not_called_transposed() -> None:
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(3, 4, dtype=F64, generator=gen)
    a = torch.randn(4, dtype=F64, generator=gen)
    true = jacobian(lambda m: (m @ a).sum(), w)
    # The (4, 3) transpose flattened into a (3, 4) slot is no transposition.
    wrong = true.reshape(3, 4).T.reshape(1, 12)
    assert "transposed" not in kinds(diagnose([make_block(wrong, true, w, output_shape=())]))

    # d(W + W.T)/dW is symmetric under transposing the input: small errors on
    # it are explained equally well with and without a transposition.
    v = torch.randn(3, 3, dtype=F64, generator=gen)
    sym = jacobian(lambda m: m + m.T, v)
    noise = 1.015 + 0.003 * torch.rand(sym.shape, dtype=F64, generator=gen)
    hints = diagnose([make_block(sym * noise, sym, v, output_shape=(3, 3))])
    assert "transposed" not in kinds(hints)


# ------------------------------------------------------------------ zero


def two_input_blocks(
    scale_x: float, scale_y: float, x: torch.Tensor, y: torch.Tensor
) -> list[Block]:
    """Blocks of f(x, y) = sin(x) * y.sum(), analytic scaled per input."""

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.sin(a) * b.sum()

    jx = jacrev(fn, argnums=0)(x, y).reshape(x.numel(), x.numel())
    jy = jacrev(fn, argnums=1)(x, y).reshape(x.numel(), y.numel())
    return [
        make_block(scale_x * jx, jx, x, input="inputs[0]"),
        make_block(scale_y * jy, jy, y, input="inputs[1]"),
    ]


def test_detached_input(x12: torch.Tensor) -> None:
    y = torch.linspace(0.5, 1.5, 5, dtype=F64)
    hints = diagnose(two_input_blocks(1.0, 0.0, x12, y))
    assert kinds(hints) == ["zero", "one_input"]
    zero = hints[0]
    assert zero.input == "inputs[1]" and zero.output == "output"
    assert "autograd gives no gradient for input 'inputs[1]'" in zero.text
    assert ".detach()" in zero.text and "NumPy" in zero.text
    assert hints[1].text.startswith("only the gradient with respect to 'inputs[1]' is wrong")
    assert "'inputs[0]'" in hints[1].text


def test_gradient_where_the_output_does_not_depend(x12: torch.Tensor) -> None:
    y = torch.linspace(0.5, 1.5, 5, dtype=F64)
    # The output ignores y, yet autograd (a custom backward) reports a gradient.
    jy = torch.zeros(12, 5, dtype=F64)
    fake = torch.ones(12, 5, dtype=F64)
    jx = jacobian(square, x12)
    blocks = [make_block(jx, jx, x12), make_block(fake, jy, y, input="inputs[1]")]
    hints = diagnose(blocks)
    assert kinds(hints) == ["zero", "one_input"]
    assert "does not depend" in hints[0].text
    assert hints[0].input == "inputs[1]"


def test_zero_only_where_the_backward_blocks(x12: torch.Tensor) -> None:
    # A relu-like backward that drops the gradient for negative inputs of x**2.
    true = jacobian(square, x12)
    wrong = torch.diag(torch.where(x12 < 0, 0.0, 2 * x12))
    hints = diagnose([make_block(wrong, true, x12)])
    assert kinds(hints) == ["zero", "region"]
    assert "zero gradient on all 6 mismatched elements" in hints[0].text
    assert "inputs[0] < 0" in hints[1].text


# ------------------------------------------------------------------ region


def test_wrong_only_for_negative_inputs(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    wrong = torch.diag(torch.where(x12 < 0, 2 * x12 + 1.0, 2 * x12))
    hints = diagnose([make_block(wrong, true, x12)])
    assert kinds(hints) == ["region"]
    assert "wrong only where inputs[0] < 0 (6 of 6 mismatched elements)" in hints[0].text
    assert "negative inputs" in hints[0].text


def test_wrong_only_for_positive_inputs_of_a_dense_jacobian(x12: torch.Tensor) -> None:
    def fn(t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(t) * t.sum()

    true = jacobian(fn, x12)
    wrong = true + torch.where(x12 > 0, 0.3, 0.0).expand_as(true)
    hints = diagnose([make_block(wrong, true, x12)])
    assert kinds(hints) == ["region"]
    assert "inputs[0] > 0 (72 of 72 mismatched elements)" in hints[0].text


def test_abs_with_a_wrong_backward_is_a_sign_error_for_negatives(x12: torch.Tensor) -> None:
    true = jacobian(torch.abs, x12)
    forgot_sign = torch.eye(12, dtype=F64)
    hints = diagnose([make_block(forgot_sign, true, x12)])
    assert kinds(hints) == ["sign", "region"]


def test_wrong_only_for_small_magnitudes() -> None:
    small = torch.tensor([0.01, -0.02, 0.03, -0.04, 0.05, -0.06], dtype=F64)
    x = torch.cat([small, torch.linspace(1.0, 4.0, 34, dtype=F64) * (-1.0) ** torch.arange(34)])
    true = jacobian(square, x)
    wrong = torch.diag(torch.where(x.abs() < 0.5, 2 * x + 1.0, 2 * x))
    hints = diagnose([make_block(wrong, true, x)])
    assert kinds(hints) == ["region"]
    assert "|inputs[0]| < 0.53 (6 of 6 mismatched elements)" in hints[0].text
    # The same six among only ten inputs could be chance.
    x = x[:10]
    wrong = torch.diag(torch.where(x.abs() < 0.5, 2 * x + 1.0, 2 * x))
    assert diagnose([make_block(wrong, jacobian(square, x), x)]) == ()


def test_no_region_when_chance_explains_it() -> None:
    # Two of three negative inputs wrong among five: 3 in 10 random pairs do that.
    x = torch.tensor([-1.0, -2.0, 3.0, 4.0, -5.0], dtype=F64)
    true = jacobian(square, x)
    wrong = true + torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0], dtype=F64))
    assert diagnose([make_block(wrong, true, x)]) == ()
    # The two smallest |x| of four wrong: 1 in 6 random pairs are the smallest.
    x = torch.tensor([0.1, -0.2, 2.0, -3.0], dtype=F64)
    true = jacobian(square, x)
    wrong = true + torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64))
    assert diagnose([make_block(wrong, true, x)]) == ()


def test_no_region_without_contrast_or_evidence() -> None:
    # Every input negative: nothing on the other side to compare with.
    x = -torch.linspace(0.5, 2.0, 6, dtype=F64)
    true = jacobian(square, x)
    assert "region" not in kinds(diagnose([make_block(true + 1.0 * torch.eye(6), true, x)]))
    # A single mismatched input says nothing about a region.
    x = torch.tensor([-1.0, 2.0, 3.0, -4.0], dtype=F64)
    true = jacobian(square, x)
    wrong = true.clone()
    wrong[0, 0] += 1.0
    assert "region" not in kinds(diagnose([make_block(wrong, true, x)]))


# ------------------------------------------------------------------ several leaves


def test_one_of_two_inputs_with_a_factor(x12: torch.Tensor) -> None:
    y = torch.linspace(0.5, 1.5, 5, dtype=F64)
    hints = diagnose(two_input_blocks(1.0, 0.5, x12, y))
    assert kinds(hints) == ["factor", "one_input"]
    assert hints[0].input == "inputs[1]"
    assert hints[1].input == "inputs[1]"


def test_same_factor_on_two_inputs_is_one_hint(x12: torch.Tensor) -> None:
    y = torch.linspace(0.5, 1.5, 5, dtype=F64)
    hints = diagnose(two_input_blocks(0.5, 0.5, x12, y))
    assert kinds(hints) == ["factor"]
    assert hints[0].input is None and hints[0].output == "output"
    assert "'inputs[0]', 'inputs[1]'" in hints[0].text


def test_one_of_two_outputs(x12: torch.Tensor) -> None:
    first = jacobian(square, x12)
    second = jacobian(lambda t: torch.sin(t).sum().reshape(1), x12)
    blocks = [
        make_block(first, first, x12, output="output[0]"),
        make_block(3 * second, second, x12, output="output[1]"),
    ]
    hints = diagnose(blocks)
    assert kinds(hints) == ["factor", "one_output"]
    assert hints[0].output == "output[1]"
    assert (
        hints[1].text == "only the gradient of 'output[1]' is wrong; the others ('output[0]') agree"
    )
    assert (hints[1].output, hints[1].input) == ("output[1]", "inputs[0]")


def test_detached_input_across_outputs_is_one_hint(x12: torch.Tensor) -> None:
    y = torch.linspace(0.5, 1.5, 12, dtype=F64)
    jy = torch.eye(12, dtype=F64)
    jx = jacobian(square, x12)
    blocks = [
        make_block(jx, jx, x12, output="output[0]"),
        make_block(torch.zeros_like(jy), jy, y, output="output[0]", input="inputs[1]"),
        make_block(torch.zeros_like(jy), 2 * jy, y, output="output[1]", input="inputs[1]"),
    ]
    hints = diagnose(blocks)
    assert kinds(hints) == ["zero", "one_input"]
    assert hints[0].output is None and hints[0].input == "inputs[1]"
    assert "outputs 'output[0]', 'output[1]' depend on it" in hints[0].text


# ------------------------------------------------------------------ robustness


def test_nan_elements_are_ignored(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    wrong = 0.5 * true
    wrong[3, 3] = math.nan
    hints = diagnose([make_block(wrong, true, x12)])
    assert kinds(hints) == ["factor"]
    assert hints[0].factor == pytest.approx(0.5)
    everything_nan = torch.full_like(true, math.nan)
    block = make_block(everything_nan, true, x12)
    block = dataclasses.replace(block, mismatch=torch.ones_like(block.mismatch))
    assert diagnose([block]) == ()


def test_empty_and_all_zero_blocks(x12: torch.Tensor) -> None:
    empty = torch.zeros(12, 0, dtype=F64)
    true = jacobian(square, x12)
    blocks = [
        make_block(0.5 * true, true, x12),
        make_block(empty, empty, torch.zeros(0, dtype=F64), input="inputs[1]"),
    ]
    # An empty leaf is no "other input that agrees".
    assert kinds(diagnose(blocks)) == ["factor"]
    zeros = torch.zeros(12, 12, dtype=F64)
    flagged = dataclasses.replace(
        make_block(zeros, zeros, x12), mismatch=torch.ones(12, 12, dtype=torch.bool)
    )
    assert diagnose([flagged]) == ()


def test_large_blocks_are_diagnosed_correctly() -> None:
    # the time this takes is measured in benchmarks/diagnose_speed.py, not here
    gen = torch.Generator().manual_seed(5)
    numeric = torch.randn(1000, 1000, dtype=F64, generator=gen)
    x = torch.randn(1000, dtype=F64, generator=gen)
    noise = numeric + torch.randn(1000, 1000, dtype=F64, generator=gen)
    assert kinds(diagnose([make_block(0.5 * numeric, numeric, x)])) == ["factor"]
    assert kinds(diagnose([make_block(noise, numeric, x)])) == []


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA device not available: torch.cuda.is_available() is False",
)
def test_cuda_blocks(x12: torch.Tensor) -> None:
    true = jacobian(square, x12).cuda()
    block = make_block(0.5 * true, true, x12.cuda())
    assert kinds(diagnose([block])) == ["factor"]
    wrong = torch.diag(torch.where(x12 < 0, 2 * x12 + 1.0, 2 * x12)).cuda()
    assert kinds(diagnose([make_block(wrong, true, x12)])) == ["region"]


# ------------------------------------------------------------------ validation, helpers


def test_block_validation(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    mask = torch.zeros(12, 12, dtype=torch.bool)
    with pytest.raises(InvalidArgument, match=r"analytic has shape \(12, 11\)"):
        Block("output", "inputs[0]", (12,), (12,), true[:, :11], true, mask, x12)
    with pytest.raises(InvalidArgument, match="mismatch must be a bool tensor"):
        Block("output", "inputs[0]", (12,), (12,), true, true, mask.to(F64), x12)
    with pytest.raises(InvalidArgument, match="input_values has 11 elements"):
        Block("output", "inputs[0]", (12,), (12,), true, true, mask, x12[:11])
    with pytest.raises(InvalidArgument, match="output_shape"):
        Block("output", "inputs[0]", [12], (12,), true, true, mask, x12)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="numeric"):
        Block("output", "inputs[0]", (12,), (12,), true, true.numpy(), mask, x12)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"blocks\[0\]"):
        diagnose([object()])  # type: ignore[list-item]


def test_diagnose_leaves_its_inputs_alone(x12: torch.Tensor) -> None:
    true = jacobian(square, x12)
    block = make_block(0.5 * true, true, x12)
    before = [
        t.clone() for t in (block.analytic, block.numeric, block.mismatch, block.input_values)
    ]
    diagnose([block])
    after = (block.analytic, block.numeric, block.mismatch, block.input_values)
    assert all(torch.equal(b, a) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize(
    ("k", "phrase"),
    [
        (0.5, "a missing factor of 2"),
        (0.3333333, "a missing factor of 3"),
        (2.0, "an extra factor of 2"),
        (32.0, "an extra factor of 32"),
        (1 / 1024, "a missing factor of 1024"),
        (1000.0, "an extra factor of 1000"),
        (-1.0, "a sign error"),
        (-2.0, "a sign error and an extra factor of 2"),
        (0.731, "a wrong scale factor of 0.731"),
        (37.0, "a wrong scale factor of 37"),
        (-0.0123456, "a wrong scale factor of -0.0123"),
        (math.nan, "a wrong scale factor of nan"),
    ],
)
def test_format_factor(k: float, phrase: str) -> None:
    assert format_factor(k) == phrase


# ------------------------------------------------------------------ properties

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    k=st.floats(-20.0, 20.0).filter(lambda k: abs(k) >= 1e-3 and abs(k - 1.0) >= 0.1),
    size=st.integers(2, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_scaled_jacobian_is_a_factor(k: float, size: int, seed: int) -> None:
    assume(abs(abs(k + 1.0) - 0.02) > 0.005)  # clear of the sign/factor boundary
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(size, dtype=F64, generator=gen)
    w = torch.randn(size, size, dtype=F64, generator=gen)
    true = jacobian(lambda t: torch.tanh(w @ t) + t**2, x)
    hints = diagnose([make_block(k * true, true, x)])
    if abs(k + 1.0) <= 0.02:
        assert kinds(hints) == ["sign"]
        assert hints[0].factor == -1.0
    else:
        assert kinds(hints) == ["factor"]
        assert hints[0].factor is not None
        assert hints[0].factor == pytest.approx(k, rel=1e-9)


@SETTINGS
@given(
    rows=st.integers(8, 16),
    side=st.integers(4, 5),
    square_input=st.booleans(),
    density=st.floats(0.3, 0.8),
    error_scale=st.sampled_from([1e-2, 0.1, 1.0, 10.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_errors_get_no_pattern_hint(
    rows: int,
    side: int,
    square_input: bool,
    density: float,
    error_scale: float,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    cols = side * side
    numeric = torch.randn(rows, cols, dtype=F64, generator=gen)
    where = torch.rand(rows, cols, generator=gen) < density
    errors = error_scale * torch.randn(rows, cols, dtype=F64, generator=gen)
    analytic = numeric + torch.where(where, errors, 0.0)
    x = torch.randn((side, side) if square_input else (cols,), dtype=F64, generator=gen)
    hints = diagnose([make_block(analytic, numeric, x)])
    assert PATTERN_KINDS.isdisjoint(kinds(hints)), hints
