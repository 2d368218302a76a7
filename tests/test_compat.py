"""The feature-detection shims give the same answers with and without the torch feature."""

from __future__ import annotations

import collections
from typing import Any, NamedTuple

import pytest
import torch

from gradcheck_kit._src import compat


class Pair(NamedTuple):
    x: Any
    y: Any


TREES: dict[str, tuple[Any, list[str]]] = {
    "tuple of dict and list": (
        ({"a": 1, "b": [2, 3]}, 4),
        ["[0]['a']", "[0]['b'][0]", "[0]['b'][1]", "[1]"],
    ),
    "namedtuple": (Pair(1, [2]), [".x", ".y[0]"]),
    "OrderedDict": (collections.OrderedDict(q=1, p=2), ["['q']", "['p']"]),
    "defaultdict": (collections.defaultdict(list, a=[1, 2]), ["['a'][0]", "['a'][1]"]),
    "non-str keys": ({1: 2, "x": (3,)}, ["[1]", "['x'][0]"]),
    "None leaf": ((None, 1), ["[0]", "[1]"]),
    "torch.return_types": (torch.max(torch.ones(2, 3), 0), ["[0]", "[1]"]),
    "empty": ((), []),
}


@pytest.mark.parametrize("name", TREES)
@pytest.mark.parametrize("torch_paths", [True, False], ids=["torch key paths", "spec walk"])
def test_paths_are_spelled_like_keystr(
    name: str, torch_paths: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if torch_paths and not compat.HAS_TREE_PATHS:
        pytest.skip("this torch's pytree has no tree_flatten_with_path/keystr")
    monkeypatch.setattr(compat, "HAS_TREE_PATHS", torch_paths)
    tree, expected = TREES[name]
    pairs, spec = compat.flatten_with_paths(tree)
    assert [p for p, _ in pairs] == expected
    leaves = [leaf for _, leaf in pairs]
    assert leaves == torch.utils._pytree.tree_leaves(tree)
    # the spec is torch's own: it rebuilds the tree
    rebuilt = torch.utils._pytree.tree_unflatten(leaves, spec)
    assert type(rebuilt) is type(tree)


def test_none_stays_a_leaf() -> None:
    x = torch.ones(1)
    assert compat.flatten_keeping_none((x, None, [None, x])) == [x, None, None, x]


def test_default_device_survives_set_default_device_none() -> None:
    # set_default_device(None) leaves some releases' get_default_device broken
    try:
        torch.set_default_device("meta")
        assert compat.default_device() == torch.device("meta")
        torch.set_default_device(None)
        assert compat.default_device() == torch.device("cpu")
    finally:
        torch.set_default_device(None)


def test_backward_through_a_complex_scalar_product_runs_under_the_dispatch_modes() -> None:
    # Some torch releases hand a dispatch mode autograd's conj of the wrapped
    # Python complex as a plain `complex`; the modes must still give torch's gradient.
    from gradcheck_kit._src.engine.memory import AllocationCounter
    from gradcheck_kit._src.undo import WriteLog

    def grad() -> torch.Tensor:
        x = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64, requires_grad=True)
        y = torch.fft.rfft(x) * (1 + 2j)
        (g,) = torch.autograd.grad((y.real * y.imag).sum(), x)
        return g

    expected = grad()
    with WriteLog():
        assert torch.equal(grad(), expected)
    with AllocationCounter():
        assert torch.equal(grad(), expected)
