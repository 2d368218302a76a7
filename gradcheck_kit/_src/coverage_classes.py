"""The custom autograd Functions and ``nn.Module`` classes a package defines.

The list that gradient coverage (``pytest --gradcheck-cov=PKG``) is measured
against: import the package, import each of its submodules
(:func:`pkgutil.walk_packages`), and keep every class whose ``__module__`` is
the package or lies under it, classes nested in classes included. Every such
subclass is listed, abstract bases too; a class whose own name starts with
``_`` is marked private. A submodule that fails to import is listed with its
error instead of stopping the listing; ``__main__`` modules are never imported
(importing one runs a program).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .coverage import FUNCTION, MODULE, Kind

__all__ = [
    "DefinedClass",
    "PackageClasses",
    "class_name",
    "classes_defined_in",
    "import_package",
    "in_package",
    "kind_of",
]


@dataclass(frozen=True)
class DefinedClass:
    """One class of the listing: its dotted name, kind and whether it is private."""

    name: str
    kind: Kind
    private: bool


@dataclass(frozen=True)
class PackageClasses:
    """What :func:`classes_defined_in` found in one package.

    ``import_errors`` maps each submodule that failed to import to
    ``"Type: first line of the message"``.
    """

    package: str
    classes: tuple[DefinedClass, ...]
    import_errors: dict[str, str] = field(default_factory=dict)


def class_name(cls: type) -> str:
    """The dotted name a class is listed and recorded under: ``module.QualName``.

    Examples:
        >>> class_name(torch.nn.Linear)
        'torch.nn.modules.linear.Linear'
    """
    return f"{cls.__module__}.{cls.__qualname__}"


def kind_of(obj: object) -> Kind | None:
    """``"function"`` for a custom Function class, ``"module"`` for an nn.Module class, else None.

    Examples:
        >>> kind_of(torch.nn.Linear), kind_of(torch.nn.Module), kind_of(int)
        ('module', None, None)
    """
    if not isinstance(obj, type):
        return None
    if issubclass(obj, torch.autograd.Function) and obj is not torch.autograd.Function:
        return FUNCTION
    if issubclass(obj, torch.nn.Module) and obj is not torch.nn.Module:
        return MODULE
    return None


def in_package(module_name: str, package: str) -> bool:
    """Whether ``module_name`` is ``package`` or one of its submodules (``a.b`` is not in ``a.bc``).

    Examples:
        >>> in_package("pkg.ops", "pkg"), in_package("pkg2.ops", "pkg")
        (True, False)
    """
    return module_name == package or module_name.startswith(package + ".")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def import_package(package: str) -> types.ModuleType:
    """Import ``package`` by its dotted name.

    Raises:
        ImportError: It does not import; the message names it and says why
            (any exception its import raised is turned into this one).

    Examples:
        >>> import_package("json").__name__
        'json'
    """
    try:
        return importlib.import_module(package)
    except Exception as exc:
        raise ImportError(f"cannot import {package!r}: {_first_line(exc)}") from exc


def _submodules(root: types.ModuleType, errors: dict[str, str]) -> Iterator[types.ModuleType]:
    yield root
    path = getattr(root, "__path__", None)
    if path is None:
        return

    def failed(name: str) -> None:
        errors[name] = _first_line(sys.exc_info()[1] or ImportError(name))

    for info in pkgutil.walk_packages(path, prefix=root.__name__ + ".", onerror=failed):
        if info.name.rpartition(".")[2] == "__main__" or info.name in errors:
            continue
        try:
            yield importlib.import_module(info.name)
        except Exception as exc:
            errors[info.name] = _first_line(exc)


def _classes_in(namespace: dict[str, object], package: str, seen: set[type]) -> Iterator[type]:
    """The package's classes in ``namespace`` and, recursively, in their class bodies."""
    for value in list(namespace.values()):
        if (
            isinstance(value, type)
            and value not in seen
            and in_package(str(getattr(value, "__module__", "")), package)
        ):
            seen.add(value)
            yield value
            yield from _classes_in(dict(vars(value)), package, seen)


def classes_defined_in(package: str) -> PackageClasses:
    """List the custom Functions and nn.Modules defined in ``package`` and its submodules.

    Args:
        package: A dotted module name, such as ``"mylib"`` or ``"mylib.ops"``.

    Returns:
        The classes sorted by name, each once however often it is re-exported.

    Raises:
        ImportError: ``package`` itself does not import.

    Examples:
        >>> found = classes_defined_in("torch.nn.modules.linear")
        >>> [c.name.rpartition(".")[2] for c in found.classes][:2]
        ['Bilinear', 'Identity']
    """
    root = import_package(package)
    errors: dict[str, str] = {}
    seen: set[type] = set()
    listed: dict[str, DefinedClass] = {}
    for module in _submodules(root, errors):
        for cls in _classes_in(dict(vars(module)), package, seen):
            kind = kind_of(cls)
            if kind is None:
                continue
            name = class_name(cls)
            listed[name] = DefinedClass(name, kind, cls.__name__.startswith("_"))
    classes = tuple(listed[name] for name in sorted(listed))
    return PackageClasses(package, classes, dict(sorted(errors.items())))
