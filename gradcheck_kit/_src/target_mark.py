"""The attribute that marks a target factory; torch-free, so the pytest plugin can read it.

The plugin looks at every name in every test module; importing the checks there
would import torch into every test run of every project.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TARGET_ATTRIBUTE", "target_spec"]

TARGET_ATTRIBUTE = "__gradcheck_target__"


def target_spec(obj: object) -> dict[str, Any] | None:
    """The ``{"name", "options"}`` recorded by ``@gradcheck_kit.target``, else None.

    Examples:
        >>> target_spec(print) is None
        True
    """
    spec = getattr(obj, TARGET_ATTRIBUTE, None) if callable(obj) else None
    return spec if isinstance(spec, dict) else None
