"""The exception of the drop-in: torch's GradcheckError and this package's GradientMismatchError.

Kept apart from :mod:`.errors`, which imports no torch.
"""

from __future__ import annotations

from torch.autograd.gradcheck import GradcheckError as _TorchGradcheckError

from .errors import GradientMismatchError

__all__ = ["TorchGradcheckError"]


class TorchGradcheckError(_TorchGradcheckError, GradientMismatchError):
    """What :func:`gradcheck_kit.gradcheck` and ``gradgradcheck`` raise on a wrong gradient.

    Both ``torch.autograd.gradcheck.GradcheckError`` (a :class:`RuntimeError`, so a
    suite's ``pytest.raises(RuntimeError)`` around a known-bad case still catches
    it) and :class:`~gradcheck_kit.GradientMismatchError` (an
    :class:`AssertionError`, which pytest shows as a test failure). The message is
    this package's report; the full result is ``.result``.

    Examples:
        >>> from torch.autograd.gradcheck import GradcheckError
        >>> err = TorchGradcheckError("Gradients are not close!")
        >>> isinstance(err, GradcheckError), isinstance(err, AssertionError)
        (True, True)
    """

    def __init__(self, message: str, result: object | None = None) -> None:
        GradientMismatchError.__init__(self, message, result)


TorchGradcheckError.__module__ = "gradcheck_kit.errors"
