"""The ``Reproduce:`` line of a failed check: Python that re-runs it when pasted.

A check knows its function object; a person pasting a line into a shell in the
project root knows nothing. So the line names the function by an import that
works from there (``from tests.test_ops import cube``), loads the inputs the
check saved (``torch.load("reports/gradcheck-inputs/....pt")``) and calls the
``assert_*`` twin with the numbers the check used, so that it fails the same
way. A function that no import reaches (a lambda, a closure) is named by its
file and line, and the line says it must be re-created first.

Pure introspection and text: imports no torch.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FunctionReference", "function_reference", "reproduce_statement"]


@dataclass(frozen=True)
class FunctionReference:
    """How a pasted line reaches a function (or a class): an import, or where to find it.

    Attributes:
        expression: The Python expression naming it once imported (``cube``,
            ``torch.sin``, ``Square.apply``), or the name to bind by hand (``fn``).
        imports: The import statement that makes ``expression`` work, ``""`` if none.
        importable: Whether ``imports`` reaches the very object from the project root.
        where: ``path/to/file.py:LINE`` of its source when known, else ``None``.
        label: How messages name it: ``module:qualname`` or ``<lambda> at file:line``.

    Examples:
        >>> import math
        >>> ref = function_reference(math.cos)
        >>> ref.imports, ref.expression, ref.importable
        ('from math import cos', 'cos', True)
    """

    expression: str
    imports: str
    importable: bool
    where: str | None
    label: str


def _relative(path: str, root: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators, or as given when outside it."""
    try:
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:
        return path


def _source_location(obj: Any, root: Path) -> str | None:
    code = getattr(obj, "__code__", None)
    if code is not None:
        return f"{_relative(code.co_filename, root)}:{code.co_firstlineno}"
    try:
        file = inspect.getsourcefile(obj)
    except TypeError:
        return None
    if file is None:
        return None
    try:
        _, line = inspect.getsourcelines(obj)
    except (OSError, TypeError):  # a class made at run time, renamed: its file is still a lead
        return _relative(file, root)
    return f"{_relative(file, root)}:{line}"


def _resolve(module: Any, qualname: str) -> Any:
    value = module
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def _same(found: Any, obj: Any) -> bool:
    # Built-in methods of a module compare equal without being one object.
    return found is obj or (inspect.isbuiltin(obj) and found == obj)


def _import_name(module_name: str, root: Path) -> str | None:
    """The name that imports ``module_name``'s file from ``root``, or ``None``.

    pytest imports ``tests/test_x.py`` as the top-level module ``test_x`` (it puts
    ``tests/`` on ``sys.path``); a shell in the project root imports it as
    ``tests.test_x`` (a namespace package). Names already qualified by a package
    are kept: their package is importable the way it was imported.
    """
    if module_name == "__main__":
        return None
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if "." in module_name or file is None:
        return module_name
    relative = _relative(file, root)
    if relative == file or not relative.endswith(".py"):
        return module_name  # outside the project: installed, importable by its name
    parts = relative[: -len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or not all(part.isidentifier() for part in parts):
        return None
    return ".".join(parts)


def function_reference(
    obj: Any, *, root: Path | None = None, name: str = "fn"
) -> FunctionReference:
    """Say how a line pasted in ``root`` reaches ``obj``: an import, or its file and line.

    Args:
        obj: A function, built-in, class or ``Function.apply``.
        root: The project root paths are written relative to (default: the current folder).
        name: The name to bind by hand when no import reaches ``obj``.

    Returns:
        A :class:`FunctionReference`.

    Examples:
        >>> ref = function_reference(lambda x: x)
        >>> ref.importable, ref.expression, ref.label.startswith("<lambda> at ")
        (False, 'fn', True)
    """
    root = Path(os.path.abspath(root if root is not None else os.getcwd()))
    owner = getattr(obj, "__self__", None)
    if isinstance(owner, type):  # MyFunction.apply: import the class, then take the method
        ref = function_reference(owner, root=root, name=name)
        attribute = getattr(obj, "__name__", "apply")
        if ref.importable:
            return FunctionReference(
                f"{ref.expression}.{attribute}",
                ref.imports,
                True,
                ref.where,
                f"{ref.label}.{attribute}",
            )
        label = f"{owner.__qualname__}.{attribute}"
        where = _source_location(owner, root)
        return FunctionReference(name, "", False, where, f"{label} at {where}" if where else label)
    where = _source_location(obj, root)
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if isinstance(module_name, str) and isinstance(qualname, str) and "<" not in qualname:
        module = sys.modules.get(module_name)
        import_name = _import_name(module_name, root)
        for candidate in (qualname, getattr(obj, "__name__", "")):
            try:
                found = _resolve(module, candidate) if module is not None and candidate else None
            except AttributeError:
                continue
            if import_name is not None and found is not None and _same(found, obj):
                head = candidate.partition(".")[0]
                imports = f"from {import_name} import {head}"
                if import_name == head:  # a module named like its only member
                    imports = f"import {head}"
                if module_name == "torch" and candidate == getattr(obj, "__name__", ""):
                    return FunctionReference(
                        f"torch.{candidate}", "import torch", True, where, f"torch:{candidate}"
                    )
                return FunctionReference(
                    candidate, imports, True, where, f"{import_name}:{candidate}"
                )
    shown = getattr(obj, "__name__", None) or type(obj).__name__
    if not isinstance(shown, str) or "<" not in shown:
        shown = f"{qualname or shown}"
    label = f"{shown} at {where}" if where else str(shown)
    return FunctionReference(name, "", False, where, label)


def _literal(value: Any) -> str:
    # repr of a float round-trips; the line must re-run with the very same numbers.
    return repr(value)


def reproduce_statement(
    call: str,
    subject: FunctionReference,
    settings: Mapping[str, Any],
    *,
    load: str | None,
    extra: Mapping[str, FunctionReference | str] | None = None,
    binds: str = "fn",
    prelude: tuple[str, ...] = (),
) -> str:
    """One line of statements, separated by ``;``, that re-runs a failed check.

    Args:
        call: The ``assert_*`` function to call (``assert_gradients_close``).
        subject: What is checked (:func:`function_reference`).
        settings: Keyword arguments written as literals (mode, dtype, eps, ...).
        load: The expression that loads the saved inputs
            (``torch.load('reports/gradcheck-inputs/t.pt')``); ``None`` when they
            were not saved (the line then uses ``inputs`` and says how to get them).
        extra: More keyword arguments naming objects (``loss_fn``): a reference,
            or the source text of the value.
        binds: The name bound to the subject when it must be re-created by hand.
        prelude: Statements to run after the imports (re-creating a module).

    Returns:
        The line, without the ``Reproduce:`` label.

    Examples:
        >>> import math
        >>> line = reproduce_statement("assert_gradients_close", function_reference(math.cos),
        ...     {"mode": "full"}, load="torch.load('t.pt')")
        >>> for statement in line.split("; "):
        ...     print(statement)
        import torch, gradcheck_kit
        from math import cos
        inputs = torch.load('t.pt')
        gradcheck_kit.assert_gradients_close(cos, inputs, mode='full')
    """
    imports = ["import torch, gradcheck_kit"]
    missing: list[str] = []
    arguments: list[str] = []
    references = [(binds, subject)]
    for key, value in (extra or {}).items():
        if isinstance(value, FunctionReference):
            references.append((key, value))
            arguments.append(f"{key}={value.expression}")
        else:
            arguments.append(f"{key}={value}")
    for bound, ref in references:
        if ref.importable:
            if ref.imports and ref.imports not in imports:
                imports.append(ref.imports)
        else:
            missing.append(f"{bound} ({ref.label})")
    statements = [*imports, *prelude]
    if load is not None:
        statements.append(f"inputs = {load}")
    arguments += [f"{key}={_literal(value)}" for key, value in settings.items()]
    statements.append(f"gradcheck_kit.{call}({subject.expression}, inputs, {', '.join(arguments)})")
    line = "; ".join(statements)
    comments = []
    if missing:
        comments.append("re-create before pasting: " + ", ".join(missing))
    if load is None:
        comments.append(
            "inputs: the check's inputs (pytest --gradcheck saves them; "
            "gradcheck_kit.save_failure_inputs(inputs, path) by hand)"
        )
    return line + ("  # " + "; ".join(comments) if comments else "")
