"""The shims for differences between torch releases give torch's own answers on each of them."""

from __future__ import annotations

import torch

from gradcheck_kit._src import compat
from gradcheck_kit._src.engine.memory import AllocationCounter
from gradcheck_kit._src.undo import WriteLog


def test_default_device_survives_set_default_device_none() -> None:
    # set_default_device(None) leaves some releases' get_default_device broken
    try:
        torch.set_default_device("meta")
        assert compat.default_device() == torch.device("meta")
        torch.set_default_device(None)
        assert compat.default_device() == torch.device("cpu")
    finally:
        torch.set_default_device(None)


def test_backward_through_a_complex_scalar_product_runs_under_the_dispatch_modes() -> None:
    # Some torch releases hand a dispatch mode autograd's conj of the wrapped
    # Python complex as a plain `complex`; the modes must still give torch's gradient.
    def grad() -> torch.Tensor:
        x = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64, requires_grad=True)
        y = torch.fft.rfft(x) * (1 + 2j)
        (g,) = torch.autograd.grad((y.real * y.imag).sum(), x)
        return g

    expected = grad()
    with WriteLog():
        assert torch.equal(grad(), expected)
    with AllocationCounter():
        assert torch.equal(grad(), expected)
