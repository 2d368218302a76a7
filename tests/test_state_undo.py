"""State reached in any way comes back bit-identical: the undo log of in-place writes.

A check snapshots what it can reach (inputs, closure cells, a bound ``self``);
everything else a function touches -- a global module, a ``functools.partial``,
``self.model``, containers of modules, a helper function -- is given back by the
undo log (:mod:`gradcheck_kit._src.undo`), which keeps the pre-image of every
storage written in place during the check.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src.engine import run as engine_run
from gradcheck_kit._src.state.snapshot import StateRestoreWarning
from gradcheck_kit._src.undo import WriteLog, undoing_writes, watching_user_code

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Fn = Callable[[torch.Tensor], torch.Tensor]
Call = Callable[[Any, torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------ the state


class EmaBuffer(nn.Module):
    """A forward that updates registered buffers in place."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.register_buffer("ema", torch.zeros(width))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ema.mul_(0.9).add_(0.1 * x.detach().mean(0))
        self.calls.add_(1)
        return torch.tanh(self.linear(x))


def _side_effect(write: Callable[[Any, torch.Tensor], object]) -> Call:
    def call(target: Any, x: torch.Tensor) -> torch.Tensor:
        write(target, x)
        return torch.sin(x) * 2.0

    return call


def _kind(name: str, width: int) -> tuple[Any, Call, list[torch.Tensor]]:
    """(the state, how fn uses it, every tensor that must come back)."""
    if name in ("batchnorm_train", "batchnorm_eval", "buffer_in_place"):
        if name == "buffer_in_place":
            module: nn.Module = EmaBuffer(width)
        else:
            module = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width))
            module.train(name == "batchnorm_train")
        module = module.double()
        return module, lambda m, x: m(x), [*module.parameters(), *module.buffers()]
    if name == "tensor_add_":
        acc = torch.randn(width, dtype=torch.float64)
        return acc, _side_effect(lambda t, x: t.add_(x.detach().sum(0))), [acc]
    if name == "out_op":
        cache = torch.randn(4, width, dtype=torch.float64)
        return cache, _side_effect(lambda t, x: torch.mul(x.detach(), 2.0, out=t)), [cache]
    raise AssertionError(name)


KINDS = ("batchnorm_train", "batchnorm_eval", "buffer_in_place", "tensor_add_", "out_op")


class Holder:
    """A plain callable object keeping the state as ``self.model``."""

    def __init__(self, model: Any, call: Call) -> None:
        self.model = model
        self._call = call

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.model, x)


def _global(target: Any, call: Call) -> Fn:
    namespace: dict[str, Any] = {"STATE": target, "CALL": call}
    exec("def fn(x):\n    return CALL(STATE, x)\n", namespace)
    fn: Fn = namespace["fn"]
    return fn


def _dict(target: Any, call: Call) -> Fn:
    table = {"state": target}
    return lambda x: call(table["state"], x)


def _list(target: Any, call: Call) -> Fn:
    items = [target]
    return lambda x: call(items[0], x)


def _helper(target: Any, call: Call) -> Fn:
    def helper(x: torch.Tensor) -> torch.Tensor:
        return call(target, x)

    return lambda x: helper(x)


WAYS: dict[str, Callable[[Any, Call], Fn]] = {
    "global": _global,
    "partial": lambda target, call: functools.partial(call, target),
    "self.model": Holder,
    "dict_closure": _dict,
    "list_closure": _list,
    "helper_function": _helper,
}


class _Wrap(nn.Module):
    """A module around fn; fn's state is not a submodule, so no snapshot sees it."""

    def __init__(self, fn: Fn) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=torch.float64))
        object.__setattr__(self, "fn", fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.scale


CHECKS: dict[str, Callable[[Fn, torch.Tensor], Any]] = {
    "check_gradients/full": lambda fn, x: gk.check_gradients(fn, x, mode="full"),
    "check_gradients/fast": lambda fn, x: gk.check_gradients(fn, x, mode="fast"),
    "check_module_gradients": lambda fn, x: gk.check_module_gradients(_Wrap(fn), x.detach()),
    "check_second_order": lambda fn, x: gk.check_second_order(fn, x, mode="fast"),
}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().reshape(-1).view(torch.uint8)


def _raising_at(n: int, fn: Fn) -> Fn:
    calls = [0]

    def raising(x: torch.Tensor) -> torch.Tensor:
        out = fn(x)  # the state is written before the raise
        calls[0] += 1
        if calls[0] == n:
            raise RuntimeError("fn fails mid-check")
        return out

    return raising


# ------------------------------------------------------------------ the property


@SETTINGS
@given(
    kind=st.sampled_from(KINDS),
    way=st.sampled_from(sorted(WAYS)),
    check=st.sampled_from(sorted(CHECKS)),
    raise_at=st.sampled_from([None, 1, 2, 3]),
    width=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_state_reached_in_any_way_comes_back_bit_identical(
    kind: str, way: str, check: str, raise_at: int | None, width: int, seed: int
) -> None:
    torch.manual_seed(seed)
    target, call, watched = _kind(kind, width)
    fn = WAYS[way](target, call)
    if raise_at is not None:
        fn = _raising_at(raise_at, fn)
    x = torch.randn(4, width, dtype=torch.float64, requires_grad=True)
    before = [(_bits(t), t.grad) for t in watched]
    # every check calls fn at least twice (the first call and its repeat); a third
    # call comes only in some checks
    context: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if raise_at in (1, 2):
        context = pytest.raises(RuntimeError, match="fn fails mid-check")
    elif raise_at == 3:
        context = contextlib.suppress(RuntimeError)
    with context:
        CHECKS[check](fn, x)
    for t, (bits, grad) in zip(watched, before, strict=True):
        assert torch.equal(_bits(t), bits), f"{kind} via {way} under {check}: bits changed"
        assert t.grad is grad, f"{kind} via {way} under {check}: .grad changed"


def test_batchnorm_running_stats_of_a_global_module_come_back() -> None:
    # the case a snapshot of the closure cannot see: fn reaches the module as a global
    bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).double()
    fn = _global(bn, lambda m, x: m(x))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert gk.check_gradients(fn, x).passed
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert int(bn[1].num_batches_tracked) == 0


def test_other_checks_give_back_a_global_batchnorm() -> None:
    bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).double()
    fn = _global(bn, lambda m, x: m(x))
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    before = {k: v.clone() for k, v in bn.state_dict().items()}

    class UsesModule(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, t: torch.Tensor) -> torch.Tensor:
            fn(t)
            return t * 2.0

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            return grad * 2.0

    def step(p: torch.Tensor) -> None:
        fn(x.detach())
        p.mul_(0.5)

    gk.check_autograd_function(UsesModule, (x,))
    gk.check_same_training(step, step, torch.ones(2), steps=2)
    gk.benchmark_devices(
        fn, lambda: x.detach().clone().requires_grad_(), devices=("cpu",), warmup=1,
        min_run_time=0.001,
    )  # fmt: skip
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in bn.parameters())  # benchmark's backward set none


# ------------------------------------------------------------------ verdicts


@contextlib.contextmanager
def _no_undo_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    @contextlib.contextmanager
    def nothing(**_: object) -> Iterator[None]:
        yield None

    with monkeypatch.context() as patch:
        patch.setattr(engine_run, "undoing_writes", nothing)
        yield


class _WrongScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x * 3.0

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * 2.0  # wrong: should be 3


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("wrong", [False, True])
def test_verdicts_are_the_same_with_and_without_the_undo_log(
    monkeypatch: pytest.MonkeyPatch, mode: str, wrong: bool
) -> None:
    def make() -> Fn:
        torch.manual_seed(0)
        bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).double()
        acc = torch.zeros(3, dtype=torch.float64)

        def fn(x: torch.Tensor) -> torch.Tensor:
            acc.add_(1.0)
            y = bn(x)
            return _WrongScale.apply(y) if wrong else y * 3.0

        return fn

    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    with_log = gk.check_gradients(make(), x, mode=mode)
    with _no_undo_log(monkeypatch):
        without = gk.check_gradients(make(), x, mode=mode)
    assert with_log.passed is (not wrong)
    assert (with_log.passed, with_log.status, with_log.mode) == (
        without.passed,
        without.status,
        without.mode,
    )
    assert with_log.max_abs_error == without.max_abs_error


def test_checks_still_vectorise_with_the_undo_log() -> None:
    # vmap runs fn once over a batch of perturbations; a per-column loop would call it
    # twice per element (80 times here)
    calls = [0]
    buffer = torch.zeros(())

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        buffer.add_(1.0)  # an unbatched write: allowed under vmap
        return torch.tanh(x) * 2.0

    x = torch.randn(40, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(fn, x, mode="full")
    assert result.passed
    assert calls[0] < 10
    assert float(buffer) == 0.0


# ------------------------------------------------------------------ the log itself


def test_pre_images_are_bit_exact_for_negative_zero_and_nan_payloads() -> None:
    t = torch.tensor([-0.0, float("nan"), 1.0])
    t_bits = _bits(t)
    with undoing_writes():
        t.mul_(0.0).add_(2.0)
    assert torch.equal(_bits(t), t_bits)


def test_writes_through_views_and_out_ops_are_undone() -> None:
    base = torch.arange(12.0)
    before = base.clone()
    with undoing_writes():
        base[2:5].zero_()
        torch.add(base[::3], 1.0, out=base[::3])
        torch._foreach_mul_([base[6:8], base[8:]], 3.0)
    assert torch.equal(base, before)


def test_tensors_made_inside_keep_their_writes() -> None:
    with undoing_writes() as log:
        mine = torch.zeros(3)
        mine.add_(1.0)
        view = mine[1:]
        view.mul_(5.0)
    assert torch.equal(mine, torch.tensor([1.0, 5.0, 5.0]))
    assert log.saved_storages == 0


def test_the_block_raising_still_restores() -> None:
    bn = nn.BatchNorm1d(2)
    with pytest.raises(ValueError, match="boom"), undoing_writes():
        bn(torch.randn(4, 2))
        raise ValueError("boom")
    assert torch.equal(bn.running_mean, torch.zeros(2))
    assert int(bn.num_batches_tracked) == 0


def test_a_backward_inside_leaves_no_grad_on_parameters_it_did_not_have() -> None:
    lin = nn.Linear(2, 2)
    had = torch.ones(2)
    lin.bias.grad = had
    with undoing_writes():
        lin(torch.randn(3, 2)).sum().backward()
    assert lin.weight.grad is None
    assert lin.bias.grad is had
    assert torch.equal(had, torch.ones(2))  # accumulated in place, then given back


def test_only_user_code_spans_are_watched_when_gated() -> None:
    buf = torch.zeros(1)
    with undoing_writes(only_user_code=True) as log:
        buf.add_(1.0)  # the check's own work: not watched
        with watching_user_code():
            buf.add_(1.0)
            with watching_user_code():  # nested spans do not push the mode twice
                buf.add_(1.0)
        assert log.saved_storages == 1
    assert float(buf) == 1.0


def test_tensors_handed_to_user_code_are_not_kept() -> None:
    handed = torch.zeros(2)
    with undoing_writes(only_user_code=True) as log, watching_user_code(handed):
        handed.add_(1.0)
        assert log.saved_storages == 0
    assert torch.equal(handed, torch.ones(2))


def test_watching_without_a_gated_log_does_nothing() -> None:
    buf = torch.zeros(1)
    with watching_user_code():
        buf.add_(1.0)
    assert float(buf) == 1.0


def test_a_write_log_under_vmap_sees_unbatched_writes() -> None:
    counter = torch.zeros(())
    with undoing_writes():
        torch.func.vmap(lambda x: (counter.add_(1.0), x * 2)[1])(torch.randn(3, 2))
    assert float(counter) == 0.0
    assert isinstance(WriteLog(), WriteLog)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not available")
def test_a_global_batchnorm_on_cuda_comes_back() -> None:
    bn = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)).double().cuda()
    fn = _global(bn, lambda m, x: m(x))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(5, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    assert gk.check_gradients(fn, x).passed
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_check_leaves_torch_compile_compiling() -> None:
    # dynamo skips, for good, a frame it first meets under a dispatch mode that does
    # not let it compile: a check would leave the function running eagerly afterwards
    graphs: list[object] = []

    def backend(gm: torch.fx.GraphModule, _: object) -> Callable[..., Any]:
        graphs.append(gm)
        return gm.forward

    buf = torch.zeros(3, dtype=torch.float64)

    @torch.compile(backend=backend)
    def fn(x: torch.Tensor) -> torch.Tensor:
        buf.add_(1.0)
        return torch.sin(x)

    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with undoing_writes():
        fn(x)
    assert graphs  # compiled while watched
    assert torch.equal(buf, torch.zeros(3, dtype=torch.float64))  # and its write undone
    fn(x)
    assert len(graphs) == 1  # and still compiled afterwards, not skipped


def test_what_cannot_be_given_back_is_a_warning_not_an_exception() -> None:
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    with pytest.warns(StateRestoreWarning, match="could not give back"), undoing_writes():
        (p * 2.0).sum()  # an op uses p: its .grad is remembered
        p.grad = None
        p.data = torch.zeros(5)  # rebinding: its old .grad no longer fits


def test_inference_tensors_and_parameters_written_under_no_grad_come_back() -> None:
    with torch.inference_mode():
        made_in_inference = torch.ones(3)
    weight = nn.Parameter(torch.ones(2))
    with undoing_writes():
        with torch.inference_mode():
            made_in_inference.add_(1.0)
        with torch.no_grad():
            weight.mul_(3.0)
    assert torch.equal(made_in_inference, torch.ones(3))
    assert torch.equal(weight.detach(), torch.ones(2))


def test_a_log_stops_watching_after_first_calls_that_wrote_nothing_pre_existing() -> None:
    buf = torch.zeros(1)
    with undoing_writes(only_user_code=True) as log:
        for _ in range(3):  # the first calls: pure
            with watching_user_code():
                _ = buf + 1.0
        assert log.quiet
        with watching_user_code():
            _ = buf.add_(1.0)  # after the cut-off: not watched (the README says so)
    assert buf.item() == 1.0


def test_a_log_keeps_watching_when_the_first_calls_write_pre_existing_state() -> None:
    norm = nn.BatchNorm1d(2)
    before = norm.running_mean.clone()
    with undoing_writes(only_user_code=True) as log:
        for _ in range(10):
            with watching_user_code():
                _ = norm(torch.randn(4, 2))
        assert not log.quiet
    assert torch.equal(norm.running_mean, before) and int(norm.num_batches_tracked) == 0


def test_a_global_module_written_on_every_call_comes_back_after_many_evaluations() -> None:
    norm = nn.BatchNorm1d(3).double()
    before = {k: v.clone() for k, v in norm.state_dict().items()}

    def fn(x: torch.Tensor) -> torch.Tensor:
        return norm(x).sin()

    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    gk.check_gradients(fn, x, mode="full")  # 2 * 12 perturbed evaluations and more
    assert all(torch.equal(v, before[k]) for k, v in norm.state_dict().items())
