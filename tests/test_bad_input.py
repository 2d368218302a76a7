"""Misuse gets a clear, typed error before anything runs, and leaves the inputs alone."""

from __future__ import annotations

import pytest
import torch

import gradcheck_kit as gk


def x64(n: int = 3) -> torch.Tensor:
    return torch.randn(n, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "exact"}, "mode='exact' is not one of"),
        ({"dtype": "float16"}, "dtype='float16' is not one of"),
        ({"rng": "random"}, "rng='random' is not one of"),
        ({"eps": -1e-3}, "eps=-0.001 must be > 0"),
        ({"eps": 0.0}, "eps=0.0 must be > 0"),
        ({"atol": -1.0}, "atol=-1.0 must be"),
        ({"rtol": float("nan")}, "rtol=nan must be"),
        ({"seed": -1}, "seed=-1 must be >= 0"),
        ({"seed": 1.5}, "seed=1.5 must be an int"),
        ({"n_probes": 0}, "n_probes=0 must be >= 1"),
    ],
)
def test_bad_options_name_argument_and_value(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(gk.InvalidArgument, match=match.replace("(", r"\(")):
        gk.check_gradients(torch.sin, x64(), **kwargs)  # type: ignore[arg-type]


def test_not_callable() -> None:
    with pytest.raises(gk.InvalidArgument, match="not callable"):
        gk.check_gradients(x64(), x64())  # type: ignore[arg-type]


def test_non_tensor_inputs_are_explained() -> None:
    with pytest.raises(gk.InvalidArgument, match="must be a tensor, a tuple/list"):
        gk.check_gradients(torch.sin, 3.0)
    with pytest.raises(gk.InvalidArgument, match="NumPy array"):
        import numpy as np

        gk.check_gradients(torch.sin, (np.ones(3),))


def test_nothing_requires_grad() -> None:
    x = torch.randn(3, dtype=torch.float64)
    with pytest.raises(gk.InvalidArgument, match=r"nothing to check.*requires_grad_\(\)"):
        gk.check_gradients(torch.sin, x)
    with pytest.raises(gk.InvalidArgument, match="nothing to check"):
        gk.check_gradients(lambda i: i * 2.0, torch.arange(3))


def test_empty_input_is_an_error_only_when_asked() -> None:
    empty = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    with pytest.raises(gk.InvalidArgument, match=r"every checked input is empty \(input \(0,\)\)"):
        gk.check_gradients(torch.sin, empty, empty="error")
    assert gk.check_gradients(torch.sin, empty).status == "empty"


def test_sparse_and_complex_are_unsupported() -> None:
    sparse = torch.eye(3, dtype=torch.float64).to_sparse().requires_grad_()
    with pytest.raises(gk.errors.UnsupportedInputError, match="sparse"):
        gk.check_gradients(lambda s: s.to_dense(), sparse)
    z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
    with pytest.raises(gk.errors.UnsupportedInputError, match="complex"):
        gk.check_gradients(lambda t: t.abs(), z)


def test_non_tensor_and_non_floating_outputs() -> None:
    with pytest.raises(gk.InvalidArgument, match=r"output\[1\] is float"):
        gk.check_gradients(lambda t: (t.sin(), 3.0), x64())
    with pytest.raises(gk.InvalidArgument, match="no floating-point tensor"):
        gk.check_gradients(lambda t: t.argmax(), x64())


def test_nan_and_inf_outputs() -> None:
    x = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(gk.errors.NonFiniteOutputError, match=r"output is nan at index \(1,\)"):
        gk.check_gradients(torch.log, x)
    with pytest.raises(gk.errors.NonFiniteOutputError, match="inf"):
        gk.check_gradients(lambda t: 1 / (t - 1), x)


def test_user_exception_propagates_with_a_note_and_nothing_changes() -> None:
    x = x64()
    before = x.detach().clone()

    def broken(t: torch.Tensor) -> torch.Tensor:
        raise KeyError("boom")

    with pytest.raises(KeyError) as info:
        gk.check_gradients(broken, x)
    assert any("gradcheck_kit" in n for n in getattr(info.value, "__notes__", []))
    assert torch.equal(x, before) and x.grad is None and x.requires_grad


def test_error_hierarchy() -> None:
    assert issubclass(gk.GradientMismatchError, AssertionError)
    assert issubclass(gk.errors.NondeterministicFunctionError, AssertionError)
    assert issubclass(gk.InvalidArgument, ValueError)
    assert not issubclass(gk.InvalidArgument, AssertionError)
    for cls in (
        gk.errors.UnsupportedInputError,
        gk.errors.NonFiniteOutputError,
        gk.errors.JacobianTooLargeError,
    ):
        assert issubclass(cls, gk.InvalidArgument)


def test_module_misuse() -> None:
    with pytest.raises(gk.InvalidArgument, match=r"must be a torch\.nn\.Module"):
        gk.check_module_gradients(torch.sin, x64())  # type: ignore[arg-type]
    with pytest.raises(gk.InvalidArgument, match="no trainable parameters"):
        gk.check_module_gradients(torch.nn.ReLU(), x64())
    with pytest.raises(gk.InvalidArgument, match="wrt='everything' is not one of"):
        gk.check_module_gradients(torch.nn.Linear(3, 1), x64(), wrt="everything")  # type: ignore[arg-type]


def test_all_outputs_empty_is_explained() -> None:
    expected = r"every output fn returns is empty \(output \(0,\)\)"
    with pytest.raises(gk.InvalidArgument, match=expected):
        gk.check_gradients(lambda a: a[:0] * 2, x64(), empty="error")
