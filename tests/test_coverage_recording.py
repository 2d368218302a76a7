"""What the checks record as exercised: the graph walk, the module hook, the listing.

Library-level tests (no pytest session): :mod:`gradcheck_kit._src.coverage`
and :mod:`gradcheck_kit._src.coverage_classes`.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src import coverage
from gradcheck_kit._src.coverage_classes import classes_defined_in, import_package


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        (x,) = ctx.saved_tensors
        return Twice.apply(x) * g  # a Function used in backward only


class Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return 2 * x

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        return 2 * g


class Outer(torch.autograd.Function):
    """Runs Twice inside its forward, where no graph is recorded."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return Twice.apply(x) + 1

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def, override]
        return 2 * g


class SquareNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Square.apply(self.linear(x))


def x64() -> torch.Tensor:
    return torch.randn(3, dtype=torch.float64, requires_grad=True)


@pytest.fixture
def seen() -> Iterator[list[tuple[str, str]]]:
    names: list[tuple[str, str]] = []
    stop = coverage.listen(lambda kind, cls: names.append((kind, cls.__name__)))
    yield names
    stop()


# ---------------------------------------------------------------- the graph walk


def test_the_walk_finds_a_function_nested_inside_a_module() -> None:
    out = SquareNet()(x64())
    assert coverage.functions_in_graph(out) == {Square}


def test_the_walk_sees_a_function_in_backward_only_in_the_graph_of_the_gradient() -> None:
    x = x64()
    out = Square.apply(x).sum()
    assert coverage.functions_in_graph(out) == {Square}
    (grad,) = torch.autograd.grad(out, x, create_graph=True)
    assert Twice in coverage.functions_in_graph(grad)


def test_the_walk_leaves_out_a_function_run_inside_another_ones_forward() -> None:
    assert coverage.functions_in_graph(Outer.apply(x64())) == {Outer}


def test_the_walk_ignores_non_tensor_leaves_and_outputs_without_a_graph() -> None:
    assert coverage.functions_in_graph({"a": 1, "b": "text", "c": torch.ones(2)}) == set()
    with torch.no_grad():
        assert coverage.functions_in_graph(Square.apply(x64())) == set()


def test_the_walk_goes_through_a_long_chain_without_recursion() -> None:
    y = x64()
    for _ in range(5000):
        y = Twice.apply(y) * 0.5
    assert coverage.functions_in_graph(y) == {Twice}


# ---------------------------------------------------------------- what checks record


def test_a_check_records_the_function_it_differentiates(seen: list[tuple[str, str]]) -> None:
    assert gk.check_gradients(Outer.apply, x64()).passed
    assert seen == [("function", "Outer")]


def test_a_module_check_records_the_module_its_submodules_and_their_functions(
    seen: list[tuple[str, str]],
) -> None:
    assert gk.check_module_gradients(SquareNet(), x64()).passed
    assert sorted(seen) == [("function", "Square"), ("module", "Linear"), ("module", "SquareNet")]


def test_a_second_order_check_records_the_function_used_in_backward(
    seen: list[tuple[str, str]],
) -> None:
    assert gk.check_second_order(Square.apply, x64()).passed
    assert sorted(set(seen)) == [("function", "Square"), ("function", "Twice")]


def test_an_audit_and_a_manual_check_record_their_function(seen: list[tuple[str, str]]) -> None:
    assert gk.check_autograd_function(Twice, x64(), second_order=False).passed
    assert seen == [("function", "Twice")]
    seen.clear()
    manual = gk.check_matches_manual(
        lambda x: Twice.apply(x).sum(), lambda x: torch.full_like(x, 2.0), x64()
    )
    assert manual.passed
    assert seen == [("function", "Twice")]


def test_code_outside_a_check_records_nothing(seen: list[tuple[str, str]]) -> None:
    SquareNet()(x64()).sum().backward()
    assert seen == []


def test_the_module_hook_lives_only_while_a_check_runs(seen: list[tuple[str, str]]) -> None:
    hooks = torch.nn.modules.module._global_forward_pre_hooks
    before = len(hooks)
    with coverage.exercised():
        assert len(hooks) == before + 1
        with coverage.exercised():  # a nested check shares it
            assert len(hooks) == before + 1
    assert len(hooks) == before


def test_modules_are_watched_for_the_first_calls_of_the_users_code_only(
    seen: list[tuple[str, str]],
) -> None:
    hooks = torch.nn.modules.module._global_forward_pre_hooks
    before = len(hooks)
    with coverage.exercised():
        for _ in range(coverage.WATCHED_CALLS):
            assert len(hooks) == before + 1
            coverage.note_outputs(nn.Tanh()(x64()))
        # later calls repeat the first ones: no module call pays for the hook any more
        assert len(hooks) == before
        nn.ReLU()(x64())
    assert seen == [("module", "Tanh")]


def test_without_a_listener_a_check_installs_no_hook() -> None:
    hooks = torch.nn.modules.module._global_forward_pre_hooks
    before = dict(hooks)
    with coverage.exercised():
        assert dict(hooks) == before


def test_the_hook_is_removed_when_the_check_raises(seen: list[tuple[str, str]]) -> None:
    hooks = torch.nn.modules.module._global_forward_pre_hooks
    before = len(hooks)

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        gk.check_gradients(broken, x64())
    assert len(hooks) == before


def test_each_class_is_told_once_per_check(seen: list[tuple[str, str]]) -> None:
    net = SquareNet()
    with coverage.exercised():
        for _ in range(3):
            coverage.note_outputs(net(x64()))
    assert sorted(seen) == [("function", "Square"), ("module", "Linear"), ("module", "SquareNet")]


# ---------------------------------------------------------------- the listing

PACKAGE = {
    "__init__.py": "from .ops import Square\n",
    "ops.py": """
        import torch

        class Square(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * x

        class _Private(torch.autograd.Function):
            pass

        class Holder:
            class Nested(torch.nn.Module):
                pass

        Alias = torch.nn.Linear  # defined in torch, not here
    """,
    "sub/__init__.py": "",
    "sub/nets.py": "import torch\n\nclass Net(torch.nn.Module):\n    pass\n",
    "broken.py": "raise ValueError('no config file')\n",
    "__main__.py": "raise SystemExit('must not run')\n",
}


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"listed_{tmp_path.name.replace('-', '_')}"
    for path, text in PACKAGE.items():
        target = tmp_path / name / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_the_listing_finds_every_function_and_module_once(package: str) -> None:
    found = classes_defined_in(package)
    listed = {(c.name.removeprefix(package + "."), c.kind, c.private) for c in found.classes}
    assert listed == {
        ("ops.Square", "function", False),
        ("ops._Private", "function", True),
        ("ops.Holder.Nested", "module", False),
        ("sub.nets.Net", "module", False),
    }
    assert list(found.import_errors) == [f"{package}.broken"]
    assert found.import_errors[f"{package}.broken"] == "ValueError: no config file"


def test_the_listing_of_a_subpackage_stays_inside_it(package: str) -> None:
    found = classes_defined_in(f"{package}.sub")
    assert [c.name for c in found.classes] == [f"{package}.sub.nets.Net"]


def test_a_package_that_does_not_import_is_named() -> None:
    with pytest.raises(ImportError, match="cannot import 'no_such_package_xyz': ModuleNotFound"):
        import_package("no_such_package_xyz")
