"""The training assertions: pass on a correct step, fail with the right cause, restore state."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from support.fingerprint import fingerprint
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src import recording


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)
        self.cut = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x).relu()
        return self.fc2(h.detach() if self.cut else h)


def setup(**opt_kwargs: Any) -> tuple[Net, torch.optim.Optimizer, list[tuple[torch.Tensor, ...]]]:
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.SGD(net.parameters(), lr=opt_kwargs.pop("lr", 0.1), **opt_kwargs)
    gen = torch.Generator().manual_seed(2)
    data = [(torch.randn(5, 4, generator=gen), torch.randn(5, 2, generator=gen)) for _ in range(4)]
    return net, opt, data


def loss_of(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return nn.functional.mse_loss(net(batch[0]), batch[1])


def kinds(err: pytest.ExceptionInfo[gk.errors.TrainingLoopError]) -> list[tuple[str, str | None]]:
    report = err.value.report
    assert isinstance(report, gk.results.TrainingReport)
    return [(f.kind, f.parameter) for f in report.findings]


# --------------------------------------------------------------------------- zero_grad


def test_zero_grad_between_steps_passes_and_restores_everything() -> None:
    net, opt, data = setup(momentum=0.9)

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        opt.zero_grad()
        loss_of(net, batch).backward()
        opt.step()
        torch.rand(1)  # draws from the RNG: restored too

    before = fingerprint(net, opt)
    report = gk.assert_zero_grad_between_steps(step, net, opt, data)
    assert report.passed and report.optimizer_steps == 4
    assert fingerprint(net, opt).diff(before) == []


@pytest.mark.parametrize(
    ("order", "expected_kind"),
    [
        ("backward step", "grad_not_reset"),
        ("backward zero step", "empty_step"),
        ("zero step", "empty_step"),
    ],
)
def test_zero_grad_between_steps_fails_on_a_bad_order(order: str, expected_kind: str) -> None:
    net, opt, data = setup()
    actions: dict[str, Callable[[tuple[torch.Tensor, ...]], Any]] = {
        "backward": lambda b: loss_of(net, b).backward(),
        "zero": lambda b: opt.zero_grad(),
        "step": lambda b: opt.step(),
    }

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        for word in order.split():
            actions[word](batch)

    before = fingerprint(net, opt)
    with pytest.raises(gk.errors.TrainingLoopError) as err:
        gk.assert_zero_grad_between_steps(step, net, opt, data)
    assert {k for k, _ in kinds(err)} == {expected_kind}
    assert "assert_zero_grad_between_steps of 'Net'" in str(err.value)
    assert fingerprint(net, opt).diff(before) == []


def test_zero_grad_between_steps_with_accumulation() -> None:
    net, opt, data = setup()
    data = data * 2
    calls = {"n": 0}

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        calls["n"] += 1
        loss_of(net, batch).backward()
        if calls["n"] % 4 == 0:
            opt.step()
            opt.zero_grad()

    assert gk.assert_zero_grad_between_steps(step, net, opt, data, accumulation_steps=4)


def test_zero_grad_between_steps_needs_steps() -> None:
    net, opt, data = setup()
    other = torch.optim.SGD(net.parameters(), lr=0.1)

    def steps_other(batch: tuple[torch.Tensor, ...]) -> None:
        other.zero_grad()
        loss_of(net, batch).backward()
        other.step()

    with pytest.raises(gk.errors.TrainingLoopError, match="No optimizer step was taken") as err:
        gk.assert_zero_grad_between_steps(steps_other, net, opt, data)
    assert kinds(err) == [("no_step", None)]
    with pytest.raises(gk.InvalidArgument, match="at least two"):
        gk.assert_zero_grad_between_steps(steps_other, net, opt, data[:1])
    with pytest.raises(gk.errors.InvalidArgumentType, match="step_fn=3"):
        gk.assert_zero_grad_between_steps(3, net, opt, data)  # type: ignore[arg-type]


def test_state_is_restored_when_step_fn_raises() -> None:
    net, opt, data = setup(momentum=0.9)
    before = fingerprint(net, opt)

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        loss_of(net, batch).backward()
        opt.step()
        raise RuntimeError("data loader broke")

    with pytest.raises(RuntimeError, match="data loader broke"):
        gk.assert_zero_grad_between_steps(step, net, opt, data)
    assert fingerprint(net, opt).diff(before) == []
    assert all(len(p._post_accumulate_grad_hooks or {}) == 0 for p in net.parameters())


# --------------------------------------------------------------------------- tracking


def test_optimizer_tracks_accepts_writes_that_keep_the_tensor() -> None:
    net, opt, _ = setup()
    net.fc1.weight.data = torch.ones(8, 4)
    with torch.no_grad():
        net.fc1.bias.copy_(torch.zeros(8))
    net.load_state_dict(net.state_dict())
    net.to(torch.float64)
    assert gk.assert_optimizer_tracks(net, opt).passed
    frozen = net.fc2.requires_grad_(False)
    assert gk.assert_optimizer_tracks(frozen, torch.optim.SGD(net.fc2.parameters(), lr=1))


def test_optimizer_tracks_names_both_sides_of_a_re_assignment() -> None:
    net, opt, _ = setup()
    net.fc1.weight = nn.Parameter(torch.ones(8, 4))
    with pytest.raises(gk.errors.TrainingLoopError) as err:
        gk.assert_optimizer_tracks(net, opt)
    assert kinds(err) == [("param_replaced", "fc1.weight")]
    text = str(err.value)
    assert "SGD still holds the old one (SGD.param_groups[0]['params'][0])" in text
    assert "model.fc1.weight.data = new" in text


def test_optimizer_tracks_lost_parameters_on_each_side() -> None:
    net, _, _ = setup()
    head_only = torch.optim.SGD(net.fc2.parameters(), lr=0.1)
    with pytest.raises(gk.errors.TrainingLoopError) as err:
        gk.assert_optimizer_tracks(net, head_only)
    assert kinds(err) == [
        ("param_not_in_optimizer", "fc1.weight"),
        ("param_not_in_optimizer", "fc1.bias"),
    ]
    assert gk.assert_optimizer_tracks(net, head_only, ignore="fc1.*")

    extra = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([*net.parameters(), extra], lr=0.1)
    with pytest.raises(gk.errors.TrainingLoopError) as err:
        gk.assert_optimizer_tracks(net, opt)
    assert kinds(err) == [("param_not_in_model", "SGD.param_groups[0]['params'][4]")]

    both = [torch.optim.SGD(net.parameters(), lr=0.1), torch.optim.Adam(net.fc2.parameters())]
    with pytest.raises(gk.errors.TrainingLoopError) as err:
        gk.assert_optimizer_tracks(net, both)
    assert kinds(err) == [
        ("param_in_two_optimizers", "fc2.weight"),
        ("param_in_two_optimizers", "fc2.bias"),
    ]
    assert "SGD #0 and Adam #1" in str(err.value)


# --------------------------------------------------------------------------- updated / frozen


def test_params_updated_passes_and_restores() -> None:
    net, opt, data = setup(momentum=0.9)

    def step() -> None:
        opt.zero_grad()
        loss_of(net, data[0]).backward()
        opt.step()

    before = fingerprint(net, opt)
    report = gk.assert_params_updated(net, step, optimizer=opt, steps=2)
    assert report.passed and report.check == "assert_params_updated"
    assert fingerprint(net, opt).diff(before) == []


def _step(
    net: Net, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], set_to_none: bool = True
) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad(set_to_none=set_to_none)
        loss_of(net, batch).backward()
        opt.step()

    return step


@pytest.mark.parametrize(
    ("bug", "expected", "phrase"),
    [
        ("detached", {"fc1.weight", "fc1.bias"}, "no backward pass reached"),
        ("frozen", {"fc1.weight", "fc1.bias"}, "requires_grad=False (it is frozen)"),
        ("lr 0", {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}, "nonzero gradient"),
        ("dead relu", {"fc1.weight", "fc1.bias", "fc2.weight"}, "exactly zero"),
        ("not in optimizer", {"fc1.weight", "fc1.bias"}, "no optimizer given as optimizer="),
    ],
)
def test_params_updated_says_why_a_parameter_did_not_change(
    bug: str, expected: set[str], phrase: str
) -> None:
    net, opt, data = setup()
    if bug == "detached":
        net.cut = True
    elif bug == "frozen":
        net.fc1.requires_grad_(False)
    elif bug == "lr 0":
        opt.param_groups[0]["lr"] = 0.0
    elif bug == "dead relu":
        with torch.no_grad():
            net.fc1.bias.fill_(-100.0)
    elif bug == "not in optimizer":
        opt = torch.optim.SGD(net.fc2.parameters(), lr=0.1)
    before = fingerprint(net, opt)
    with pytest.raises(gk.errors.TrainingLoopError) as err:
        gk.assert_params_updated(
            net, _step(net, opt, data[0]), optimizer=opt, params=["fc1.*", "fc2.*"]
        )
    assert {name for _, name in kinds(err)} == expected
    assert {kind for kind, _ in kinds(err)} == {"param_not_updated"}
    assert phrase in str(err.value)
    assert fingerprint(net, opt).diff(before) == []


def test_params_frozen_passes_for_a_real_freeze() -> None:
    net, _, data = setup()
    net.fc1.requires_grad_(False)
    opt = torch.optim.SGD((p for p in net.parameters() if p.requires_grad), lr=0.1)
    assert gk.assert_params_frozen(net, _step(net, opt, data[0]), optimizer=opt, steps=2)


@pytest.mark.parametrize(
    ("bug", "phrase"),
    [
        ("still trainable", "it has requires_grad=True"),
        ("stale grad and momentum", "yet the optimizer changed it"),
        ("written by step_fn", "yet step_fn changed it"),
    ],
)
def test_params_frozen_says_how_the_freeze_leaks(bug: str, phrase: str) -> None:
    net, opt, data = setup(momentum=0.9, weight_decay=0.1)
    step = _step(net, opt, data[0], set_to_none=False)
    if bug == "stale grad and momentum":
        step()  # fc1 gets a .grad and momentum, then is frozen
        opt.zero_grad(set_to_none=False)
        net.fc1.requires_grad_(False)
    elif bug == "written by step_fn":
        net.fc1.requires_grad_(False)
        opt = torch.optim.SGD(net.fc2.parameters(), lr=0.1)
        inner = _step(net, opt, data[0])

        def step() -> None:
            inner()
            with torch.no_grad():
                net.fc1.weight.mul_(0.5)

    with pytest.raises(gk.errors.TrainingLoopError) as err:
        gk.assert_params_frozen(net, step, optimizer=opt, params="fc1.weight")
    assert kinds(err) == [("param_changed", "fc1.weight")]
    assert phrase in str(err.value)


def test_parameter_selection_and_bad_arguments() -> None:
    net, opt, data = setup()
    step = _step(net, opt, data[0])
    with pytest.raises(gk.InvalidArgument, match=r"'fc9\.\*' match no parameter of Net"):
        gk.assert_params_updated(net, step, params=["fc1.*", "fc9.*"])
    with pytest.raises(gk.InvalidArgument, match="has no frozen"):
        gk.assert_params_frozen(net, step)
    with pytest.raises(gk.InvalidArgument, match="steps=0 must be >= 1"):
        gk.assert_params_updated(net, step, steps=0)
    with pytest.raises(gk.errors.InvalidArgumentType, match="params=3"):
        gk.assert_params_updated(net, step, params=3)  # type: ignore[arg-type]
    with pytest.raises(gk.errors.InvalidArgumentType, match=r"must be a torch\.optim\.Optimizer"):
        gk.assert_params_updated(net, step, optimizer=net)  # type: ignore[arg-type]
    with pytest.raises(gk.errors.InvalidArgumentType, match=r"must be a torch\.nn\.Module"):
        gk.assert_optimizer_tracks(opt, opt)  # type: ignore[arg-type]


def test_replacement_inside_step_fn() -> None:
    net, opt, data = setup()
    inner = _step(net, opt, data[0])

    def step() -> None:
        net.fc2.bias = nn.Parameter(torch.ones(2))
        inner()

    with pytest.raises(gk.errors.TrainingLoopError) as err:
        gk.assert_params_updated(net, step, optimizer=opt)
    assert ("param_replaced", "fc2.bias") in kinds(err)
    assert (
        isinstance(net.fc2.bias, nn.Parameter) and opt.param_groups[0]["params"][3] is net.fc2.bias
    )


def test_msg_and_publishing() -> None:
    net, opt, data = setup()
    net.cut = True
    seen: list[Any] = []
    unsubscribe = recording.subscribe(seen.append)
    try:
        with pytest.raises(gk.errors.TrainingLoopError, match=r"^in test X\n\n\[gradcheck\]"):
            gk.assert_params_updated(net, _step(net, opt, data[0]), msg="in test X")
        with pytest.raises(gk.errors.TrainingLoopError, match=r"^REWRITTEN$"):
            gk.assert_params_updated(net, _step(net, opt, data[0]), msg=lambda t: "REWRITTEN")
        gk.assert_optimizer_tracks(net, opt)
    finally:
        unsubscribe()
    assert [r.check for r in seen] == [
        "assert_params_updated",
        "assert_params_updated",
        "assert_optimizer_tracks",
    ]
    assert [r.passed for r in seen] == [False, False, True]
    for report in seen:
        data_ = json.loads(json.dumps(report.to_dict(), allow_nan=False))
        assert data_["kind"] == "training"
        assert gk.results.TrainingReport.from_dict(data_) == report


def test_finding_and_report_text_stand_on_their_own() -> None:
    finding = gk.results.TrainingFinding(
        "grad_not_reset",
        "fc1.weight",
        expected="a reset",
        found="none",
        cause="no zero_grad()",
        fix="call it",
        step=2,
        optimizer="SGD",
        location="train.py:3 in loop: `loss.backward()`",
        steps=(2, 3),
        occurrences=2,
    )
    assert finding.message.splitlines()[0] == (
        "Gradient not reset between optimizer steps: 'fc1.weight', at step 2 of SGD "
        "(seen 2 times: steps 2, 3)"
    )
    assert finding.message.splitlines()[-1] == "  At: train.py:3 in loop: `loss.backward()`"
    report = gk.results.TrainingReport(
        "Net", "watch_training", findings=(finding,), optimizer_steps=3
    )
    assert not report and not report.passed
    assert report.summary().startswith(
        "[gradcheck] Training loop check failed: 1 finding! (watch_training of 'Net': "
        "3 optimizer steps)\n\n1. Gradient not reset between optimizer steps: 'fc1.weight'"
    )
