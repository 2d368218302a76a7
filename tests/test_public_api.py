"""The public surface of ``gradcheck_kit``: every name in ``__all__`` is real and documented."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import gradcheck_kit

INIT = Path(gradcheck_kit.__file__)


def type_checking_imports(path: Path = INIT) -> dict[str, str]:
    """Name -> module of the imports under ``if TYPE_CHECKING:`` in ``path`` (``__init__.py``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                for alias in stmt.names:
                    # `import x as x` is the explicit re-export form mypy --strict wants.
                    assert alias.asname == alias.name, f"{alias.name} is not re-exported as itself"
                    found[alias.name] = stmt.module
    return found


def test_all_is_literal_sorted_and_unique() -> None:
    assert isinstance(gradcheck_kit.__all__, list)
    assert len(set(gradcheck_kit.__all__)) == len(gradcheck_kit.__all__)
    assert "__version__" not in gradcheck_kit.__all__


def test_lazy_table_type_checking_block_and_all_agree() -> None:
    lazy = gradcheck_kit._LAZY_IMPORTS
    assert set(lazy) == set(gradcheck_kit.__all__)
    assert type_checking_imports() == lazy


def test_dir_lists_the_public_names() -> None:
    assert set(gradcheck_kit.__all__) <= set(dir(gradcheck_kit))


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'check_gradient'"):
        gradcheck_kit.check_gradient  # noqa: B018 - the attribute access is the test


def test_version_is_the_installed_distribution() -> None:
    try:
        expected = importlib.metadata.version("gradcheck-kit")
    except importlib.metadata.PackageNotFoundError:
        expected = "0.0.0"
    assert gradcheck_kit.__version__ == expected


@pytest.mark.parametrize("name", gradcheck_kit.__all__)
def test_public_name_resolves_to_its_module(name: str) -> None:
    value = getattr(gradcheck_kit, name)
    module = gradcheck_kit._LAZY_IMPORTS[name]
    assert value is getattr(sys.modules[module], name)
    if inspect.isclass(value) and issubclass(value, (BaseException, Warning)):
        # Exceptions and warnings say where users import them from, in tracebacks too.
        assert value.__module__ == "gradcheck_kit.errors"
    elif inspect.isclass(value) or inspect.isfunction(value):
        assert value.__module__ == module


@pytest.mark.parametrize("name", gradcheck_kit.__all__)
def test_public_name_has_a_docstring_example(name: str) -> None:
    value = getattr(gradcheck_kit, name)
    if not (inspect.isclass(value) or inspect.isroutine(value)):
        # Constants (SCHEMA_VERSION) cannot carry a docstring of their own.
        return
    doc = inspect.getdoc(value) or ""
    assert "Examples:" in doc, f"{name} has no 'Examples:' section in its docstring"
    assert ">>> " in doc.split("Examples:", 1)[1], f"{name}'s Examples: section shows no >>> line"


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from gradcheck_kit import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(gradcheck_kit.__all__)


def test_importing_the_package_is_cheap() -> None:
    code = "import sys, gradcheck_kit\nprint('torch' in sys.modules, gradcheck_kit.__version__)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", gradcheck_kit.__version__]


@pytest.mark.parametrize("name", gradcheck_kit.__all__)
def test_public_name_is_documented_in_the_readme(name: str) -> None:
    readme = (INIT.parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"`{name}" in readme, f"{name} is public but the README never mentions it"
