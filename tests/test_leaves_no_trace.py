"""Every check leaves inputs, parameters, .grad, flags, modes and RNG states bit-identical."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fingerprint import fingerprint
from torch import nn

import gradcheck_kit as gk

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def modules(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(draw(st.integers(0, 2**16)))
    width = draw(st.integers(1, 5))
    layers: list[nn.Module] = []
    n_in = width
    for _ in range(draw(st.integers(1, 3))):
        n_out = draw(st.integers(1, 5))
        layers.append(nn.Linear(n_in, n_out))
        layers.append(draw(st.sampled_from([nn.Tanh(), nn.Sigmoid(), nn.Softplus()])))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm1d(n_out))
        n_in = n_out
    net = nn.Sequential(*layers)
    net.train(draw(st.booleans()))
    if len(layers) > 2 and draw(st.booleans()):
        net[0].requires_grad_(False)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    net = net.to(dtype)
    x = torch.randn(draw(st.integers(2, 4)), width, dtype=dtype)
    if draw(st.booleans()):
        x.requires_grad_()
        if draw(st.booleans()):
            x.grad = torch.randn_like(x)
    if draw(st.booleans()):
        net(x).sum().backward()  # the user already has gradients
    return net, x


@SETTINGS
@given(
    case=modules(),
    mode=st.sampled_from(["full", "fast"]),
    dtype=st.sampled_from(["float64", "native"]),
    grad_enabled=st.booleans(),
)
def test_module_checks_leave_no_trace(
    case: tuple[nn.Module, torch.Tensor], mode: str, dtype: str, grad_enabled: bool
) -> None:
    net, x = case
    random.random()
    np.random.rand()
    wrt = "both" if x.requires_grad else "parameters"
    with torch.set_grad_enabled(grad_enabled):
        before = fingerprint(net, x)
        gk.check_module_gradients(net, x, wrt=wrt, mode=mode, dtype=dtype)  # type: ignore[arg-type]
        after = fingerprint(net, x)
    assert after == before, before.diff(after)


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    shape = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    t = torch.randn(tuple(shape), generator=g, dtype=dtype)
    t.requires_grad_(True)
    if draw(st.booleans()):
        t.grad = torch.randn(tuple(shape), generator=g, dtype=dtype)
    return t


def _mutating(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(123)  # a function that reseeds, draws, and changes global modes
    random.seed(5)
    torch.set_grad_enabled(True)
    return (x.sin() * y.exp().sum()).sum() + torch.rand(()).detach() * 0


def _raising(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    torch.rand(3)
    torch.set_default_dtype(torch.float64)
    raise RuntimeError("user bug")


@SETTINGS
@given(
    x=tensors(),
    y=tensors(),
    fn=st.sampled_from([_mutating, _raising]),
    rng=st.sampled_from(["fixed", "replay"]),
)
def test_function_checks_leave_no_trace_even_when_fn_raises(
    x: torch.Tensor, y: torch.Tensor, fn: object, rng: str
) -> None:
    before = fingerprint(x, y)
    try:
        gk.check_gradients(fn, (x, y), rng=rng)  # type: ignore[arg-type]
    except RuntimeError as exc:
        assert "user bug" in str(exc)
    assert torch.get_default_dtype() == torch.float32
    after = fingerprint(x, y)
    assert after == before, before.diff(after)


def test_failing_check_leaves_no_trace() -> None:
    from _functions import square_half

    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    before = fingerprint(x)
    with pytest.raises(gk.GradientMismatchError):
        gk.assert_gradients_close(square_half, x)
    assert fingerprint(x) == before


def test_closure_captured_module_is_restored() -> None:
    net = nn.Linear(3, 1)

    def fn(x: torch.Tensor) -> torch.Tensor:
        net.weight.data.mul_(2)  # a function that edits what it captured
        return net(x).sum()

    x = torch.randn(2, 3, requires_grad=True)
    before = fingerprint(net)
    gk.check_gradients(fn, x, dtype="native")
    assert fingerprint(net) == before
