"""Every public check refuses a bad number the same way: InvalidArgument naming it and its value.

The numeric options go through the shared helpers of ``_src/validation.py``, so NaN,
infinities, bools (``atol=True`` is a slip, not 1.0), negatives and other types are
refused before anything runs, with ``name=value`` in the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk
from gradcheck_kit._src.engine.options import CheckOptions, GradientOptions
from gradcheck_kit._src.validation import check_int, check_keywords, check_number


def _x() -> torch.Tensor:
    return torch.ones(2, dtype=torch.float64, requires_grad=True)


class _Double(torch.autograd.Function):
    forward = staticmethod(lambda ctx, x: 2 * x)
    backward = staticmethod(lambda ctx, grad: 2 * grad)


def _never(*args: Any) -> None:
    raise AssertionError("ran before its options were validated")


# Each public check, called so that only the option under test can be wrong; the function
# under test fails the test if it is ever called.
CALLS: dict[str, Callable[..., Any]] = {
    "check_gradients": lambda **kw: gk.check_gradients(_never, _x(), **kw),
    "assert_gradients_close": lambda **kw: gk.assert_gradients_close(_never, _x(), **kw),
    "check_module_gradients": lambda **kw: gk.check_module_gradients(
        torch.nn.Linear(2, 1), torch.ones(1, 2), loss_fn=_never, **kw
    ),
    "check_second_order": lambda **kw: gk.check_second_order(_never, _x(), **kw),
    "check_matches_manual": lambda **kw: gk.check_matches_manual(_never, _never, _x(), **kw),
    "check_autograd_function": lambda **kw: gk.check_autograd_function(_Double, _x(), **kw),
    "check_same_training": lambda **kw: gk.check_same_training(
        _never, _never, _x(), **{"steps": 1, **kw}
    ),
    "check_device_parity": lambda **kw: gk.check_device_parity(_never, _never, **kw),
    "gradcheck": lambda **kw: gk.gradcheck(_never, (_x(),), **kw),
    "gradgradcheck": lambda **kw: gk.gradgradcheck(_never, (_x(),), **kw),
}

# (check, option, what it must be)
REAL = "finite number >= 0"
POSITIVE = "finite number > 0"
SEED = "int >= 0"
COUNT = "int >= 1"
GRADIENT = [("eps", POSITIVE), ("atol", REAL), ("rtol", REAL), ("seed", SEED)]
CASES = [
    *((c, o, k) for c in ("check_gradients", "assert_gradients_close") for o, k in GRADIENT),
    *(
        (c, o, k)
        for c in ("check_gradients", "check_module_gradients", "check_second_order")
        for o, k in [("n_probes", COUNT), ("max_memory", COUNT), ("max_jacobian_bytes", COUNT)]
    ),
    *(("check_module_gradients", o, k) for o, k in GRADIENT),
    *(("check_second_order", o, k) for o, k in GRADIENT),
    *(("check_matches_manual", o, k) for o, k in [*GRADIENT, ("n_probes", COUNT)]),
    *(("check_autograd_function", o, k) for o, k in GRADIENT),
    *(
        ("check_same_training", o, k)
        for o, k in [("atol", REAL), ("rtol", REAL), ("seed", SEED), ("steps", COUNT)]
    ),
    *(("check_device_parity", o, k) for o, k in [("atol", REAL), ("rtol", REAL), ("seed", SEED)]),
    *(
        (c, o, k)
        for c in ("gradcheck", "gradgradcheck")
        for o, k in [("eps", POSITIVE), ("atol", REAL), ("rtol", REAL), ("nondet_tol", REAL)]
    ),
]

_OTHER_TYPES = st.one_of(
    st.booleans(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.just(torch.tensor(1.0)),
    st.just(1 + 2j),
)


def bad_values(kind: str) -> st.SearchStrategy[Any]:
    """Values no option of ``kind`` accepts (None is left out: it means "the default")."""
    if kind in (REAL, POSITIVE):
        negative = st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False)
        values = st.one_of(
            st.sampled_from([math.nan, math.inf, -math.inf]),
            negative,
            st.integers(max_value=-1),
            _OTHER_TYPES,
        )
        return st.one_of(values, st.sampled_from([0, 0.0])) if kind == POSITIVE else values
    lowest = 0 if kind == SEED else 1
    return st.one_of(
        st.integers(max_value=lowest - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        _OTHER_TYPES,
    )


@pytest.mark.parametrize(("check", "option", "kind"), CASES, ids=[f"{c}-{o}" for c, o, _ in CASES])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_a_bad_number_is_refused_naming_argument_and_value(
    check: str, option: str, kind: str, data: st.DataObject
) -> None:
    value = data.draw(bad_values(kind), label=option)
    with pytest.raises(gk.InvalidArgument) as info:
        CALLS[check](**{option: value})
    assert f"{option}={value!r}" in str(info.value)


@settings(max_examples=50, deadline=None)
@given(value=st.floats(min_value=0.0, allow_infinity=False))
def test_a_finite_nonnegative_tolerance_is_accepted(value: float) -> None:
    opts = CheckOptions.create(atol=value, rtol=value, eps=value or None)
    assert (opts.atol, opts.rtol) == (value, value)


@settings(max_examples=50, deadline=None)
@given(value=st.one_of(st.booleans(), st.floats(), st.integers(), st.text(max_size=3)))
def test_the_helpers_accept_exactly_the_finite_reals_above_the_bound(value: Any) -> None:
    real = not isinstance(value, bool) and isinstance(value, (int, float))
    fine = real and math.isfinite(value) and value > 0
    try:
        check_number(value, "x", exclusive=True)
    except gk.InvalidArgument as error:
        assert not fine and f"x={value!r}" in str(error)
    else:
        assert fine
    whole = isinstance(value, int) and not isinstance(value, bool)
    try:
        check_int(value, "n", min_value=1)
    except gk.InvalidArgument as error:
        assert not (whole and value >= 1) and f"n={value!r}" in str(error)
    else:
        assert whole and value >= 1


def test_a_misspelled_option_is_refused_with_a_guess_in_untyped_code() -> None:
    options: dict[str, Any] = {"atoll": 1e-3}
    with pytest.raises(
        TypeError, match=r"unexpected keyword argument 'atoll'; did you mean 'atol'"
    ):
        gk.check_gradients(torch.sin, _x(), **options)
    with pytest.raises(gk.errors.InvalidArgumentType, match="check_matches_manual"):
        gk.check_matches_manual(torch.sin, inputs=_x(), manual_vjp=_never, max_memory=1)
    with pytest.raises(gk.InvalidArgument, match="unexpected keyword argument 'mdoe'"):
        check_keywords({"mdoe": 1}, GradientOptions, "f")
