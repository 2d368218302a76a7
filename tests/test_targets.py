"""Targets: resolving 'package.module:factory', normalising what factories return, running them."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from gradcheck_kit._src.errors import InvalidArgument
from gradcheck_kit._src.targets import (
    CheckTarget,
    TargetError,
    describe,
    is_target,
    load_targets,
    resolve_target,
    run_target,
    target,
    target_options,
)


def x64(n: int = 3) -> torch.Tensor:
    return torch.linspace(0.5, 1.5, n, dtype=torch.float64).requires_grad_()


@pytest.fixture
def target_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    package = tmp_path / "userpkg_targets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "grads.py").write_text(
        textwrap.dedent(
            """
            import torch

            def sine():
                return torch.sin, torch.ones(3, dtype=torch.float64, requires_grad=True)

            class Suite:
                @staticmethod
                def pair():
                    return [sine(), sine()]

            def broken():
                raise RuntimeError("dataset not found")

            CONSTANT = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userpkg_targets.grads"
    for name in [m for m in sys.modules if m.startswith("userpkg_targets")]:
        del sys.modules[name]


def test_resolves_module_colon_factory_and_dotted_attributes(target_module: str) -> None:
    assert resolve_target(f"{target_module}:sine").__name__ == "sine"
    assert resolve_target(f"{target_module}:Suite.pair").__name__ == "pair"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no_colon_here", "is not of the form 'package.module:factory'"),
        ("a.b:c;import os", "is not of the form"),
        ("__import__('os'):system", "is not of the form"),
        ("userpkg_missing_xyz:f", "cannot import module 'userpkg_missing_xyz'"),
    ],
)
def test_malformed_or_missing_names_are_explained(spec: str, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        resolve_target(spec)


def test_missing_attribute_lists_what_is_there(target_module: str) -> None:
    with pytest.raises(TargetError, match=r"has no attribute 'sinus'\. Names there: .*sine"):
        resolve_target(f"{target_module}:sinus")


def test_non_callable_attribute_is_not_a_factory(target_module: str) -> None:
    with pytest.raises(TargetError, match="is a int, not a factory"):
        resolve_target(f"{target_module}:CONSTANT")


def test_factory_that_raises_is_a_target_error_with_the_cause(target_module: str) -> None:
    factory = resolve_target(f"{target_module}:broken")
    with pytest.raises(TargetError, match="raised RuntimeError: dataset not found") as info:
        load_targets(factory)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value, InvalidArgument)


def test_every_accepted_return_shape_is_normalised() -> None:
    lin = nn.Linear(2, 1, dtype=torch.float64)

    def factory() -> object:
        return [
            (torch.sin, x64()),
            (lin, torch.ones(4, 2, dtype=torch.float64), {"wrt": "both"}),
            CheckTarget(torch.cos, x64(), name="cosine"),
            [(torch.tanh, x64())],
        ]

    items = load_targets(factory)
    assert [t.label for t in items] == ["sin", "Linear", "cosine", "tanh"]
    assert items[1].options == {"wrt": "both"}


@pytest.mark.parametrize(
    ("made", "match"),
    [
        (42, "returned a int"),
        ([], "returned nothing to check"),
        ((torch.sin, x64(), ["mode"]), "last item is a list"),
        ("torch.sin", "returned a str"),
    ],
)
def test_unusable_returns_are_explained(made: object, match: str) -> None:
    with pytest.raises(TargetError, match=match):
        load_targets(lambda: made)


def test_decorator_options_apply_and_yield_to_the_targets_own() -> None:
    @target(name="trig", mode="full", atol=1e-3)
    def trig() -> object:
        return [(torch.sin, x64()), CheckTarget(torch.cos, x64(), options={"atol": 1e-4})]

    assert is_target(trig) and target_options(trig) == {"mode": "full", "atol": 1e-3}
    first, second = load_targets(trig)
    assert first.name == "trig[0]" and first.options == {"mode": "full", "atol": 1e-3}
    assert second.options == {"mode": "full", "atol": 1e-4}


def test_bare_decorator_and_unknown_options() -> None:
    @target
    def plain() -> object:
        return torch.sin, x64()

    assert is_target(plain) and target_options(plain) == {}
    assert not is_target(print)
    with pytest.raises(InvalidArgument, match="unknown option\\(s\\) 'tolerance'"):
        target(tolerance=1e-3)
    with pytest.raises(TargetError, match="unknown option\\(s\\) 'wrt'"):
        load_targets(lambda: (torch.sin, x64(), {"wrt": "both"}))


def test_run_target_uses_session_defaults_under_the_targets_options() -> None:
    item = CheckTarget(torch.sin, x64(), options={"mode": "fast"})
    result = run_target(item, mode="full", dtype="float64", atol=None)
    assert result.passed and result.mode == "fast"
    module_item = CheckTarget(nn.Linear(3, 2, dtype=torch.float64), torch.ones(2, 3))
    assert run_target(module_item, mode="full").passed


def test_run_target_reports_a_wrong_gradient() -> None:
    class Half(torch.autograd.Function):
        @staticmethod
        def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
            return x * x

        @staticmethod
        def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
            return grad

    result = run_target(CheckTarget(Half.apply, x64(), name="half"))
    assert not result.passed


def test_describe_makes_repeated_labels_unique() -> None:
    items = [
        CheckTarget(torch.sin, x64()),
        CheckTarget(torch.sin, x64()),
        CheckTarget(torch.cos, x64()),
    ]
    assert describe(items) == ["sin[0]", "sin[1]", "cos"]
