"""check_gradients: verdicts on right and wrong gradients, full and fast, float64 and float32."""

from __future__ import annotations

import random

import pytest
import torch
from _functions import (
    LoneSecondOutputIgnored,
    OneEntryWrong,
    TransposedMatmul,
    cube_region,
    exp_zero,
    square_half,
    square_ok,
    square_sign,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk


def f64(*shape: int, seed: int = 0, low: float = -2.0, high: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g, dtype=torch.float64) * (high - low) + low
    return x.requires_grad_()


CORRECT = [
    ("sin", torch.sin, lambda: (f64(5),)),
    ("matmul", torch.matmul, lambda: (f64(3, 4), f64(4, 2, seed=1))),
    ("softmax", lambda x: torch.softmax(x, dim=-1), lambda: (f64(2, 5),)),
    ("norm", lambda x: x.norm(), lambda: (f64(7),)),
    ("custom_ok", square_ok, lambda: (f64(6),)),
    ("two_outputs", lambda x, y: (x * y, (x - y).sum()), lambda: (f64(3), f64(3, seed=2))),
    ("dict_output", lambda x: {"a": x.exp(), "b": x.cos().sum()}, lambda: (f64(4),)),
]


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize(("name", "fn", "make"), CORRECT, ids=[c[0] for c in CORRECT])
def test_correct_gradients_pass(name: str, fn: object, make: object, mode: str) -> None:
    result = gk.check_gradients(fn, make(), mode=mode)  # type: ignore[operator, arg-type]
    assert result.passed, result.summary()
    assert result.mode == mode
    assert result.status == "passed"


WRONG = [
    ("factor", square_half, "factor"),
    ("sign", square_sign, "sign"),
    ("region", cube_region, "region"),
    ("zero", exp_zero, "zero"),
]


@pytest.mark.parametrize(("name", "fn", "hint"), WRONG, ids=[w[0] for w in WRONG])
def test_wrong_gradients_fail_full_with_hint(name: str, fn: object, hint: str) -> None:
    x = f64(8, seed=3)
    result = gk.check_gradients(fn, x, mode="full")  # type: ignore[arg-type]
    assert not result.passed
    assert result.status == "mismatch"
    assert hint in [h.kind for h in result.hints], result.summary()
    pair = result.pairs[0]
    assert pair.mismatched > 0
    worst = pair.worst[0]
    assert worst.abs_error > worst.allowed
    # the worst element is on the diagonal of an elementwise function
    assert worst.output_index == worst.input_index


@pytest.mark.parametrize(("name", "fn", "hint"), WRONG, ids=[w[0] for w in WRONG])
@pytest.mark.parametrize("dtype", ["float64", "native"])
def test_wrong_gradients_fail_fast(name: str, fn: object, hint: str, dtype: str) -> None:
    x = f64(50, seed=4)
    if dtype == "native":
        x = x.detach().float().requires_grad_()
    result = gk.check_gradients(fn, x, mode="fast", dtype=dtype)  # type: ignore[arg-type]
    assert not result.passed, result.summary()
    assert result.pairs and not result.pairs[0].passed


def test_transposed_gradient_is_named() -> None:
    w, a = f64(3, 3), f64(3, seed=1)
    result = gk.check_gradients(TransposedMatmul.apply, (w, a), mode="full")
    assert not result.passed
    assert "transposed" in [h.kind for h in result.hints], result.summary()
    bad = [p for p in result.pairs if not p.passed]
    assert [p.input for p in bad] == ["inputs[0]"]


def test_fast_mode_finds_one_wrong_entry_in_1000_where_torch_does_not() -> None:
    caught = 0
    torch_caught = 0
    for trial in range(20):
        x = f64(1000, seed=100 + trial, low=-3, high=3)
        result = gk.check_gradients(OneEntryWrong.apply, x, mode="fast", seed=trial)
        if not result.passed:
            caught += 1
            assert result.pairs[0].worst[0].input_index == (417,)
            assert result.pairs[0].worst[0].output_index == (417,)
        ok = torch.autograd.gradcheck(
            OneEntryWrong.apply, (x,), fast_mode=True, raise_exception=False
        )
        torch_caught += not ok
    assert caught >= 19
    # the anchor's blind spot this mode exists to beat (0 of 20 measured on torch 2.13)
    assert torch_caught <= 2


def test_fast_mode_has_no_false_alarms_on_large_correct_functions() -> None:
    w = f64(300, 200, seed=5)
    x = f64(200, seed=6)
    for seed in range(5):
        result = gk.check_gradients(
            lambda w, x: torch.tanh(w @ x).sum(), (w, x), mode="fast", seed=seed
        )
        assert result.passed, result.summary()


def test_auto_picks_full_for_small_and_fast_for_large() -> None:
    assert gk.check_gradients(torch.sin, f64(10)).mode == "full"
    assert gk.check_gradients(torch.sin, f64(5000)).mode == "fast"


def test_full_mode_judges_a_jacobian_over_budget_in_blocks() -> None:
    x = f64(200)
    roomy = gk.check_gradients(torch.sin, x, mode="full")
    # 64 kB: the 200 x 200 float64 Jacobian (320 kB) is judged a few rows at a time
    tight = gk.check_gradients(torch.sin, x, mode="full", max_memory=64_000)
    assert roomy.passed and tight.passed and tight.mode == "full"
    assert any("blocks of" in note for note in tight.notes), tight.notes
    wrong = gk.check_gradients(OneEntryWrong.apply, f64(1000), mode="full", max_memory=400_000)
    assert not wrong.passed and wrong.pairs[0].mismatched == 1
    assert wrong.pairs[0].worst[0].input_index == (417,)


def test_max_jacobian_bytes_is_the_deprecated_name_of_max_memory() -> None:
    with pytest.warns(DeprecationWarning, match="max_memory"):
        result = gk.check_gradients(torch.sin, f64(20), mode="full", max_jacobian_bytes=64_000)
    assert result.passed
    with pytest.raises(gk.InvalidArgument, match="max_jacobian_bytes"):
        gk.check_gradients(torch.sin, f64(20), max_jacobian_bytes=10_000, max_memory=20_000)


def _data_dependent(x: torch.Tensor) -> torch.Tensor:
    if x.sum().item() > 0:  # .item() and Python control flow: vmap cannot batch this
        return (x**2).sum()
    return (x**3).sum()


def _in_place(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y.mul_(2).sin_()
    return y


@pytest.mark.parametrize("fn", [_data_dependent, _in_place, square_half])
def test_loop_fallback_gives_the_same_verdict(fn: object) -> None:
    x = f64(6, seed=7)
    result = gk.check_gradients(fn, x, mode="full")  # type: ignore[arg-type]
    expected = fn is not square_half
    assert result.passed is expected, result.summary()


def test_vectorised_and_loop_paths_agree_numerically() -> None:
    x = f64(6, seed=8)
    vec = gk.check_gradients(torch.sin, x, mode="full")
    loop = gk.check_gradients(_data_dependent, x, mode="full")
    assert vec.vectorized and not loop.vectorized
    assert vec.max_abs_error < 1e-8 and loop.max_abs_error < 1e-8


@pytest.mark.parametrize(
    "fn",
    [torch.sin, torch.exp, torch.tanh, torch.sigmoid, lambda x: x.softmax(-1), lambda x: x @ x.T],
    ids=["sin", "exp", "tanh", "sigmoid", "softmax", "gram"],
)
def test_float32_native_no_false_alarm(fn: object) -> None:
    x = f64(6, 5, seed=9).detach().float().requires_grad_()
    result = gk.check_gradients(fn, x, dtype="native", mode="full")  # type: ignore[arg-type]
    assert result.passed, result.summary()
    assert result.dtype == "float32"


def test_float32_native_catches_a_wrong_factor() -> None:
    x = f64(16, seed=10).detach().float().requires_grad_()
    result = gk.check_gradients(square_half, x, dtype="native")
    assert not result.passed
    assert "factor" in [h.kind for h in result.hints]


def test_dtype_float64_checks_copies_in_float64() -> None:
    x = f64(4).detach().float().requires_grad_()
    result = gk.check_gradients(torch.sin, x)
    assert result.dtype == "float64"
    assert x.dtype == torch.float32


def test_inputs_as_dict_and_passthrough_leaves() -> None:
    idx = torch.tensor([2, 0])
    scale = torch.tensor(3.0, dtype=torch.float64)  # no requires_grad: passed through

    def fn(x: torch.Tensor, index: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return x[index] * scale

    result = gk.check_gradients(fn, {"x": f64(3), "index": idx, "scale": scale})
    assert result.passed
    assert [p.input for p in result.pairs] == ["inputs['x']"]


def test_integer_outputs_are_skipped() -> None:
    result = gk.check_gradients(lambda x: torch.max(x, dim=0), f64(4, 3))
    assert result.passed
    assert any("skipped non-floating outputs" in n for n in result.notes)


def test_one_input_wrong_is_named() -> None:
    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return square_half(x) + y**2

    result = gk.check_gradients(fn, (f64(4), f64(4, seed=1)))
    assert [p.input for p in result.pairs if not p.passed] == ["inputs[0]"]


class TestNondeterminism:
    def test_dropout_is_reported_with_advice(self) -> None:
        x = f64(20)
        result = gk.check_gradients(lambda t: torch.nn.functional.dropout(t, 0.5), x)
        assert not result.passed
        assert result.status == "nondeterministic"
        assert "rng='replay'" in (result.hint or "")

    def test_dropout_checks_with_replay(self) -> None:
        x = f64(20)
        result = gk.check_gradients(lambda t: torch.nn.functional.dropout(t, 0.5), x, rng="replay")
        assert result.passed, result.summary()

    def test_python_random_depth_with_replay(self) -> None:
        w = f64(4, 4, seed=3, low=-0.5, high=0.5)

        def dynamic(x: torch.Tensor) -> torch.Tensor:
            for _ in range(random.randint(0, 3)):
                x = torch.tanh(w.detach() @ x)
            return x.sum()

        x = f64(4, seed=11)
        assert gk.check_gradients(dynamic, x).status == "nondeterministic"
        assert gk.check_gradients(dynamic, x, rng="replay").passed

    def test_stateful_function_is_nondeterministic_even_with_replay(self) -> None:
        calls = []

        def counter(x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return x * len(calls)

        result = gk.check_gradients(counter, f64(3), rng="replay")
        assert result.status == "nondeterministic"
        assert "even with the RNG state replayed" in (result.hint or "")


def test_result_records_what_was_used() -> None:
    result = gk.check_gradients(torch.sin, f64(3), eps=1e-5, atol=1e-6, rtol=1e-4, seed=3)
    assert (result.eps, result.atol, result.rtol, result.seed) == (1e-5, 1e-6, 1e-4, 3)
    assert result.duration_s > 0 and result.evaluations > 0
    pair = result.pairs[0]
    assert (pair.output_shape, pair.input_shape, pair.total) == ((3,), (3,), 9)


def test_complex_outputs_are_checked_as_real_and_imaginary_parts() -> None:
    result = gk.check_gradients(lambda t: torch.fft.rfft(t) * (1 + 2j), f64(8), mode="full")
    assert result.passed, result.summary()
    assert [p.output for p in result.pairs] == ["output.real", "output.imag"]
    wrong = gk.check_gradients(lambda t: torch.fft.rfft(square_half(t)), f64(8))
    assert not wrong.passed


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_backward_that_needs_every_output_gradient_is_caught(mode: str) -> None:
    # Each output is differentiated on its own, as a loss that uses one output would.
    result = gk.check_gradients(LoneSecondOutputIgnored.apply, f64(5), mode=mode)
    assert not result.passed
    if mode == "full":
        wrong = [p for p in result.pairs if not p.passed]
        assert [(p.output, p.input) for p in wrong] == [("output[1]", "input")]


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_input_unused_by_every_output_has_a_zero_gradient(mode: str) -> None:
    x, unused = f64(4), f64(3, seed=1)
    result = gk.check_gradients(lambda a, b: (a.sin(), a.sum() * 2), (x, unused), mode=mode)
    assert result.passed, result.summary()


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_an_empty_output_beside_others_is_fine(mode: str) -> None:
    result = gk.check_gradients(lambda a: (a[:0], a.exp()), f64(4), mode=mode)
    assert result.passed, result.summary()


# ----------------------------------------------------------------- backward linear in grad_output


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("n_probes", [None, 1])
def test_a_backward_that_ignores_grad_output_fails_even_for_a_scalar_loss(
    mode: str, n_probes: int | None
) -> None:
    from _functions import sum_squares_ignores_grad

    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(
        sum_squares_ignores_grad,
        x,
        mode=mode,  # type: ignore[arg-type]
        n_probes=n_probes if mode == "fast" else None,
    )
    assert not result.passed and result.status == "mismatch"
    hint = next(h for h in result.hints if h.kind == "grad_output")
    assert hint.input == "input"
    assert "not linear in grad_output" in hint.text and "ignores grad_output" in hint.text
    # the Jacobian from unit grad_outputs is right: only the probe can see this bug
    assert all(p.passed for p in result.pairs)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_backward_that_bends_grad_output_fails(mode: str) -> None:
    from _functions import sin_bends_grad

    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(sin_bends_grad, x, mode=mode)  # type: ignore[arg-type]
    assert not result.passed
    hint = result.hints[0]
    assert hint.kind == "grad_output" and "at index (" in hint.text
    with pytest.raises(gk.GradientMismatchError, match="not linear in grad_output"):
        gk.assert_gradients_close(sin_bends_grad, x, mode=mode)  # type: ignore[arg-type]


def test_gradients_zero_by_cancellation_are_not_mistaken_for_nonlinearity() -> None:
    # The bias before a batch norm has gradient 0, computed as a sum of terms that cancel.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh())
    for mode in ("full", "fast"):
        result = gk.check_module_gradients(net, torch.randn(8, 3), mode=mode)  # type: ignore[arg-type]
        assert result.passed, result.summary()
        assert not any(h.kind == "grad_output" for h in result.hints)


@given(seed=st.integers(0, 2**16))
@settings(max_examples=15, deadline=None)
def test_linear_backwards_never_trip_the_probe(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    for mode in ("full", "fast"):
        result = gk.check_gradients(
            lambda w, x: torch.tanh(w @ x) * 1e6,
            (w, x),
            mode=mode,
            seed=seed,  # type: ignore[arg-type]
        )
        assert result.passed, result.summary()
