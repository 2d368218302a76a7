"""watch_training over many loop shapes: correct loops pass, each buggy one gets the right finding.

Every loop here is tiny (a 4-8-2 MLP, six batches of five), so the whole file runs
in a few seconds. The watcher must also leave training bit-identical and remove
every hook, whatever happens in the block.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.modules import module as module_mod

import gradcheck_kit as gk
from gradcheck_kit._src import recording

Batch = tuple[torch.Tensor, torch.Tensor]


class Net(nn.Module):
    def __init__(self, detach: bool = False, unused: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)
        self.detach = detach
        if unused:
            self.spare = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x).relu()
        if self.detach:
            h = h.detach()  # cuts fc1 off the loss
        return self.fc2(h)


def batches(n: int = 6, dtype: torch.dtype = torch.float32) -> list[Batch]:
    gen = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(5, 4, generator=gen, dtype=dtype),
            torch.randn(5, 2, generator=gen, dtype=dtype),
        )
        for _ in range(n)
    ]


def loss_of(net: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(net(x), y)


def make(
    opt_cls: type[torch.optim.Optimizer] = torch.optim.SGD, **opt_kwargs: Any
) -> tuple[Net, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = Net()
    opt_kwargs.setdefault("lr", 0.05)
    return net, opt_cls(net.parameters(), **opt_kwargs)


@pytest.fixture(autouse=True)
def _no_hook_leaks() -> Iterator[None]:
    """Every test must leave torch's global parameter-registration hooks as it found them."""
    before = dict(module_mod._global_parameter_registration_hooks)
    yield
    assert dict(module_mod._global_parameter_registration_hooks) == before


def hook_counts(net: nn.Module, *opts: torch.optim.Optimizer) -> tuple[int, int]:
    params = sum(len(p._post_accumulate_grad_hooks or {}) for p in net.parameters())
    steps = sum(len(o._optimizer_step_pre_hooks) + len(o._optimizer_step_post_hooks) for o in opts)
    return params, steps


# --------------------------------------------------------------------------- correct loops


def zero_before_backward(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        opt.zero_grad()
        loss_of(net, b).backward()
        opt.step()


def zero_after_step(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        loss_of(net, b).backward()
        opt.step()
        opt.zero_grad()


def zero_keeping_tensors(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        opt.zero_grad(set_to_none=False)
        loss_of(net, b).backward()
        opt.step()


def model_zero_grad(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        net.zero_grad()
        loss_of(net, b).backward()
        opt.step()


def grads_to_none_by_hand(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        for p in net.parameters():
            p.grad = None
        loss_of(net, b).backward()
        opt.step()


def grads_zeroed_by_hand(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        loss_of(net, b).backward()
        opt.step()
        with torch.no_grad():
            for p in net.parameters():
                if p.grad is not None:
                    p.grad.zero_()


def accumulate_then_step(net: Net, opt: torch.optim.Optimizer) -> None:
    for i, b in enumerate(batches(8)):
        (loss_of(net, b) / 4).backward()
        if (i + 1) % 4 == 0:
            opt.step()
            opt.zero_grad()


def two_losses_per_step(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        opt.zero_grad()
        loss_of(net, b).backward()
        net(b[0]).abs().mean().backward()
        opt.step()


def clipped(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        opt.zero_grad(set_to_none=False)
        loss_of(net, b).backward()
        nn.utils.clip_grad_norm_(net.parameters(), 0.01)
        opt.step()


def with_scheduler(net: Net, opt: torch.optim.Optimizer) -> None:
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for b in batches():
        opt.zero_grad()
        loss_of(net, b).backward()
        opt.step()
        sched.step()


def with_grad_scaler(net: Net, opt: torch.optim.Optimizer) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    for b in batches():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(b[0])
        loss = nn.functional.mse_loss(out.float(), b[1])
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()


def scaler_skips_a_step(net: Net, opt: torch.optim.Optimizer) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    for i, b in enumerate(batches()):
        opt.zero_grad(set_to_none=False)
        loss = loss_of(net, b)
        if i == 2:
            loss = loss * float("inf")  # scaler.step skips this optimizer step
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def lbfgs_closure(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches(3):

        def closure(b: Batch = b) -> torch.Tensor:
            opt.zero_grad()
            loss = loss_of(net, b)
            loss.backward()
            return loss

        opt.step(closure)


def writes_that_keep_the_tensor(net: Net, opt: torch.optim.Optimizer) -> None:
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for i, b in enumerate(batches()):
        if i == 1:
            net.fc1.weight.data = torch.full((8, 4), 0.1)
        if i == 2:
            with torch.no_grad():
                net.fc1.bias.copy_(torch.zeros(8))
        if i == 3:
            net.load_state_dict(state)
        opt.zero_grad()
        loss_of(net, b).backward()
        opt.step()


def to_float64_in_place(net: Net, opt: torch.optim.Optimizer) -> None:
    for i, (b32, b64) in enumerate(zip(batches(), batches(dtype=torch.float64), strict=True)):
        if i == 2:
            net.to(torch.float64)  # keeps every Parameter (and .grad) object
        opt.zero_grad(set_to_none=False)
        loss_of(net, b64 if i >= 2 else b32).backward()
        opt.step()


def gradient_penalty(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        opt.zero_grad()
        loss = loss_of(net, b)
        grads = torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
        (loss + 0.01 * sum(g.pow(2).sum() for g in grads)).backward()
        opt.step()


def progressive_unfreezing(net: Net, opt: torch.optim.Optimizer) -> None:
    net.fc1.requires_grad_(False)
    for i, b in enumerate(batches()):
        if i == 3:
            net.fc1.requires_grad_(True)
        opt.zero_grad()
        loss_of(net, b).backward()
        opt.step()


CORRECT: dict[str, tuple[Callable[[Net, torch.optim.Optimizer], None], dict[str, Any]]] = {
    "zero_grad before backward": (zero_before_backward, {}),
    "zero_grad after step": (zero_after_step, {}),
    "zero_grad(set_to_none=False)": (zero_keeping_tensors, {}),
    "model.zero_grad()": (model_zero_grad, {}),
    "p.grad = None by hand": (grads_to_none_by_hand, {}),
    "p.grad.zero_() by hand": (grads_zeroed_by_hand, {}),
    "accumulate 4, then step and zero": (accumulate_then_step, {}),
    "two backward passes per step": (two_losses_per_step, {}),
    "clip_grad_norm_": (clipped, {}),
    "StepLR scheduler": (with_scheduler, {}),
    "GradScaler on CPU, unscale_ and clip": (with_grad_scaler, {}),
    "GradScaler skips a step on inf": (scaler_skips_a_step, {}),
    "LBFGS with a closure": (lbfgs_closure, {"opt_cls": torch.optim.LBFGS, "max_iter": 3}),
    ".data, copy_, load_state_dict": (writes_that_keep_the_tensor, {"momentum": 0.9}),
    "model.to(float64) in place": (to_float64_in_place, {}),
    "autograd.grad penalty": (gradient_penalty, {}),
    "progressive unfreezing": (progressive_unfreezing, {"momentum": 0.9}),
    "Adam with weight decay": (zero_before_backward, {"opt_cls": torch.optim.AdamW}),
    "SGD momentum, weight decay": (zero_after_step, {"momentum": 0.9, "weight_decay": 0.1}),
    "foreach=False": (zero_before_backward, {"foreach": False}),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_loop_raises_nothing(name: str) -> None:
    loop, kwargs = CORRECT[name]
    net, opt = make(**kwargs)
    with gk.watch_training(net, opt) as watch:  # on_error="raise"
        loop(net, opt)
    report = watch.report
    assert report is not None and report.passed, report.summary()
    assert report.optimizer_steps >= 2
    assert hook_counts(net, opt) == (0, 0)


def test_accumulation_with_a_step_every_batch_needs_accumulation_steps() -> None:
    def zero_every_3(net: Net, opt: torch.optim.Optimizer) -> None:
        for i, b in enumerate(batches(9)):
            if i % 3 == 0:
                opt.zero_grad()
            loss_of(net, b).backward()
            opt.step()

    net, opt = make()
    with gk.watch_training(net, opt, accumulation_steps=3):
        zero_every_3(net, opt)
    with gk.watch_training(net, opt, on_error="record") as watch:
        zero_every_3(net, opt)
    assert watch.report is not None
    kinds = {(f.kind, f.step) for f in watch.report.findings}
    assert kinds == {("grad_not_reset", 2)}


def test_several_models_and_optimizers_gan_style() -> None:
    torch.manual_seed(0)
    gen, disc = nn.Linear(3, 4), nn.Linear(4, 1)
    both = nn.ModuleDict({"G": gen, "D": disc})
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    opt_d = torch.optim.SGD(disc.parameters(), lr=1e-2)

    def train(zero_d: Callable[[], None]) -> None:
        for _ in range(4):
            zero_d()
            real = torch.randn(6, 4)
            disc(real).mean().backward()
            fake = gen(torch.randn(6, 3))
            (-disc(fake.detach()).mean()).backward()  # D sums two passes: fine
            opt_d.step()
            gen.zero_grad()
            disc(fake).mean().backward()  # also adds to D's .grad, reset next round
            opt_g.step()

    with gk.watch_training(both, [opt_g, opt_d]) as watch:
        train(disc.zero_grad)
    assert watch.report is not None and watch.report.optimizer_steps == 8

    with gk.watch_training(both, [opt_g, opt_d], on_error="record") as watch:
        train(opt_g.zero_grad)  # zero_grad on the wrong optimizer
    assert watch.report is not None
    stale = {(f.parameter, f.optimizer) for f in watch.report.findings}
    assert stale == {("D.weight", "SGD #1"), ("D.bias", "SGD #1")}
    assert {f.kind for f in watch.report.findings} == {"grad_not_reset"}


# --------------------------------------------------------------------------- buggy loops


def no_zero_grad(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        loss_of(net, b).backward()
        opt.step()


def zero_grad_between_backward_and_step(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        loss_of(net, b).backward()
        opt.zero_grad()
        opt.step()


def zero_in_place_between_backward_and_step(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        loss_of(net, b).backward()
        opt.zero_grad(set_to_none=False)
        opt.step()


def no_backward(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches():
        opt.zero_grad()
        loss_of(net, b)
        opt.step()


def two_steps_per_backward(net: Net, opt: torch.optim.Optimizer) -> None:
    for b in batches(3):
        opt.zero_grad()
        loss_of(net, b).backward()
        opt.step()
        opt.step()


def accumulate_without_reset(net: Net, opt: torch.optim.Optimizer) -> None:
    for i, b in enumerate(batches(8)):
        loss_of(net, b).backward()
        if (i + 1) % 4 == 0:
            opt.step()


def replace_parameter(net: Net, opt: torch.optim.Optimizer) -> None:
    for i, b in enumerate(batches()):
        if i == 2:
            net.fc1.weight = nn.Parameter(torch.ones(8, 4))  # the optimizer keeps the old one
        opt.zero_grad()
        loss_of(net, b).backward()
        opt.step()


def freeze_with_stale_grad(net: Net, opt: torch.optim.Optimizer) -> None:
    for i, b in enumerate(batches()):
        if i == 2:
            net.fc1.requires_grad_(False)  # .grad stays, zeroed in place below
        opt.zero_grad(set_to_none=False)
        loss_of(net, b).backward()
        opt.step()


BUGGY: dict[str, tuple[Callable[..., None], dict[str, Any], set[tuple[str, str | None]], int]] = {
    # name: (loop, make/watch kwargs, {(kind, parameter)}, first step)
    "zero_grad missing": (
        no_zero_grad,
        {},
        {("grad_not_reset", n) for n in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")},
        2,
    ),
    "zero_grad between backward and step": (
        zero_grad_between_backward_and_step,
        {},
        {("empty_step", None)},
        1,
    ),
    "zero_grad(set_to_none=False) between backward and step": (
        zero_in_place_between_backward_and_step,
        {},
        {("empty_step", None)},
        1,
    ),
    "backward missing": (no_backward, {}, {("empty_step", None)}, 1),
    "step twice": (two_steps_per_backward, {}, {("empty_step", None)}, 2),
    "accumulation without zero_grad": (
        accumulate_without_reset,
        {"accumulation_steps": 4},
        {("grad_not_reset", n) for n in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")},
        2,
    ),
    "nn.Parameter re-assigned": (replace_parameter, {}, {("param_replaced", "fc1.weight")}, 0),
    "frozen with a stale .grad, momentum": (
        freeze_with_stale_grad,
        {"momentum": 0.9},
        {("frozen_param_updated", "fc1.weight"), ("frozen_param_updated", "fc1.bias")},
        3,
    ),
    "frozen with a stale .grad, weight decay": (
        freeze_with_stale_grad,
        {"weight_decay": 0.1},
        {("frozen_param_updated", "fc1.weight"), ("frozen_param_updated", "fc1.bias")},
        3,
    ),
}


@pytest.mark.parametrize("name", list(BUGGY))
def test_buggy_loop_gets_the_right_finding(name: str) -> None:
    loop, kwargs, expected, first_step = BUGGY[name]
    watch_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k == "accumulation_steps"}
    net, opt = make(**kwargs)
    with (
        pytest.raises(gk.errors.TrainingLoopError) as info,
        gk.watch_training(net, opt, **watch_kwargs),
    ):
        loop(net, opt)
    report = info.value.report
    assert isinstance(report, gk.results.TrainingReport)
    assert {(f.kind, f.parameter) for f in report.findings} == expected, report.summary()
    if first_step:
        assert {f.step for f in report.findings} == {first_step}
    text = str(info.value)
    for finding in report.findings:
        assert finding.title in text
        if finding.parameter:
            assert repr(finding.parameter) in text
    for part in ("Expected:", "Found:", "Likely cause:", "Fix:", "At: "):
        assert part in text
    assert "test_watch_training.py" in text
    assert hook_counts(net, opt) == (0, 0)


def test_source_line_of_a_re_assignment_is_the_users_line() -> None:
    net, opt = make()
    with gk.watch_training(net, opt, on_error="record") as watch:
        replace_parameter(net, opt)
    assert watch.report is not None
    (finding,) = watch.report.findings
    assert finding.location is not None
    assert "test_watch_training.py" in finding.location
    assert "net.fc1.weight = nn.Parameter(torch.ones(8, 4))" in finding.location
    assert "SGD.param_groups[0]['params'][0]" in finding.found


def test_re_assignment_before_the_watch_is_found_by_shape() -> None:
    net, opt = make()
    net.fc2.bias = nn.Parameter(torch.zeros(2))
    with gk.watch_training(net, opt, on_error="record") as watch:
        zero_before_backward(net, opt)
    assert watch.report is not None
    assert [(f.kind, f.parameter) for f in watch.report.findings] == [
        ("param_replaced", "fc2.bias")
    ]


def test_never_a_gradient_detached_and_unused() -> None:
    torch.manual_seed(0)
    net = Net(detach=True, unused=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with gk.watch_training(net, opt, on_error="record") as watch:
        zero_before_backward(net, opt)
    assert watch.report is not None
    found = {(f.kind, f.parameter) for f in watch.report.findings}
    expected_names = ("fc1.weight", "fc1.bias", "spare.weight", "spare.bias")
    assert found == {("no_gradient", n) for n in expected_names}
    assert "6 backward passes" in watch.report.findings[0].found
    with gk.watch_training(net, opt, ignore=["fc1.*", "spare.*"]):
        zero_before_backward(net, opt)


def test_parameter_missing_from_the_optimizer_and_held_twice() -> None:
    net, _ = make()
    head_only = torch.optim.SGD(net.fc2.parameters(), lr=0.1)
    with gk.watch_training(net, head_only, on_error="record") as watch:
        zero_before_backward(net, head_only)
    assert watch.report is not None
    assert {(f.kind, f.parameter) for f in watch.report.findings} == {
        ("param_not_in_optimizer", "fc1.weight"),
        ("param_not_in_optimizer", "fc1.bias"),
    }
    twice = torch.optim.Adam(net.fc2.parameters(), lr=0.1)
    all_params = torch.optim.SGD(net.parameters(), lr=0.1)
    with gk.watch_training(net, [all_params, twice], on_error="record") as watch:
        for b in batches(2):
            net.zero_grad()
            loss_of(net, b).backward()
            all_params.step()
            twice.step()
    assert watch.report is not None
    # Adam's steps re-apply the gradients SGD just applied: no new gradient either.
    assert {(f.kind, f.parameter, f.optimizer) for f in watch.report.findings} == {
        ("param_in_two_optimizers", "fc2.weight", None),
        ("param_in_two_optimizers", "fc2.bias", None),
        ("empty_step", None, "Adam #1"),
    }


class Idle(torch.optim.Optimizer):
    """An optimizer whose step() forgets to update anything."""

    def __init__(self, params: Any) -> None:
        super().__init__(params, {"lr": 0.1})

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        return None


def test_a_step_that_writes_nothing_is_an_empty_step() -> None:
    net, _ = make()
    opt = Idle(net.parameters())
    with gk.watch_training(net, opt, on_error="record") as watch:
        zero_before_backward(net, opt)
    assert watch.report is not None
    (finding,) = watch.report.findings
    assert (finding.kind, finding.step, finding.occurrences) == ("empty_step", 1, 6)
    assert "wrote none of the 4 parameters that had a gradient" in finding.found


def test_extra_learnable_tensor_in_the_optimizer_is_fine() -> None:
    net, _ = make()
    log_var = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([*net.parameters(), log_var], lr=0.1)
    with gk.watch_training(net, opt):
        for b in batches():
            opt.zero_grad()
            (loss_of(net, b) * log_var.exp() + log_var).backward()
            opt.step()


# --------------------------------------------------------------------------- leaves no trace


def _bits(net: nn.Module, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    out = []
    for p in net.parameters():
        out.append(p.detach().clone())
        out.append(p.grad.clone() if p.grad is not None else torch.tensor([]))
    for entry in opt.state_dict()["state"].values():
        out += [v.clone() for v in entry.values() if isinstance(v, torch.Tensor)]
    return out


def _same_bits(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype
        and x.shape == y.shape
        and torch.equal(x.view(-1).view(torch.uint8), y.view(-1).view(torch.uint8))
        for x, y in zip(a, b, strict=True)
    )


LOOP_NAMES = [
    "zero_grad before backward",
    "GradScaler on CPU, unscale_ and clip",
    "LBFGS with a closure",
]


@pytest.mark.parametrize(
    "name", [*LOOP_NAMES, "zero_grad missing", "frozen with a stale .grad, momentum"]
)
def test_training_is_bit_identical_with_and_without_the_watcher(name: str) -> None:
    if name in CORRECT:
        loop, kwargs = CORRECT[name]
    else:
        loop, kwargs, _, _ = BUGGY[name]
    net, opt = make(**dict(kwargs))
    torch.manual_seed(3)
    loop(net, opt)
    plain = _bits(net, opt)
    net, opt = make(**dict(kwargs))
    torch.manual_seed(3)
    with gk.watch_training(net, opt, on_error="record"):
        loop(net, opt)
    assert _same_bits(plain, _bits(net, opt))
    assert torch.rand(1).item() == pytest.approx(torch.rand(1).item(), abs=1.0)  # RNG usable


def _simulate(zero_every: int, step_every: int, zero_after: bool, k: int, n: int) -> set[int]:
    """The steps where a gradient carried over a step beyond k passes: an independent oracle."""
    count = applied = steps = 0
    stale: set[int] = set()
    for i in range(n):
        if not zero_after and i % zero_every == 0:
            count = applied = 0
        count += 1
        if (i + 1) % step_every == 0:
            steps += 1
            if applied and count > k:
                stale.add(steps)
            applied += 1
        if zero_after and (i + 1) % zero_every == 0:
            count = applied = 0
    return stale


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    zero_every=st.integers(1, 4),
    step_every=st.integers(1, 3),
    zero_after=st.booleans(),
    set_to_none=st.booleans(),
    k=st.integers(1, 4),
    opt_name=st.sampled_from(["SGD", "SGD momentum", "Adam"]),
)
def test_loop_shapes_match_an_oracle_and_train_identically(
    zero_every: int, step_every: int, zero_after: bool, set_to_none: bool, k: int, opt_name: str
) -> None:
    n = 9
    kwargs: dict[str, Any] = {
        "SGD": {},
        "SGD momentum": {"momentum": 0.9},
        "Adam": {"opt_cls": torch.optim.Adam},
    }[opt_name]

    def loop(net: Net, opt: torch.optim.Optimizer) -> None:
        for i, b in enumerate(batches(n)):
            if not zero_after and i % zero_every == 0:
                opt.zero_grad(set_to_none=set_to_none)
            loss_of(net, b).backward()
            if (i + 1) % step_every == 0:
                opt.step()
            if zero_after and (i + 1) % zero_every == 0:
                opt.zero_grad(set_to_none=set_to_none)

    net, opt = make(**dict(kwargs))
    loop(net, opt)
    plain = _bits(net, opt)
    net, opt = make(**dict(kwargs))
    with gk.watch_training(net, opt, accumulation_steps=k, on_error="record") as watch:
        loop(net, opt)
    assert _same_bits(plain, _bits(net, opt))
    report = watch.report
    assert report is not None
    expected = _simulate(zero_every, step_every, zero_after, k, n)
    stale_steps = {s for f in report.findings if f.kind == "grad_not_reset" for s in f.steps}
    assert stale_steps == expected, report.summary()
    assert {f.kind for f in report.findings} <= {"grad_not_reset"}
    assert hook_counts(net, opt) == (0, 0)


def test_hooks_are_removed_when_the_block_raises_and_findings_ride_along() -> None:
    net, opt = make()
    with pytest.raises(ValueError, match="boom") as info, gk.watch_training(net, opt):
        no_zero_grad(net, opt)
        raise ValueError("boom")
    assert hook_counts(net, opt) == (0, 0)
    notes = getattr(info.value, "__notes__", [])
    if hasattr(info.value, "add_note"):
        assert any("Gradient not reset" in n for n in notes)


def test_a_failing_hook_never_breaks_training(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradcheck_kit._src.training import watcher as watcher_module

    def broken() -> None:
        raise LookupError("no frames")

    net, opt = make()
    zero_before_backward(net, opt)
    plain = _bits(net, opt)
    monkeypatch.setattr(watcher_module, "user_site", broken)
    net, opt = make()
    warns = pytest.warns(
        RuntimeWarning, match=r"a gradient hook failed: LookupError: no frames \(1 time\)"
    )
    with warns, gk.watch_training(net, opt, on_error="record") as watch:
        zero_before_backward(net, opt)
    assert _same_bits(plain, _bits(net, opt))
    assert watch.report is not None and watch.report.passed
    assert hook_counts(net, opt) == (0, 0)


def test_watcher_is_reusable_and_works_as_a_decorator() -> None:
    net, opt = make()
    watcher = gk.watch_training(net, opt, on_error="record")

    @watcher
    def train(loop: Callable[[Net, torch.optim.Optimizer], None]) -> str:
        loop(net, opt)
        return "done"

    assert train(zero_before_backward) == "done"
    assert watcher.report is not None and watcher.report.passed
    assert train(no_zero_grad) == "done"
    assert watcher.report is not None and not watcher.report.passed
    assert hook_counts(net, opt) == (0, 0)
    with watcher:
        zero_before_backward(net, opt)
        assert watcher.findings == ()
    assert watcher.report.passed


# --------------------------------------------------------------------------- on_error, reports


def test_on_error_warn_and_record() -> None:
    net, opt = make()
    warns = pytest.warns(gk.errors.TrainingLoopWarning, match="Gradient not reset")
    with warns, gk.watch_training(net, opt, on_error="warn"):
        no_zero_grad(net, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gk.watch_training(net, opt, on_error="record") as watch:
            no_zero_grad(net, opt)
    assert watch.report is not None and len(watch.report.findings) == 4


def test_msg_is_put_before_the_message_or_rewrites_it() -> None:
    net, opt = make()
    prefixed = pytest.raises(gk.errors.TrainingLoopError, match=r"^epoch 3\n\n\[gradcheck\]")
    with prefixed, gk.watch_training(net, opt, msg="epoch 3"):
        no_zero_grad(net, opt)
    rewritten = pytest.raises(gk.errors.TrainingLoopError, match=r"^short$")
    with rewritten, gk.watch_training(net, opt, msg=lambda text: "short"):
        no_zero_grad(net, opt)


def test_the_report_is_published_once_as_json() -> None:
    seen: list[Any] = []
    unsubscribe = recording.subscribe(seen.append)
    try:
        net, opt = make()
        with gk.watch_training(net, opt, on_error="record"):
            replace_parameter(net, opt)
    finally:
        unsubscribe()
    (report,) = seen
    data = json.loads(json.dumps(report.with_test_id("t.py::test").to_dict(), allow_nan=False))
    assert data["kind"] == "training" and data["test_id"] == "t.py::test"
    assert data["passed"] is False and data["check"] == "watch_training"
    assert data["findings"][0]["parameter"] == "fc1.weight"
    assert gk.results.TrainingReport.from_dict(data) == report.with_test_id("t.py::test")


# --------------------------------------------------------------------------- misuse


def test_nested_watchers_are_refused() -> None:
    net, opt = make()
    other_net, other_opt = make()
    with gk.watch_training(net, opt) as outer:
        nested = pytest.raises(gk.InvalidArgument, match="already watched by an enclosing")
        with nested, gk.watch_training(net, opt):
            pass
        with pytest.raises(gk.InvalidArgument, match="already active"), outer:
            pass
        with gk.watch_training(other_net, other_opt):  # disjoint objects: fine
            zero_before_backward(other_net, other_opt)
        zero_before_backward(net, opt)
    assert hook_counts(net, opt) == (0, 0)


class Wrapper:
    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("model", "opt"), {}, gk.errors.InvalidArgumentType, "must be a torch.nn.Module"),
        ((nn.ReLU(), "opt"), {}, gk.InvalidArgument, "ReLU has no parameters"),
        (
            ("net", 3),
            {},
            gk.errors.InvalidArgumentType,
            "optimizer=3 must be a torch.optim.Optimizer",
        ),
        (("net", []), {}, gk.InvalidArgument, "at least one"),
        (("net", "wrapped"), {}, gk.errors.InvalidArgumentType, "pass optimizer.optimizer"),
        (("net", "sched"), {}, gk.errors.InvalidArgumentType, "learning-rate scheduler"),
        (("net", "opt"), {"accumulation_steps": 0}, gk.InvalidArgument, "must be >= 1"),
        (("net", "opt"), {"accumulation_steps": True}, gk.InvalidArgument, "must be an int"),
        (("net", "opt"), {"on_error": "ignore"}, gk.InvalidArgument, "is not one of"),
        (("net", "opt"), {"ignore": 3}, gk.errors.InvalidArgumentType, "ignore=3"),
        (("net", "opt"), {"msg": 3}, gk.errors.InvalidArgumentType, "msg=3"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_hooked(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    net, opt = make()
    named = {
        "net": net,
        "opt": opt,
        "wrapped": Wrapper(opt),
        "sched": torch.optim.lr_scheduler.StepLR(opt, 1),
    }
    resolved = [named.get(a, a) if isinstance(a, str) else a for a in args]
    with pytest.raises(error, match=match):
        gk.watch_training(*resolved, **kwargs)
    assert hook_counts(net, opt) == (0, 0)
    if error is gk.errors.InvalidArgumentType:
        assert issubclass(error, TypeError)
