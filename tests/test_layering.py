"""The import graph of gradcheck_kit points down only (STYLE.md, section 2).

adapters (pytest_plugin, cli, report, strategies) -> checks -> core. The core
and the checks import no test or report library; the modules a report needs
import no torch; the pytest entry point imports no torch at run time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import gradcheck_kit

PACKAGE_DIR = Path(gradcheck_kit.__file__).resolve().parent
ROOT = "gradcheck_kit"

# Libraries only the adapters may use.
ADAPTER_LIBRARIES = ("pytest", "_pytest", "hypothesis", "jinja2", "pytest_benchmark", "xdist")
# The adapters themselves.
ADAPTER_MODULES = (
    "gradcheck_kit.pytest_plugin",
    "gradcheck_kit.cli",
    "gradcheck_kit.report",
    "gradcheck_kit.strategies",
    "gradcheck_kit.__main__",
)
# The checks layer of _src (STYLE.md); the core must not import it.
CHECK_MODULES = tuple(
    f"gradcheck_kit._src.{name}"
    for name in (
        "gradcheck",
        "manual",
        "training",
        "graph",
        "devices",
        "asserts",
        "autograd_function",
        "second_order",
        "trajectories",
        "targets",
        "function_forward",
    )
)
CORE_MODULES = tuple(
    f"gradcheck_kit._src.{name}"
    for name in (
        "engine",
        "compat",
        "state",
        "undo",
        "results",
        "errors",
        "messages",
        "recording",
        "validation",
        "raising",
    )
)
# What a report or a results file needs must load on a machine without torch.
TORCH_FREE_MODULES = (
    "gradcheck_kit._src.results",
    "gradcheck_kit._src.messages",
    "gradcheck_kit._src.recording",
    "gradcheck_kit._src.errors",
    "gradcheck_kit._src.raising",
    "gradcheck_kit._src.validation",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_from(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` statement in ``package`` imports from."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: str, *, runtime_only: bool = False) -> set[str]:
    """Every module name `module` may import, resolved to absolute names.

    ``from a import b`` yields both ``a`` and ``a.b``, since ``b`` may be a module.
    ``importlib.import_module("x")`` / ``__import__("x")`` with a literal count too.
    With ``runtime_only``, imports under ``if TYPE_CHECKING:`` are left out.
    """
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if runtime_only and _is_type_checking_block(node):
            assert isinstance(node, ast.If)
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _imported_from(node, package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (
                name in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
        for sub in ast.iter_child_nodes(node):
            visit(sub)

    visit(tree)
    return found


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _internal_closure(module: str) -> dict[str, list[str]]:
    """Modules of the package that importing `module` runs, each with the chain that leads to it."""
    chains: dict[str, list[str]] = {}
    todo = [(module, [module])]
    while todo:
        name, chain = todo.pop()
        if name in chains:
            continue
        chains[name] = chain
        # Importing a.b.c runs a/__init__ and a/b/__init__ first.
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        for dep in [*parents, *imports_of(name, runtime_only=True)]:
            if dep in MODULES and dep not in chains:
                todo.append((dep, [*chain, dep]))
    return chains


SRC_MODULES = sorted(m for m in MODULES if m.startswith("gradcheck_kit._src"))


def test_the_walk_sees_the_package() -> None:
    # Guards the tests below against passing vacuously on an empty walk.
    assert "gradcheck_kit._src.results" in MODULES
    assert "gradcheck_kit.pytest_plugin.plugin" in MODULES
    assert "gradcheck_kit._src.recording" in imports_of("gradcheck_kit.pytest_plugin.session")


def test_relative_imports_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODULES, "gradcheck_kit._src._layering_probe", tmp_path / "probe.py")
    (tmp_path / "probe.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            from . import results
            from ..pytest_plugin import plugin
            from .. import cli
            if TYPE_CHECKING:
                import torch
            def later():
                import importlib
                importlib.import_module("jinja2")
            """
        ),
        encoding="utf-8",
    )
    found = imports_of("gradcheck_kit._src._layering_probe")
    assert {
        "gradcheck_kit._src.results",
        "gradcheck_kit.pytest_plugin.plugin",
        "gradcheck_kit.cli",
        "torch",
        "jinja2",
    } <= found
    assert "torch" not in imports_of("gradcheck_kit._src._layering_probe", runtime_only=True)


@pytest.mark.parametrize("module", SRC_MODULES)
def test_src_imports_no_adapter_library_or_module(module: str) -> None:
    upward = sorted(
        name
        for name in imports_of(module)
        if _matches(name, ADAPTER_LIBRARIES) or _matches(name, ADAPTER_MODULES)
    )
    assert not upward, f"{module} (core/checks) imports adapter code: {upward}"


# Packages of the core (engine, state) count with every module inside them.
@pytest.mark.parametrize("module", [m for m in MODULES if _matches(m, CORE_MODULES)])
def test_core_imports_no_check(module: str) -> None:
    upward = sorted(name for name in imports_of(module) if _matches(name, CHECK_MODULES))
    assert not upward, f"{module} (core) imports the checks layer: {upward}"


@pytest.mark.parametrize("module", TORCH_FREE_MODULES)
def test_modules_a_report_needs_import_no_torch(module: str) -> None:
    if module not in MODULES:
        pytest.skip(f"{module} is not written yet")
    offenders = {
        dep: chain
        for dep, chain in _internal_closure(module).items()
        if any(_matches(name, ("torch",)) for name in imports_of(dep, runtime_only=True))
    }
    assert not offenders, "imports torch: " + "; ".join(
        " -> ".join(chain) for chain in offenders.values()
    )


@pytest.mark.parametrize(
    "module",
    [m for m in MODULES if _matches(m, ("gradcheck_kit.report",))] or ["gradcheck_kit.report"],
)
def test_report_imports_no_torch_and_no_pytest(module: str) -> None:
    if module not in MODULES:
        pytest.skip("gradcheck_kit.report is not written yet")
    offenders = sorted(
        name
        for dep in _internal_closure(module)
        for name in imports_of(dep, runtime_only=True)
        if _matches(name, ("torch", "pytest", "_pytest"))
    )
    assert not offenders, f"{module} needs {offenders}; a report renders from JSON alone"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_package_imports_no_test_code(module: str) -> None:
    # Test-only helpers (tests/support/) stay out of the installed package.
    found = sorted(n for n in imports_of(module) if _matches(n, ("support", "tests")))
    assert not found, f"{module} imports test code: {found}"


def test_plugin_and_package_import_leaves_torch_out() -> None:
    code = (
        "import sys\n"
        "import gradcheck_kit.pytest_plugin.plugin\n"
        "import gradcheck_kit\n"
        "import gradcheck_kit.pytest_plugin.session\n"
        "dir(gradcheck_kit)\n"
        "heavy = ('torch', 'numpy', 'hypothesis', 'jinja2')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_lazy_public_name_does_import_its_module() -> None:
    # The other side of the test above: the lazy import is real, not a stub.
    code = (
        "import sys, gradcheck_kit\n"
        "before = 'gradcheck_kit._src.errors' in sys.modules\n"
        "cls = gradcheck_kit.InvalidArgument\n"
        "print(before, 'gradcheck_kit._src.errors' in sys.modules, cls.__module__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "gradcheck_kit.errors"]


def _private_names_used(module: str) -> list[str]:
    """Underscore names ``module`` takes from other modules of the package.

    ``from .x import _name`` and ``x._name`` where ``x`` was imported from the
    package both count; the package's own dunders do not.
    """
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    own_modules: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = _imported_from(node, package)
        if not _matches(base, (ROOT,)):
            continue
        for alias in node.names:
            if f"{base}.{alias.name}" in MODULES:
                own_modules.add(alias.asname or alias.name)
            elif alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"from {base} import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in own_modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_uses_another_modules_private_names(module: str) -> None:
    # A name another module needs is public inside the package (no underscore), as the
    # engine's are; a private one is free to change with its own module.
    assert not _private_names_used(module), _private_names_used(module)


def test_the_private_name_walk_finds_what_it_should(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(MODULES, "gradcheck_kit._src._layering_probe", tmp_path / "probe.py")
    (tmp_path / "probe.py").write_text(
        "from .state import _bits, preserved\nfrom . import recording\nrecording._listeners\n",
        encoding="utf-8",
    )
    found = _private_names_used("gradcheck_kit._src._layering_probe")
    assert found == ["from gradcheck_kit._src.state import _bits", "recording._listeners"]


def _import_cycle() -> list[str]:
    """One cycle of run-time imports between the package's modules (lazy ones too), or []."""
    graph = {
        m: sorted(d for d in imports_of(m, runtime_only=True) if d in MODULES and d != m)
        for m in MODULES
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = 1
        for dep in graph[module]:
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep, [*path, dep])):
                return found
        state[module] = 2
        return []

    for module in graph:
        if module not in state and (found := visit(module, [module])):
            return found
    return []


def test_no_import_circle() -> None:
    # results are data and messages words them (torch.testing's ErrorMeta, formatted at the
    # boundary): a summary() that imported messages lazily made the circle this guards against
    cycle = _import_cycle()
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_messages_import_the_result_types_only_for_annotations() -> None:
    runtime = imports_of("gradcheck_kit._src.messages", runtime_only=True)
    from_results = {n for n in runtime if n.startswith("gradcheck_kit._src.results.")}
    assert from_results == {"gradcheck_kit._src.results.summarizes"}
    assert "gradcheck_kit._src.messages" not in imports_of("gradcheck_kit._src.results")


def test_the_cycle_walk_finds_a_lazy_circle(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, other in (("a", "b"), ("b", "a")):
        probe = tmp_path / f"{name}.py"
        probe.write_text(f"def later():\n    from . import _probe_{other}\n", encoding="utf-8")
        monkeypatch.setitem(MODULES, f"gradcheck_kit._src._probe_{name}", probe)
    cycle = _import_cycle()
    assert set(cycle) == {"gradcheck_kit._src._probe_a", "gradcheck_kit._src._probe_b"}
