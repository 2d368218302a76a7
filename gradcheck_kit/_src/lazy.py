"""Lazy public modules (PEP 562): a name is imported from its ``_src`` module on first use.

``gradcheck_kit``, ``gradcheck_kit.errors`` and ``gradcheck_kit.results`` re-export
names whose modules import torch; importing the public module must not (the pytest
plugin imports the package in every test run). Each keeps a literal ``__all__``, a
table of name -> defining module, the same imports under ``if TYPE_CHECKING:`` for
type checkers, and the ``__getattr__`` and ``__dir__`` that :func:`attach` makes
(as scientific-python's ``lazy_loader.attach`` does). Moved names keep working for a
release with a :class:`DeprecationWarning` that names their new home.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Moved", "attach"]


@dataclass(frozen=True)
class Moved:
    """Where a deprecated public name now lives, and from which release it goes away.

    Examples:
        >>> Moved("gradcheck_kit.errors", "TrainingLoopError").replacement
        'gradcheck_kit.errors.TrainingLoopError'
    """

    module: str
    name: str
    removed_in: str = "0.3"

    @property
    def replacement(self) -> str:
        """The new dotted name."""
        return f"{self.module}.{self.name}"


def _probed_by_from_import() -> bool:
    """Whether the caller of ``__getattr__`` is ``from package import name``'s first probe.

    For a package, ``from gradcheck_kit import X`` first asks ``hasattr`` in
    importlib's ``_handle_fromlist`` (is X a submodule?), then reads the attribute:
    warning at both would report one import twice.
    """
    caller = sys._getframe(2).f_code
    return caller.co_name == "_handle_fromlist" and "importlib" in caller.co_filename


def attach(
    module_name: str,
    namespace: dict[str, Any] | None,
    lazy: Mapping[str, str],
    *,
    moved: Mapping[str, Moved] | None = None,
    submodules: frozenset[str] = frozenset(),
    listed: tuple[str, ...] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__``: public names on first use, moved ones warn.

    Args:
        module_name: The public module's ``__name__``.
        namespace: Its ``globals()``: a public name is cached there once imported,
            so that the next lookup is an ordinary attribute access; ``None``
            caches nothing. Moved names are never cached, so that every module
            that still uses one hears of it.
        lazy: Public name -> the ``_src`` module that defines it.
        moved: Deprecated name -> where it lives now.
        submodules: Public submodules, imported on first attribute access.
        listed: More names for ``dir()`` (``__version__``); moved names are not listed.

    Returns:
        The functions to assign to the module's ``__getattr__`` and ``__dir__``.

    Examples:
        >>> getattr_, dir_ = attach("demo", {}, {"dumps": "json"},
        ...                         moved={"old_dumps": Moved("json", "dumps")})
        >>> getattr_("dumps").__name__, dir_()
        ('dumps', ['dumps'])
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = getattr_("old_dumps")
        >>> print(caught[0].message)
        demo.old_dumps is deprecated and will be removed in 0.3: use json.dumps instead.
    """
    moved = dict(moved or {})

    def __getattr__(name: str) -> Any:
        if name in lazy:
            value = getattr(importlib.import_module(lazy[name]), name)
            if namespace is not None:
                namespace[name] = value
            return value
        if name in submodules:
            return importlib.import_module(f"{module_name}.{name}")
        where = moved.get(name)
        if where is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        if not _probed_by_from_import():
            warnings.warn(
                f"{module_name}.{name} is deprecated and will be removed in "
                f"{where.removed_in}: use {where.replacement} instead.",
                DeprecationWarning,
                stacklevel=2,
            )
        return getattr(importlib.import_module(where.module), where.name)

    def __dir__() -> list[str]:
        return sorted([*lazy, *submodules, *listed])

    __getattr__.__doc__ = f"Import a public name of {module_name} on first use (PEP 562)."
    __dir__.__doc__ = "The public names, although most are not imported yet."
    return __getattr__, __dir__
