"""Misuse of the hand-written-derivative API: clear errors, and nothing of the caller's changes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fingerprint import fingerprint

import gradcheck_kit as gk


@pytest.fixture
def w() -> torch.Tensor:
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    w.grad = torch.full_like(w, 7.0)  # the caller's own gradient must survive
    return w


@pytest.fixture
def b() -> torch.Tensor:
    return torch.randn(2, dtype=torch.float64, requires_grad=True)


@pytest.fixture
def untouched(w: torch.Tensor, b: torch.Tensor) -> Iterator[None]:
    """Every test here must leave w, b, their .grad, the modes and every RNG as they were."""
    random.random()
    np.random.rand()
    before = fingerprint(w, b)
    yield
    after = fingerprint(w, b)
    assert after == before, before.diff(after)


def loss(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(w).sum(dim=0) * b).sum()


def right(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (1 - torch.tanh(w) ** 2) * b, torch.tanh(w).sum(dim=0)


BAD_RETURNS: dict[str, tuple[Any, str]] = {
    "one_for_two": (
        lambda w, b: right(w, b)[0],
        r"manual_grad returned 1 value\(s\), but 2 input\(s\) require grad: "
        r"inputs\[0\] \(float64 tensor of shape \(3, 2\)\), inputs\[1\] \(float64 tensor of shape "
        r"\(2,\)\)",
    ),
    "three_for_two": (
        lambda w, b: (*right(w, b), b),
        r"returned 3 value\(s\), but 2 input\(s\)",
    ),
    "wrong_shape": (
        lambda w, b: (right(w, b)[0].T, right(w, b)[1]),
        r"manual_grad returned a gradient of shape \(2, 3\) for inputs\[0\], which has shape "
        r"\(3, 2\)",
    ),
    "broadcast_not_summed": (
        lambda w, b: (right(w, b)[0], torch.tanh(w)),
        r"shape \(3, 2\) for inputs\[1\], which has shape \(2,\)",
    ),
    "a_float": (
        lambda w, b: (right(w, b)[0], 1.5),
        r"manual_grad returned float \(1.5\) for inputs\[1\], not a tensor",
    ),
    "none_for_a_checked_input": (
        lambda w, b: (right(w, b)[0], None),
        r"returned None for inputs\[1\] \(float64 tensor of shape \(2,\)\), which requires grad",
    ),
    "integer_tensor": (
        lambda w, b: (right(w, b)[0], torch.ones(2, dtype=torch.int64)),
        r"int64 tensor of shape \(2,\) for inputs\[1\]; a gradient is a floating-point tensor",
    ),
    "a_string": (lambda w, b: "grad", r"manual_grad returned str \('grad'\)"),
}


@pytest.mark.parametrize(("bad", "message"), BAD_RETURNS.values(), ids=list(BAD_RETURNS))
def test_bad_return_values_name_the_input_and_shapes(
    bad: Any, message: str, w: torch.Tensor, b: torch.Tensor, untouched: None
) -> None:
    with pytest.raises(gk.InvalidArgument, match=message):
        gk.check_matches_manual(loss, bad, (w, b))


def test_a_bad_manual_vjp_is_named_as_such(w: torch.Tensor, untouched: None) -> None:
    with pytest.raises(gk.InvalidArgument, match=r"manual_vjp returned a gradient of shape \(6,\)"):
        gk.check_matches_manual(torch.tanh, inputs=w, manual_vjp=lambda v, w: v.reshape(-1))


MISUSE: dict[str, tuple[dict[str, Any], str]] = {
    "neither": ({}, "pass exactly one of manual_grad .* got neither"),
    "both": (
        {"manual_grad": right, "manual_vjp": right},
        "pass exactly one of manual_grad .* got both",
    ),
    "not_callable": ({"manual_grad": 3.0}, "manual_grad=3.0 is not callable"),
    "bad_mode": ({"manual_grad": right, "mode": "quick"}, "mode='quick' is not one of"),
    "negative_atol": ({"manual_grad": right, "atol": -1.0}, "atol=-1.0 must be"),
}


@pytest.mark.parametrize(("kwargs", "message"), MISUSE.values(), ids=list(MISUSE))
def test_misuse_is_refused_before_anything_runs(
    kwargs: dict[str, Any], message: str, w: torch.Tensor, b: torch.Tensor, untouched: None
) -> None:
    with pytest.raises(gk.InvalidArgument, match=message):
        gk.check_matches_manual(loss, inputs=(w, b), **kwargs)


def test_swapped_arguments_get_a_guess(w: torch.Tensor, b: torch.Tensor) -> None:
    with pytest.raises(gk.InvalidArgument, match="Maybe the arguments are swapped"):
        gk.check_matches_manual(loss, (w, b), right)  # type: ignore[arg-type]


def test_missing_inputs_and_nothing_requiring_grad() -> None:
    with pytest.raises(gk.InvalidArgument, match="inputs is missing"):
        gk.check_matches_manual(loss, right)
    with pytest.raises(gk.InvalidArgument, match="nothing to check"):
        gk.check_matches_manual(loss, right, (torch.ones(3, 2), torch.ones(2)))


def test_a_derivative_that_raises_propagates_with_a_note(
    w: torch.Tensor, b: torch.Tensor, untouched: None
) -> None:
    def broken(w: torch.Tensor, b: torch.Tensor) -> Any:
        raise ZeroDivisionError("oops")

    with pytest.raises(ZeroDivisionError) as info:
        gk.check_matches_manual(loss, broken, (w, b))
    assert any("raised by manual_grad" in n for n in getattr(info.value, "__notes__", []))


def test_a_derivative_that_mutates_its_inputs_touches_only_copies(
    w: torch.Tensor, b: torch.Tensor, untouched: None
) -> None:
    def mutating(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gw, gb = right(w, b)
        w.zero_()
        b.mul_(100)
        return gw, gb

    assert gk.check_matches_manual(loss, mutating, (w, b)).passed


@pytest.mark.parametrize("dtype", ["float64", "native"])
def test_passing_and_failing_checks_leave_no_trace(
    dtype: str, w: torch.Tensor, b: torch.Tensor, untouched: None
) -> None:
    torch.set_grad_enabled(True)
    assert gk.check_matches_manual(loss, right, (w, b), dtype=dtype).passed
    wrong = gk.check_matches_manual(loss, lambda w, b: (right(w, b)[0], -b), (w, b), dtype=dtype)
    assert not wrong.passed


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    policy=st.sampled_from(["float64", "native"]),
    with_grad=st.booleans(),
    grad_enabled=st.booleans(),
    wrong=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_no_trace_at_random_inputs_flags_and_modes(
    shape: list[int],
    dtype: torch.dtype,
    policy: str,
    with_grad: bool,
    grad_enabled: bool,
    wrong: bool,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype).requires_grad_()
    c = torch.randn(shape, generator=gen, dtype=dtype)  # a constant fn closes over
    if with_grad:
        x.grad = torch.randn(shape, generator=gen, dtype=dtype)
    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(grad_enabled)
    try:
        before = fingerprint(x, c)
        result = gk.check_matches_manual(
            lambda x: (torch.sin(x) * c).sum(),
            lambda x: torch.cos(x) * (-c if wrong else c),
            x,
            dtype=policy,  # type: ignore[arg-type]
        )
        assert fingerprint(x, c) == before, before.diff(fingerprint(x, c))
    finally:
        torch.set_grad_enabled(previous)
    # a sign error is caught unless c vanishes where it matters (never, for normal draws)
    assert result.passed != wrong, result.summary()
