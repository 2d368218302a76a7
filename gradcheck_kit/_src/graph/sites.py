"""Where in the user's code: the first frame outside gradcheck_kit, torch and contextlib.

A message names the user's own line (``train.py:12 in train: `loss.backward()```)
and the user's own variable names (``'x'``, ``'b'``); both come from walking the
call stack past the library's frames. The graph checks and the training
watcher use it; it knows nothing of either.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
import types
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch

__all__ = ["SourceSite", "is_library_file", "local_names", "site_of", "user_frame", "user_site"]

# Frames in these files are the toolkit's or torch's, never the user's line. This file
# sits in gradcheck_kit/_src/graph/: three levels up is the package.
_LIBRARY_DIRS: Final = (
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep,
    os.path.dirname(os.path.abspath(torch.__file__)) + os.sep,
)
_LIBRARY_FILES: Final = frozenset({os.path.abspath(contextlib.__file__)})


@dataclass(frozen=True)
class SourceSite:
    """A line of the user's code: where a hook fired or an operation ran.

    Examples:
        >>> site = SourceSite("train.py", 12, "train", "loss.backward()")
        >>> str(site)
        'train.py:12 in train: `loss.backward()`'
    """

    filename: str
    lineno: int
    function: str
    code: str | None = None

    def __str__(self) -> str:
        where = f"{_short_path(self.filename)}:{self.lineno} in {self.function}"
        return f"{where}: `{self.code}`" if self.code else where


def _short_path(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # another drive on Windows
        return filename
    return filename if rel.startswith(".." + os.sep) else rel


def is_library_file(filename: str) -> bool:
    """Whether a frame in ``filename`` is gradcheck_kit's, torch's or contextlib's.

    Examples:
        >>> is_library_file(torch.__file__), is_library_file("train.py")
        (True, False)
    """
    path = os.path.abspath(filename)
    return path.startswith(_LIBRARY_DIRS) or path in _LIBRARY_FILES


def user_frame(depth: int = 1) -> types.FrameType | None:
    """The innermost frame outside the library, from ``depth`` frames above the caller's.

    ``depth=0`` starts at the caller's own frame; a helper that is itself called
    by the code to be located passes 1.

    Examples:
        >>> user_frame(0).f_code.co_name
        '<module>'
    """
    frame: types.FrameType | None = sys._getframe(depth + 1)
    while frame is not None and is_library_file(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def site_of(frame: types.FrameType) -> SourceSite:
    """The :class:`SourceSite` of the line ``frame`` is running, with its source text.

    Examples:
        >>> import sys
        >>> site_of(sys._getframe()).function
        '<module>'
    """
    code = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip() or None
    return SourceSite(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, code)


def user_site() -> SourceSite | None:
    """The innermost frame of the call stack outside gradcheck_kit, torch and contextlib.

    Called from a hook, this is the user's ``loss.backward()`` or
    ``optimizer.step()`` line. Costs a walk up the stack: call it when
    something is to be reported, not on every hook call.

    Returns:
        A :class:`SourceSite`, or ``None`` when every frame is library code
        (e.g. a backward pass running on an autograd device thread).

    Examples:
        >>> user_site().function
        '<module>'
    """
    frame = user_frame(1)
    return None if frame is None else site_of(frame)


def local_names() -> dict[int, str]:
    """Map id -> variable name, for the tensors and arrays bound in the calling user frame.

    Examples:
        >>> import torch
        >>> weights = torch.ones(2)
        >>> local_names()[id(weights)]
        'weights'
    """
    frame = user_frame(1)
    if frame is None:
        return {}
    names: dict[int, str] = {}
    for key, value in frame.f_locals.items():
        if isinstance(value, (torch.Tensor, np.ndarray)) and not key.startswith("_"):
            names.setdefault(id(value), key)
    return names
