"""Tests for gradcheck_kit._src.state (snapshot/restore, RNG capture and replay), fingerprints."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fingerprint import Fingerprint, fingerprint
from torch import nn

from gradcheck_kit._src.errors import InvalidArgument
from gradcheck_kit._src.state.rng import (
    RngReplayer,
    RngState,
    capture_rng_state,
    replaying_rng,
    restore_rng_state,
    rng_fingerprint,
    seed_everything,
)
from gradcheck_kit._src.state.snapshot import Snapshot, StateRestoreWarning, preserved, snapshot

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


class Boom(Exception):
    """Raised by test bodies to check that restoring also happens on the error path."""


@pytest.fixture(autouse=True)
def _guard_global_modes() -> Iterator[None]:
    # Plain torch calls, not the code under test: a failing test must not leak modes.
    grad = torch.is_grad_enabled()
    anomaly = (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled())
    dtype = torch.get_default_dtype()
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_grad_enabled(grad)
    torch.set_anomaly_enabled(*anomaly)
    torch.set_default_dtype(dtype)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_default_device(None)


def int_bits(t: torch.Tensor) -> torch.Tensor:
    """An integer copy of `t`'s bits, for bit-exact comparisons."""
    t = t.detach().resolve_conj()
    if t.is_complex():
        t = torch.view_as_real(t)
    sizes = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.contiguous().view(sizes[t.element_size()]).clone()


# ----------------------------------------------------------------- strategies

DTYPES = [torch.float32, torch.float64, torch.int64, torch.bool, torch.complex64]


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    """Random leaf tensors: dtype, shape (0-dim included), layout, special bits, grad."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=3))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    if dtype == torch.bool:
        base = torch.randint(0, 2, shape, generator=gen).bool()
    elif dtype == torch.int64:
        base = torch.randint(-100, 100, shape, generator=gen)
    else:
        base = torch.randn(shape, generator=gen, dtype=dtype)
    if dtype == torch.float32 and base.numel() >= 2 and draw(st.booleans()):
        flat = base.view(-1).view(torch.int32)
        flat[0] = 0x7FC00123  # a NaN with a payload
        flat[1] = -(2**31)  # -0.0
    if base.dim() >= 2 and draw(st.booleans()):
        base = base.transpose(0, 1)  # non-contiguous leaf
    if (base.is_floating_point() or base.is_complex()) and draw(st.booleans()):
        base.requires_grad_(True)
        if draw(st.booleans()):
            base.grad = torch.ones_like(base)
    return base


def _edit_data(t: torch.Tensor) -> None:
    with torch.no_grad():
        if t.dtype == torch.bool:
            t.logical_not_()
        else:
            t.add_(1)


def _set_grad(t: torch.Tensor) -> None:
    if t.is_floating_point() or t.is_complex():
        t.grad = torch.full_like(t, 3)


def _accumulate_grad(t: torch.Tensor) -> None:
    if t.grad is not None:
        t.grad.add_(5)


def _clear_grad(t: torch.Tensor) -> None:
    if t.is_floating_point() or t.is_complex():
        t.grad = None


def _toggle_requires_grad(t: torch.Tensor) -> None:
    if t.is_floating_point() or t.is_complex():
        t.requires_grad_(not t.requires_grad)


def _backward(t: torch.Tensor) -> None:
    if t.requires_grad:
        t.abs().sum().backward()


def _swap_storage(t: torch.Tensor) -> None:
    t.data = torch.zeros(5, dtype=t.dtype)


def _global_chaos(t: torch.Tensor) -> None:
    torch.rand(3)
    random.random()
    np.random.rand(2)
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    torch.set_anomaly_enabled(True)
    torch.use_deterministic_algorithms(True)


TENSOR_MUTATIONS: list[Callable[[torch.Tensor], None]] = [
    _edit_data,
    _set_grad,
    _accumulate_grad,
    _clear_grad,
    _toggle_requires_grad,
    _backward,
    _swap_storage,
    _global_chaos,
]


@dataclass
class ModelCase:
    model: nn.Sequential
    width: int
    kinds: list[str] = field(default_factory=list)


@st.composite
def models(draw: st.DrawFn) -> ModelCase:
    """Small random Sequentials of Linear/ReLU/BatchNorm1d/Dropout, random modes and grads."""
    width = draw(st.integers(1, 4))
    kinds = draw(
        st.lists(st.sampled_from(["linear", "relu", "bn", "dropout"]), min_size=1, max_size=4)
    )
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw(st.integers(0, 2**31)))
        for kind in kinds:
            if kind == "linear":
                layers.append(nn.Linear(width, width))
            elif kind == "relu":
                layers.append(nn.ReLU())
            elif kind == "bn":
                layers.append(nn.BatchNorm1d(width))
            else:
                layers.append(nn.Dropout(draw(st.sampled_from([0.0, 0.5]))))
        model = nn.Sequential(*layers)
        for module in model.modules():
            module.training = draw(st.booleans())
        for param in model.parameters():
            if draw(st.booleans()):
                param.grad = torch.randn_like(param)
    return ModelCase(model, width, kinds)


def _m_eval(case: ModelCase) -> None:
    case.model.eval()


def _m_train(case: ModelCase) -> None:
    case.model.train()


def _m_forward_backward(case: ModelCase) -> None:
    case.model.train()
    loss = case.model(torch.randn(3, case.width)).pow(2).sum()
    if loss.requires_grad:
        loss.backward()


def _m_replace_param(case: ModelCase) -> None:
    for module in case.model:
        if isinstance(module, nn.Linear):
            module.weight = nn.Parameter(torch.zeros_like(module.weight))
            return


def _m_edit_params(case: ModelCase) -> None:
    with torch.no_grad():
        for param in case.model.parameters():
            param.mul_(-2)


def _m_zero_grad(case: ModelCase) -> None:
    case.model.zero_grad(set_to_none=True)


def _m_freeze(case: ModelCase) -> None:
    case.model.requires_grad_(False)


def _m_replace_child(case: ModelCase) -> None:
    case.model[0] = nn.Identity()


def _m_hook(case: ModelCase) -> None:
    case.model.register_forward_hook(lambda *args: None)


def _m_optimizer_step(case: ModelCase) -> None:
    params = list(case.model.parameters())
    if params:
        for p in params:
            p.grad = torch.ones_like(p)
        torch.optim.SGD(params, lr=0.1, momentum=0.9).step()


def _m_globals(case: ModelCase) -> None:
    _global_chaos(torch.zeros(1))


MODEL_MUTATIONS: list[Callable[[ModelCase], None]] = [
    _m_eval,
    _m_train,
    _m_forward_backward,
    _m_replace_param,
    _m_edit_params,
    _m_zero_grad,
    _m_freeze,
    _m_replace_child,
    _m_hook,
    _m_optimizer_step,
    _m_globals,
]


# ----------------------------------------------------------------- property tests


@SETTINGS
@given(
    xs=st.lists(tensors(), min_size=1, max_size=3),
    mutations=st.lists(st.sampled_from(TENSOR_MUTATIONS), max_size=5),
    fail=st.booleans(),
)
def test_tensors_come_back_bit_exact(
    xs: list[torch.Tensor], mutations: list[Callable[[torch.Tensor], None]], fail: bool
) -> None:
    before = fingerprint(xs)
    bits = [int_bits(x) for x in xs]
    grads = [x.grad for x in xs]
    grad_bits = [None if g is None else int_bits(g) for g in grads]
    flags = [x.requires_grad for x in xs]
    err = Boom("from the body")
    try:
        with preserved(xs):
            for x in xs:
                for mutate in mutations:
                    mutate(x)
            if fail:
                raise err
    except Boom as caught:
        assert caught is err
    else:
        assert not fail
    assert fingerprint(xs) == before, before.diff(fingerprint(xs))
    for x, b, g, gb, flag in zip(xs, bits, grads, grad_bits, flags, strict=True):
        assert torch.equal(int_bits(x), b)
        assert x.grad is g
        if gb is not None:
            assert x.grad is not None and torch.equal(int_bits(x.grad), gb)
        assert x.requires_grad == flag and x.is_leaf


@SETTINGS
@given(
    case=models(),
    mutations=st.lists(st.sampled_from(MODEL_MUTATIONS), min_size=1, max_size=4),
    fail=st.booleans(),
)
def test_models_come_back_with_the_same_objects(
    case: ModelCase, mutations: list[Callable[[ModelCase], None]], fail: bool
) -> None:
    model = case.model
    before = fingerprint(model)
    children = list(model)
    params = list(model.parameters())
    grads = [p.grad for p in params]
    buffers = list(model.buffers())
    training = [m.training for m in model.modules()]
    try:
        with preserved(model):
            for mutate in mutations:
                mutate(case)
            if fail:
                raise Boom
    except Boom:
        assert fail
    after = fingerprint(model)
    assert after == before, before.diff(after)
    assert list(model) == children and all(a is b for a, b in zip(model, children, strict=True))
    now = list(model.parameters())
    assert len(now) == len(params) and all(a is b for a, b in zip(now, params, strict=True))
    assert all(p.grad is g for p, g in zip(params, grads, strict=True))
    assert all(a is b for a, b in zip(model.buffers(), buffers, strict=True))
    assert [m.training for m in model.modules()] == training


# ----------------------------------------------------------------- bits and versions


def test_nan_payloads_and_negative_zero_survive() -> None:
    words = torch.tensor([0x7FC00001, -0x3E000000, -(2**31), 0x7F800001], dtype=torch.int32)
    x = words.clone().view(torch.float32)
    with preserved(x):
        x.mul_(0)
    assert torch.equal(x.view(torch.int32), words)


def test_a_change_only_bits_can_see_is_restored_and_reported() -> None:
    x = torch.tensor([-0.0, 1.0])
    before = fingerprint(x)
    with preserved(x):
        x[0] = 0.0  # equal in value, not in bits
        assert before.diff(fingerprint(x)) == ["tensor #0 (shape (2,)) bits changed"]
    assert x.view(torch.int32)[0].item() == -(2**31)
    assert fingerprint(x) == before


def test_unmodified_tensors_keep_their_version_counter() -> None:
    untouched = torch.randn(3, requires_grad=True)
    touched = torch.randn(3, requires_grad=True)
    nan = torch.tensor([float("nan"), -0.0])
    versions = (untouched._version, touched._version, nan._version)
    with preserved(untouched, touched, nan), torch.no_grad():
        touched.add_(1)
    assert untouched._version == versions[0]
    assert nan._version == versions[2]
    # A modified tensor is written back in place, which bumps the counter (documented).
    assert touched._version > versions[1]


def test_restoring_is_invisible_to_autograd() -> None:
    w = torch.randn(3, requires_grad=True)
    with preserved(w), torch.no_grad():
        w.mul_(3)
    assert w.is_leaf and w.grad_fn is None
    w.sum().backward()
    assert torch.equal(w.grad, torch.ones(3))  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_and_conjugate_views_restore_exactly(dtype: torch.dtype) -> None:
    z = torch.randn(4, dtype=dtype)
    view = z.conj()
    before_z, before_view = int_bits(z), int_bits(view)
    fp = fingerprint(z, view)
    with preserved(z, view):
        view.mul_(2j)
    assert torch.equal(int_bits(z), before_z) and torch.equal(int_bits(view), before_view)
    assert fingerprint(z, view) == fp


def test_zero_dim_and_non_contiguous_tensors() -> None:
    scalar = torch.tensor(2.5)
    grid = torch.arange(12.0).reshape(3, 4)[:, ::2]
    fp = fingerprint(scalar, grid)
    with preserved(scalar, grid):
        scalar.fill_(-1)
        grid.zero_()
    assert scalar.item() == 2.5 and grid.tolist() == [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]
    assert fingerprint(scalar, grid) == fp


def test_expanded_tensor_is_written_through_its_single_element() -> None:
    base = torch.tensor([7.0])
    expanded = base.expand(3)
    with preserved(expanded):
        base.fill_(1)
    assert expanded.tolist() == [7.0, 7.0, 7.0]


def test_swapped_storage_is_swapped_back_keeping_aliases() -> None:
    p = nn.Parameter(torch.arange(4.0))
    alias = p.data[:2]  # a view the user holds
    ptr = p.data_ptr()
    with preserved(p):
        p.data = torch.zeros(7)
    assert p.shape == (4,) and p.data_ptr() == ptr
    with torch.no_grad():
        p[0] = 42.0
    assert alias[0].item() == 42.0


def test_leaf_pulled_into_a_graph_becomes_a_leaf_again() -> None:
    x = torch.ones(3)
    w = torch.full((3,), 2.0, requires_grad=True)
    with preserved(x):
        x.mul_(w)
        assert not x.is_leaf
    assert x.is_leaf and not x.requires_grad and x.tolist() == [1.0, 1.0, 1.0]


def test_what_cannot_be_restored_is_a_warning_not_an_exception() -> None:
    base = torch.zeros(4)
    view = base[:2]
    w = torch.ones(2, requires_grad=True)
    with pytest.warns(StateRestoreWarning, match=r"tensor #0"), preserved(view):
        view.add_(w)  # a view can't be detached in place
    assert base.tolist() == [0.0, 0.0, 0.0, 0.0]  # its bits still came back


def test_non_leaf_bits_and_retained_grad() -> None:
    w = torch.randn(3, requires_grad=True)
    y = w * 2
    y.retain_grad()
    y.sum().backward()
    grad = y.grad
    assert grad is not None
    fp = fingerprint(y)
    with preserved(y):
        with torch.no_grad():
            y.zero_()
        y.grad = None
    assert y.grad is grad
    assert fingerprint(y) == fp


def test_inference_tensors() -> None:
    with torch.inference_mode():
        t = torch.ones(3)
    with preserved(t), torch.inference_mode():
        t.zero_()
    assert t.tolist() == [1.0, 1.0, 1.0]


def test_sparse_meta_and_quantized_are_tracked_by_identity_only() -> None:
    sparse = torch.eye(3).to_sparse()
    meta = torch.empty(2, device="meta")
    emb = nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    sparse_grad = emb.weight.grad
    fp = fingerprint(sparse, meta, emb)
    assert fp.tensors[0].data.digest is None and fp.tensors[1].data.digest is None
    with preserved(sparse, meta, emb):
        emb.weight.grad = None
    assert emb.weight.grad is sparse_grad
    assert fingerprint(sparse, meta, emb) == fp


def test_shared_and_repeated_tensors_are_recorded_once() -> None:
    lin = nn.Linear(2, 2)
    tied = nn.Sequential(lin, nn.ReLU(), lin)
    w = lin.weight
    snap = snapshot(tied, w, [w, {"again": w}])
    assert "2 tensors" in repr(snap)
    before = w.detach().clone()
    with torch.no_grad():
        w.add_(1)
    snap.restore()
    with torch.no_grad():
        w.mul_(3)
    snap.restore()  # restoring twice works from the same record
    assert torch.equal(w, before)


def test_snapshot_is_a_context_manager() -> None:
    x = torch.zeros(2)
    with snapshot(x) as snap:
        assert isinstance(snap, Snapshot)
        x.fill_(5)
    assert x.tolist() == [0.0, 0.0]


# ----------------------------------------------------------------- modules and optimizers


def test_module_structure_hooks_and_shadowing_attributes() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    weight, bn = model[0].weight, model[1]
    fp = fingerprint(model)
    with preserved(model):
        del model[0].weight
        model[0].weight = torch.zeros(2, 2)  # plain attribute now
        model[0].register_parameter("extra", nn.Parameter(torch.zeros(1)))
        bn.running_mean = torch.full((2,), 9.0)
        model[1] = nn.Identity()
        model.register_forward_pre_hook(lambda *args: None)
        model.register_full_backward_hook(lambda *args: None)
        model.new_child = nn.ReLU()
    assert model[0].weight is weight and not hasattr(model[0], "extra")
    assert model[1] is bn and bn.running_mean.tolist() == [0.0, 0.0]
    assert not model._forward_pre_hooks and len(model) == 2
    assert not model._backward_hooks and model._is_full_backward_hook is None
    assert fingerprint(model) == fp


def test_optimizer_state_and_hyper_parameters_come_back() -> None:
    model = nn.Linear(3, 1)
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    adam.step()  # Adam has state before the check
    step_before = adam.state[model.weight]["step"].clone()
    weight_before = model.weight.detach().clone()
    fp = fingerprint(model, adam, sgd)
    with preserved(model, adam, sgd):
        for _ in range(2):
            adam.step()
            sgd.step()
        adam.param_groups[0]["lr"] = 1.0
        sgd.add_param_group({"params": [nn.Parameter(torch.zeros(1))]})
        adam.state[model.weight]["step"] = torch.tensor(99.0)
    assert not sgd.state and len(sgd.param_groups) == 1
    assert adam.param_groups[0]["lr"] == 0.01
    assert torch.equal(adam.state[model.weight]["step"], step_before)
    assert torch.equal(model.weight, weight_before)
    assert fingerprint(model, adam, sgd) == fp


# ----------------------------------------------------------------- global modes


def test_global_modes_come_back_also_on_error() -> None:
    before = fingerprint()
    err = Boom("x")
    with pytest.raises(Boom) as info, preserved():
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        torch.set_anomaly_enabled(True, False)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.set_default_device("meta")
        raise err
    assert info.value is err
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32
    assert not torch.is_anomaly_enabled() and torch.is_anomaly_check_nan_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    # torch.get_default_device is missing on older torch; a new tensor shows it anywhere
    assert torch.empty(()).device == torch.device("cpu")
    assert fingerprint() == before


# ----------------------------------------------------------------- diff


def test_diff_names_each_kind_of_change() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    x = torch.zeros(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = fingerprint(x, model, opt)
    with preserved(x, model, opt):
        x[0] = 1.0
        model[0].bias.requires_grad_(False)
        model[0].weight.grad = torch.ones(2, 2)
        model[1].eval()
        model[1].weight = nn.Parameter(torch.ones(2))
        bn = cast(nn.BatchNorm1d, model[1])
        assert bn.num_batches_tracked is not None
        bn.num_batches_tracked.add_(1)
        model.register_forward_hook(lambda *args: None)
        opt.param_groups[0]["lr"] = 0.5
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float64)
        torch.rand(1)
        random.random()
        np.random.rand()
        changes = before.diff(fingerprint(x, model, opt))
    expected = [
        "tensor #0 (shape (3,)) bits changed",
        "module #1.0.bias requires_grad changed from True to False",
        "module #1.0.weight .grad changed from None to tensor",
        "module #1.1 training changed from True to False",
        "module #1.1 parameter 'weight' was replaced by another object",
        "module #1.1.num_batches_tracked (shape ()) bits changed",
        "module #1 hooks changed",
        "optimizer #2.param_groups[0]['lr'] changed from 0.1 to 0.5",
        "grad mode changed from True to False",
        "default dtype changed from torch.float32 to torch.float64",
        "torch RNG state changed",
        "Python random state changed",
        "NumPy RNG state changed",
    ]
    for line in expected:
        assert line in changes, changes
    assert not any("different tensor object" in c and "1.1.weight" in c for c in changes)
    assert before.diff(fingerprint(x, model, opt)) == []


def test_diff_of_grads_storage_leafness_and_optimizer_state() -> None:
    w = torch.zeros(2, requires_grad=True)
    w.grad = torch.zeros(2)
    x = torch.zeros(2)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.ones(1)
    before = fingerprint(w, x, opt)
    with preserved(w, x, opt):
        w.grad.add_(1)
        x.mul_(torch.ones(2, requires_grad=True))
        opt.step()
        grad_bits = before.diff(fingerprint(w, x, opt))
        w.grad = torch.zeros(2)
        replaced = before.diff(fingerprint(w, x, opt))
        w.grad = None
        w.data = torch.zeros(3)
        gone = before.diff(fingerprint(w, x, opt))
    assert "tensor #0 .grad (shape (2,)) bits changed" in grad_bits
    assert "tensor #1 is_leaf changed from True to False" in grad_bits
    assert "tensor #1 requires_grad changed from False to True" in grad_bits
    assert any(c.startswith("optimizer #2.state[") and "was added" in c for c in grad_bits)
    assert "tensor #0 .grad is now a different tensor object" in replaced
    assert "tensor #0 .grad changed from tensor to None" in gone
    assert "tensor #0 changed shape (2,) -> (3,)" in gone


def test_fingerprint_is_hashable_and_rejects_other_types() -> None:
    fp = fingerprint(torch.zeros(2), nn.Linear(1, 1))
    assert isinstance(fp, Fingerprint)
    again = fingerprint(torch.zeros(2), nn.Linear(1, 1))
    assert hash(fp) == hash(fp) and fp in {fp}
    assert fp != again  # other objects: other identities
    with pytest.raises(TypeError, match="must be a Fingerprint"):
        fp.diff("nope")  # type: ignore[arg-type]


def test_storage_swap_with_the_same_shape_is_named() -> None:
    w = torch.zeros(2)
    before = fingerprint(w)
    with preserved(w):
        w.data = torch.zeros(2)
        assert before.diff(fingerprint(w)) == ["tensor #0 (shape (2,)) storage or strides changed"]


# ----------------------------------------------------------------- RNG


def _draws() -> tuple[list[float], float, list[float]]:
    return torch.rand(4).tolist(), random.random(), np.random.rand(3).tolist()


def test_capture_and_restore_replay_every_generator() -> None:
    state = capture_rng_state()
    first = _draws()
    assert capture_rng_state() != state
    restore_rng_state(state)
    assert _draws() == first
    restore_rng_state(state)
    assert capture_rng_state() == state
    assert hash(state) == hash(capture_rng_state())
    assert repr(state).startswith("RngState(torch_cpu=sha256:")


def test_restore_rng_state_checks_its_argument() -> None:
    with pytest.raises(TypeError, match="must be an RngState"):
        restore_rng_state("state")  # type: ignore[arg-type]


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_seed_everything_makes_draws_identical(seed: int) -> None:
    with preserved():
        seed_everything(seed)
        a = _draws()
        seed_everything(seed)
        b = _draws()
    assert a == b


@pytest.mark.parametrize("seed", [-1, 2**32, True, 1.5, "0"])
def test_bad_seeds_are_rejected_before_anything_changes(seed: object) -> None:
    state = capture_rng_state()
    bad: Any = seed
    with pytest.raises(InvalidArgument, match="seed="):
        seed_everything(bad)
    with pytest.raises(InvalidArgument, match="seed="):
        RngReplayer(bad)
    with pytest.raises(InvalidArgument, match="seed="), replaying_rng(bad):
        pass
    assert capture_rng_state() == state


def test_replaying_rng_seeds_inside_and_restores_after() -> None:
    before = capture_rng_state()
    with replaying_rng(11):
        a = _draws()
    assert capture_rng_state() == before  # lazy device seeds included
    with pytest.raises(Boom), replaying_rng(11):
        b = _draws()
        raise Boom
    assert a == b
    assert capture_rng_state() == before


def test_replayer_gives_every_evaluation_the_same_streams() -> None:
    replayer = RngReplayer(5)
    assert replayer.seed == 5 and repr(replayer) == "RngReplayer(seed=5)"
    before = fingerprint()
    with preserved():
        streams = []
        for _ in range(3):
            with replayer.fresh():
                streams.append(_draws())
        outside = _draws()
    assert streams[0] == streams[1] == streams[2]
    assert outside != streams[0]  # fresh() seeds on entry only
    assert fingerprint() == before


def test_replayer_makes_a_random_graph_function_deterministic() -> None:
    # SCENARIOS.md §5: the forward pass draws a random depth with Python's random.
    layer = nn.Linear(3, 3)

    def dynamic(x: torch.Tensor) -> torch.Tensor:
        for _ in range(random.randint(0, 3)):
            x = torch.relu(layer(x))
        return x * torch.rand(1)

    x = torch.randn(2, 3)
    replayer = RngReplayer(0)
    with preserved(layer):
        outs = []
        for _ in range(4):
            with replayer.fresh():
                outs.append(dynamic(x))
    assert all(torch.equal(outs[0], o) for o in outs)


def test_lazy_device_seeds_are_restored() -> None:
    # torch.manual_seed queues seeds for backends not initialised yet (seed_everything
    # leaves them alone where no such backend is present, as on a CPU-only machine)
    tracker = getattr(getattr(torch, "cuda", None), "_lazy_seed_tracker", None)
    if tracker is None or torch.cuda.is_initialized():
        pytest.skip("no pending lazy CUDA seeds on this build")
    before_order = list(tracker.call_order)
    before = capture_rng_state()
    with preserved():
        torch.manual_seed(1)
        assert capture_rng_state().lazy_seeds != before.lazy_seeds
    assert all(a is b for a, b in zip(tracker.call_order, before_order, strict=True))
    fp_before = fingerprint()
    with preserved():
        torch.manual_seed(2)
        assert "seeds queued for uninitialised devices changed" in fp_before.diff(fingerprint())


def test_no_warnings_for_ordinary_use() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    y = model(torch.randn(1, 2))  # a non-leaf without retained grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with preserved(model, y):
            y.sum().backward()
        fingerprint(model, y)


def test_rng_state_equality_ignores_raw_fields() -> None:
    a, b = capture_rng_state(), capture_rng_state()
    assert isinstance(a, RngState) and a == b and a is not b


# ----------------------------------------------------------------- CUDA

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA device not available: torch.cuda.is_available() is False",
)


def _run_fresh_python(code: str) -> str:
    """Run `code` in a new interpreter (CUDA initialisation can't be undone in this one)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_reading_and_seeding_never_initialise_cuda() -> None:
    out = _run_fresh_python(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})  # where support/ lives
        import torch
        from gradcheck_kit._src.state.rng import RngReplayer, capture_rng_state, replaying_rng
        from gradcheck_kit._src.state.snapshot import preserved
        from support.fingerprint import fingerprint
        state = capture_rng_state()
        fingerprint(torch.zeros(1), torch.nn.Linear(1, 1))
        with preserved(torch.zeros(1)):
            with RngReplayer(1).fresh():
                torch.rand(1)
        with replaying_rng(0):
            torch.rand(1)
        print(state.cuda, torch.cuda.is_initialized())
        """
    )
    assert out.split() == ["None", "False"]


@needs_cuda
def test_pending_user_seed_survives_replay_until_cuda_starts() -> None:
    code = """
        import torch
        from gradcheck_kit._src.state.rng import replaying_rng
        torch.manual_seed(123)
        {extra}
        torch.cuda.init()
        print(torch.cuda.get_rng_state().sum().item(), torch.rand(2, device="cuda").tolist())
        """
    plain = _run_fresh_python(code.format(extra="pass"))
    replayed = _run_fresh_python(code.format(extra="with replaying_rng(0): torch.rand(1)"))
    assert plain == replayed


@needs_cuda
def test_replay_covers_a_function_that_starts_cuda() -> None:
    out = _run_fresh_python(
        """
        import torch
        from gradcheck_kit._src.state.rng import RngReplayer
        from gradcheck_kit._src.state.snapshot import preserved
        replayer = RngReplayer(4)
        with preserved():
            draws = []
            for _ in range(3):
                with replayer.fresh():
                    draws.append(torch.rand(3, device="cuda").tolist())
        print(draws[0] == draws[1] == draws[2])
        """
    )
    assert out.strip() == "True"


@needs_cuda
def test_cuda_generators_are_captured_and_restored() -> None:
    torch.cuda.init()
    state = capture_rng_state()
    assert state.cuda is not None and len(state.cuda) == torch.cuda.device_count()
    first = torch.rand(5, device="cuda")
    assert capture_rng_state() != state
    assert "CUDA RNG state changed" in _diff_rng_lines(state)
    restore_rng_state(state)
    assert torch.equal(torch.rand(5, device="cuda"), first)
    replayer = RngReplayer(9)
    with preserved():
        streams = []
        for _ in range(2):
            with replayer.fresh():
                streams.append(torch.randn(4, device="cuda"))
    assert torch.equal(streams[0], streams[1])


def _diff_rng_lines(before: RngState) -> list[str]:
    modes = fingerprint().modes
    return Fingerprint((), (), (), modes, before).diff(
        Fingerprint((), (), (), modes, capture_rng_state())
    )


@needs_cuda
def test_cuda_models_come_back_with_the_same_objects() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout()).cuda()
    model(torch.randn(3, 4, device="cuda")).sum().backward()
    x = torch.randn(3, 4, device="cuda", requires_grad=True)
    params = list(model.parameters())
    grads = [p.grad for p in params]
    fp = fingerprint(model, x)
    with pytest.raises(Boom), preserved(model, x):
        model(x).pow(2).sum().backward()
        with torch.no_grad():
            for p in params:
                p.add_(1)
        model[0].weight = nn.Parameter(torch.zeros(4, 4, device="cuda"))
        model.eval()
        x.data = torch.zeros(2, device="cuda")
        raise Boom
    assert fingerprint(model, x) == fp
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert all(p.grad is g for p, g in zip(params, grads, strict=True))


def test_numpy_gaussian_cache_is_restored_though_the_stream_did_not_move() -> None:
    # Restoring NumPy is skipped when its stream did not move -- except with a cached
    # Gaussian pending, which a draw consumes without moving the stream.
    np.random.seed(0)
    np.random.randn()  # draws two Gaussians, caches one
    before = np.random.get_state()
    with preserved():
        np.random.randn()  # uses the cached one: same position, cache now empty
    after = np.random.get_state()
    assert after[3] == before[3] == 1 and after[4] == before[4]
    assert after[2] == before[2] and bool((after[1] == before[1]).all())


def test_rng_fingerprint_sees_every_generator_draw() -> None:
    for draw in (lambda: torch.rand(1), lambda: random.random(), lambda: np.random.rand()):
        before = rng_fingerprint()
        assert rng_fingerprint() == before
        draw()
        assert rng_fingerprint() != before
