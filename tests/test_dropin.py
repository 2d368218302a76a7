"""gradcheck_kit.gradcheck / gradgradcheck behave as torch's, and honour every option."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from torch.autograd.function import once_differentiable
from torch.autograd.gradcheck import GradcheckError

from gradcheck_kit import GradientMismatchError, InvalidArgument, gradcheck, gradgradcheck
from gradcheck_kit._src import dropin, dropin_checks, recording
from gradcheck_kit.errors import TorchGradcheckError, UnsupportedInputError


def _x(n: int = 3, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(n, generator=gen, dtype=torch.float64) + 0.5).mul(scale).requires_grad_()


def _scaled(factor: float) -> Any:
    """``2 x`` whose backward returns ``2 * factor * g``."""

    class Scaled(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            return 2 * factor * g

    return Scaled.apply


def _published(fn: Any) -> list[Any]:
    seen: list[Any] = []
    stop = recording.subscribe(seen.append)
    try:
        fn()
    finally:
        stop()
    return seen


# -- signatures and verdicts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(gradcheck, torch.autograd.gradcheck), (gradgradcheck, torch.autograd.gradgradcheck)],
)
def test_signature_is_torchs(ours: Any, theirs: Any) -> None:
    def shape(f: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    assert shape(ours) == shape(theirs)


def test_unknown_keyword_is_a_type_error_like_torch() -> None:
    with pytest.raises(TypeError, match="fastmode"):
        gradcheck(torch.sin, (_x(),), fastmode=True)  # type: ignore[call-arg]


def test_pass_returns_true_and_publishes_a_gradcheck_result() -> None:
    seen = _published(lambda: gradcheck(torch.sin, (_x(),)))
    assert [r.check for r in seen] == ["gradcheck"]
    assert seen[0].passed
    assert gradgradcheck(torch.tanh, (_x(),)) is True


def test_failure_raises_torchs_error_and_ours_with_our_message() -> None:
    with pytest.raises(RuntimeError) as info:
        gradcheck(_scaled(1.5), (_x(),))
    err = info.value
    assert isinstance(err, GradcheckError)
    assert isinstance(err, GradientMismatchError)
    assert isinstance(err, TorchGradcheckError)
    assert "Gradients are not close!" in str(err)
    assert err.result is not None and err.result.check == "gradcheck"
    assert "gradcheck_kit.gradcheck(" in str(err)  # the reproduce line is the drop-in's


def test_raise_exception_false_returns_false() -> None:
    assert gradcheck(_scaled(1.5), (_x(),), raise_exception=False) is False
    assert gradgradcheck(lambda t: t.detach() * t, (_x(),), raise_exception=False) is False


# -- eps, atol, rtol, fast_mode ----------------------------------------------------------------


def test_eps_is_absolute_as_in_torch() -> None:
    x = _x(scale=1000.0)  # a relative step would move each entry by about 1e-3
    moves: list[float] = []

    def spy(t: torch.Tensor) -> torch.Tensor:
        d = (t.detach() - x.detach()).abs()
        moves.extend(float(v) for v in d[d > 0])
        return t**2

    assert gradcheck(spy, (x,), eps=1e-6)
    assert moves and max(moves) < 1e-5


def test_atol_is_torchs_absolute_tolerance() -> None:
    wrong = _scaled(1 + 5e-5)  # off by 1e-4 per entry
    assert gradcheck(wrong, (_x(),), atol=1e-3, rtol=0.0)
    assert not gradcheck(wrong, (_x(),), atol=1e-6, rtol=0.0, raise_exception=False)


def test_rtol_is_torchs_relative_tolerance() -> None:
    wrong = _scaled(1.01)
    assert gradcheck(wrong, (_x(),), atol=0.0, rtol=0.05)
    assert not gradcheck(wrong, (_x(),), atol=0.0, rtol=1e-3, raise_exception=False)


@pytest.mark.parametrize(("fast_mode", "mode"), [(True, "fast"), (False, "full")])
def test_fast_mode_picks_the_mode(fast_mode: bool, mode: str) -> None:
    seen = _published(lambda: gradcheck(torch.sin, (_x(),), fast_mode=fast_mode))
    assert seen[0].mode == mode


# -- nondet_tol --------------------------------------------------------------------------------


def test_nondet_tol_allows_that_much_noise_in_the_outputs() -> None:
    def noisy(t: torch.Tensor) -> torch.Tensor:
        return 2 * t + 1e-12 * torch.rand((), dtype=t.dtype)

    assert not gradcheck(noisy, (_x(),), raise_exception=False)
    assert gradcheck(noisy, (_x(),), nondet_tol=1e-10)


def test_nondet_tol_allows_that_much_noise_in_backward() -> None:
    class NoisyBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return 2 * x

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            return 2 * g * (1 + 1e-12 * torch.rand_like(g))

    with pytest.raises(GradcheckError, match="not reentrant"):
        gradcheck(NoisyBackward.apply, (_x(),))
    assert gradcheck(NoisyBackward.apply, (_x(),), nondet_tol=1e-10)


# -- check_undefined_grad, check_grad_dtypes ---------------------------------------------------


class _NoneUnsafe(torch.autograd.Function):
    """Right derivative, but its backward crashes on an undefined grad_output."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.set_materialize_grads(False)
        return 2 * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * 2


@pytest.mark.parametrize("function", [_NoneUnsafe])
def test_check_undefined_grad(function: Any) -> None:
    with pytest.raises(GradcheckError, match="undefined"):
        gradcheck(function.apply, (_x(),))
    assert gradcheck(function.apply, (_x(),), check_undefined_grad=False)


def test_check_grad_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    # autograd itself casts gradients to their inputs' dtypes, so a wrong dtype is
    # planted where the check reads the gradients
    real = dropin_checks._grads

    def float32_grads(*args: Any, **kw: Any) -> tuple[Any, ...]:
        return tuple(g.float() if g is not None else g for g in real(*args, **kw))

    monkeypatch.setattr(dropin_checks, "_grads", float32_grads)
    assert gradcheck(torch.sin, (_x(),))
    with pytest.raises(GradcheckError, match="check_grad_dtypes"):
        gradcheck(torch.sin, (_x(),), check_grad_dtypes=True)


# -- batched, forward mode ---------------------------------------------------------------------


class _DataDependentBackward(torch.autograd.Function):
    """Right derivative; its backward branches on a value, which vmap cannot batch."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        if bool(g.abs().sum() >= 0):
            return 2 * g
        return g


def test_check_batched_grad() -> None:
    assert gradcheck(_DataDependentBackward.apply, (_x(),))
    with pytest.raises(GradcheckError, match="vmap"):
        gradcheck(_DataDependentBackward.apply, (_x(),), check_batched_grad=True)


class _WithJvp(torch.autograd.Function):
    """``2 x`` with a jvp that branches on a value and a backward off by ``factor``."""

    factor = 1.0

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @classmethod
    def backward(cls, ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return 2 * cls.factor * g

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        if bool(t.abs().sum() >= 0):
            return 2 * t
        return t


class _WrongBackward(_WithJvp):
    factor = 1.5


def test_check_batched_forward_grad() -> None:
    assert gradcheck(_WithJvp.apply, (_x(),), check_forward_ad=True)
    with pytest.raises(GradcheckError, match="vmap"):
        gradcheck(_WithJvp.apply, (_x(),), check_forward_ad=True, check_batched_forward_grad=True)


def test_check_forward_ad_requires_forward_mode() -> None:
    assert gradcheck(_NoneUnsafe.apply, (_x(),), check_undefined_grad=False)
    with pytest.raises(GradcheckError, match="forward-mode AD does not run"):
        gradcheck(_NoneUnsafe.apply, (_x(),), check_undefined_grad=False, check_forward_ad=True)


def test_check_backward_ad_false_compares_forward_mode_only() -> None:
    with pytest.raises(GradcheckError):
        gradcheck(_WrongBackward.apply, (_x(),))
    assert gradcheck(_WrongBackward.apply, (_x(),), check_forward_ad=True, check_backward_ad=False)


def test_check_backward_ad_false_still_finds_a_wrong_jvp() -> None:
    class WrongJvp(torch.autograd.Function):
        @staticmethod
        def forward(x: torch.Tensor) -> torch.Tensor:
            return 2 * x

        @staticmethod
        def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
            pass

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            return 2 * g

        @staticmethod
        def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
            return 3 * t

    with pytest.raises(GradcheckError):
        gradcheck(WrongJvp.apply, (_x(),), check_forward_ad=True, check_backward_ad=False)


# -- misuse, masked ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"check_forward_ad": False, "check_backward_ad": False},
        {"check_batched_grad": True, "check_backward_ad": False, "check_forward_ad": True},
        {"check_batched_forward_grad": True},
    ],
)
def test_contradictory_options_are_misuse(options: dict[str, bool]) -> None:
    with pytest.raises(InvalidArgument):
        gradcheck(torch.sin, (_x(),), **options)


@pytest.mark.parametrize("masked", [None, True, False])
def test_sparse_inputs_name_masked(masked: bool | None) -> None:
    sparse = torch.eye(3, dtype=torch.float64).to_sparse().requires_grad_()
    with pytest.raises(UnsupportedInputError, match="masked"):
        gradcheck(lambda s: s.to_dense(), (sparse,), masked=masked)


# -- gradgradcheck -----------------------------------------------------------------------------


def test_gradgradcheck_fails_a_once_differentiable_backward() -> None:
    class Once(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return x**2

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return 2 * x * g

    assert gradcheck(Once.apply, (_x(),))
    with pytest.raises(RuntimeError):
        gradgradcheck(Once.apply, (_x(),))


class _AbsGradOutput(torch.autograd.Function):
    """``2 x`` whose backward detaches negative grad_outputs: double backward loses them."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return torch.where(g > 0, 2 * g, 2 * g.detach())


def test_gradgradcheck_uses_the_given_grad_outputs() -> None:
    x = _x()
    positive = torch.full((3,), 0.7, dtype=torch.float64, requires_grad=True)
    negative = torch.full((3,), -0.7, dtype=torch.float64, requires_grad=True)
    assert gradgradcheck(_AbsGradOutput.apply, (x,), (positive,), check_undefined_grad=False)
    assert not gradgradcheck(
        _AbsGradOutput.apply, (x,), (negative,), check_undefined_grad=False, raise_exception=False
    )
    seen = _published(
        lambda: gradgradcheck(_AbsGradOutput.apply, (x,), (positive,), check_undefined_grad=False)
    )
    assert [r.check for r in seen] == ["gradgradcheck"]


def test_gen_non_contig_grad_outputs() -> None:
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    made = dropin._grad_outputs(torch.sin, (x,), None, True)
    assert not made[0].is_contiguous() and made[0].shape == (2, 3)
    assert dropin._grad_outputs(torch.sin, (x,), None, False)[0].is_contiguous()
    assert gradgradcheck(torch.sin, (x,), gen_non_contig_grad_outputs=True)


class _NoJvp(torch.autograd.Function):
    """``x * 2`` without forward-mode support (used inside another backward)."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * 2

    @staticmethod
    def backward(ctx: Any, h: torch.Tensor) -> torch.Tensor:
        return h * 2


class _BackwardWithoutJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _NoJvp.apply(g) * x


def test_check_fwd_over_rev_requires_forward_mode_through_backward() -> None:
    assert gradgradcheck(_BackwardWithoutJvp.apply, (_x(),), check_undefined_grad=False)
    with pytest.raises(GradcheckError, match="forward-mode"):
        gradgradcheck(
            _BackwardWithoutJvp.apply, (_x(),), check_undefined_grad=False, check_fwd_over_rev=True
        )


class _RightJvpWrongDoubleBackward(torch.autograd.Function):
    """``x ** 2`` whose backward ``2 g x`` goes through a Function with a wrong backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.x = x
        return x**2

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _WrongBackward.apply(g) * x

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        return 2 * ctx.x * t


def test_check_rev_over_rev_false_skips_double_backward() -> None:
    f = _RightJvpWrongDoubleBackward.apply
    assert gradcheck(f, (_x(),), check_undefined_grad=False)
    with pytest.raises(GradcheckError):
        gradgradcheck(f, (_x(),), check_undefined_grad=False)
    assert gradgradcheck(
        f, (_x(),), check_undefined_grad=False, check_fwd_over_rev=True, check_rev_over_rev=False
    )


def test_a_nan_output_fails_as_in_torch() -> None:
    x = _x()
    with pytest.raises(GradcheckError, match="nan"):
        gradcheck(lambda t: t * float("nan"), (x,))
    assert gradcheck(lambda t: t * float("nan"), (x,), raise_exception=False) is False
