"""Graph and grad-mode checks (scenarios 2, 3): graph_nodes, no_graph, detach, reach, memory."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from _schemas import validate_results
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradcheck_kit as gk
from gradcheck_kit._src import recording


def scenario_2() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 4, generator=gen), torch.randn(4, 1, generator=gen)
    w = torch.randn(4, 1, generator=gen).requires_grad_()
    b = torch.randn(1, generator=gen).requires_grad_()
    return {"x": x, "y": y, "w": w, "b": b}


# --------------------------------------------------------------------------- graph_nodes


def test_graph_nodes_of_scenario_3() -> None:
    x = torch.ones(2, 2, requires_grad=True)
    y = x + 2
    z = y * y * 3
    out = z.mean()
    assert gk.graph_nodes(y) == ["AddBackward0", "AccumulateGrad"]
    assert gk.graph_nodes(out) == [
        "MeanBackward0",
        "MulBackward0",
        "MulBackward0",
        "AddBackward0",
        "AccumulateGrad",
    ]
    out.backward()
    assert torch.equal(x.grad, torch.full((2, 2), 4.5))


def test_graph_nodes_lists_a_shared_node_once_after_all_its_consumers() -> None:
    x = torch.ones(3, requires_grad=True)
    s = x.sin()
    out = (s.exp() + s.cos()).sum()
    assert gk.graph_nodes(out) == [
        "SumBackward0",
        "AddBackward0",
        "ExpBackward0",
        "CosBackward0",
        "SinBackward0",
        "AccumulateGrad",
    ]


def test_graph_nodes_of_tensors_without_a_graph() -> None:
    w = torch.ones(2, requires_grad=True)
    assert gk.graph_nodes(w) == []
    with torch.no_grad():
        assert gk.graph_nodes(w * 2) == []
    assert gk.graph_nodes((w * 2).detach()) == []
    with pytest.raises(
        gk.errors.InvalidArgumentType, match=r"output=\[1\] must be a torch\.Tensor"
    ):
        gk.graph_nodes([1])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- scenario 2


def test_scenario_2_which_tensors_get_gradients() -> None:
    t = scenario_2()
    x, y, w, b = t["x"], t["y"], t["w"], t["b"]
    gk.assert_grad_is_none(x, y, w, b)
    loss = (torch.matmul(x, w) + b - y).pow(2).sum()
    loss.backward()
    gk.assert_grad_is_none(x, y)
    gk.assert_requires_grad(w, b)
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_grad_is_none(x, w)
    text = str(err.value)
    assert text.startswith("[gradcheck] Tensors have a gradient! (assert_grad_is_none, 1 of 2")
    assert "'w'.grad is a float32 tensor of shape (4, 1)" in text
    assert "'x'" not in text.split("\n", 1)[1]


def test_scenario_2_detach_cuts_exactly_b() -> None:
    t = scenario_2()
    x, y, w = t["x"], t["y"], t["w"]
    b = t["b"].detach()
    gk.assert_detached(b)
    loss = (torch.matmul(x, w) + b - y).pow(2).sum()
    loss.backward()
    gk.assert_grad_is_none(b)
    gk.assert_graph_reaches(loss, {"w": w})
    with pytest.raises(gk.errors.GraphCheckError, match="'b'") as err:
        gk.assert_graph_reaches(loss, {"w": w, "b": t["b"]})
    assert "does not reach 1 of 2 tensors" in str(err.value)
    assert "pass a function instead of the output" in str(err.value)


def test_scenario_2_no_grad_builds_no_graph() -> None:
    t = scenario_2()
    x, w, b = t["x"], t["w"], t["b"]
    y_pred = torch.matmul(x, w) + b
    with torch.no_grad():
        y_eval = torch.matmul(x, w) + b
    assert gk.assert_no_graph(y_eval) is y_eval
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_no_graph({"y_pred": y_pred, "y_eval": y_eval})
    text = str(err.value)
    assert "'y_pred' requires grad (grad_fn=<AddBackward0>)" in text
    assert "y_eval" not in text


def test_names_come_from_the_callers_variables_dicts_and_modules() -> None:
    lin = nn.Linear(2, 2)
    lin.bias.requires_grad_(False)
    with pytest.raises(gk.errors.GraphCheckError, match="'bias'"):
        gk.assert_requires_grad(lin)
    with pytest.raises(gk.errors.GraphCheckError, match="'frozen_bias'"):
        gk.assert_requires_grad({"frozen_bias": lin.bias})
    my_input = torch.zeros(3)
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_requires_grad(my_input)
    assert "'my_input'" in str(err.value)
    assert "created without requires_grad=True" in str(err.value)
    with torch.inference_mode():
        inf = torch.ones(1)
    with pytest.raises(gk.errors.GraphCheckError, match="inference_mode"):
        gk.assert_requires_grad(inf)


def test_grad_of_a_non_leaf_is_read_without_torchs_warning() -> None:
    w = torch.ones(2, requires_grad=True)
    h = w * 2
    h.sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gk.assert_grad_is_none(h)
    h2 = w * 3
    h2.retain_grad()
    h2.sum().backward()
    with pytest.raises(gk.errors.GraphCheckError, match="'h2'"):
        gk.assert_grad_is_none(h2)


def test_assert_detached_failure_names_both_kinds() -> None:
    b = torch.ones(1, requires_grad=True)
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_detached(b, {"product": b * 2})
    text = str(err.value)
    assert "'b' is a leaf that requires grad" in text
    assert "'product' is part of an autograd graph (grad_fn=<MulBackward0>)" in text
    assert "b = b.detach()" in text


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: gk.assert_detached(), gk.InvalidArgument, "at least one tensor"),
        (lambda: gk.assert_detached(3), gk.errors.InvalidArgumentType, "argument 0=3"),
        (
            lambda: gk.assert_grad_is_none([torch.ones(1), "x"]),
            gk.errors.InvalidArgumentType,
            r"\[1\]",
        ),
        (lambda: gk.assert_requires_grad(nn.ReLU()), gk.InvalidArgument, "no parameters"),
        (lambda: gk.assert_no_graph(torch.ones(1), 2), gk.errors.InvalidArgumentType, "no further"),
        (lambda: gk.assert_detached(torch.ones(1), msg=3), gk.errors.InvalidArgumentType, "msg=3"),
        (lambda: gk.assert_shares_memory([1], [1]), gk.errors.InvalidArgumentType, "NumPy array"),
        (
            lambda: gk.assert_graph_reaches(3, torch.ones(1)),
            gk.errors.InvalidArgumentType,
            "output=3",
        ),
        (
            lambda: gk.assert_graph_reaches(torch.ones(1), nn.Linear(1, 1).requires_grad_(False)),
            gk.InvalidArgument,
            "no parameter that requires grad",
        ),
    ],
)
def test_misuse_is_an_invalid_argument(call: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()  # type: ignore[operator]


def test_msg_prefix_and_rewrite() -> None:
    w = torch.ones(1, requires_grad=True)
    with pytest.raises(gk.errors.GraphCheckError, match=r"^after epoch 2\n\n\[gradcheck\]"):
        gk.assert_detached(w, msg="after epoch 2")
    with pytest.raises(gk.errors.GraphCheckError, match=r"^X$"):
        gk.assert_detached(w, msg=lambda text: "X")


# --------------------------------------------------------------------------- assert_no_graph(fn)


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x).relu())


def test_no_graph_for_an_evaluation_under_no_grad_or_inference_mode() -> None:
    model, x = Model(), torch.randn(3, 4)

    @torch.no_grad()
    def evaluate(m: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return m(inputs)

    out = gk.assert_no_graph(evaluate, model, x)
    assert out.shape == (3, 2)
    gk.assert_no_graph(torch.inference_mode()(model), x)


def test_no_graph_names_the_first_operation_and_its_line() -> None:
    model, x = Model(), torch.randn(3, 4)
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_no_graph(lambda: model(x).detach())  # the graph is built, then dropped
    text = str(err.value)
    assert "torch.nn.functional.linear created AddmmBackward0 at " in text
    assert "test_graph_checks.py" in text and "return self.fc2(self.fc1(x).relu())" in text
    assert "output tensor(s) require grad" not in text


def test_no_graph_sees_a_backward_and_the_grads_it_changed() -> None:
    model, x = Model(), torch.randn(3, 4)

    def evaluate_and_oops() -> torch.Tensor:
        out = model(x)
        out.sum().backward()
        return out.detach()

    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_no_graph(evaluate_and_oops)
    text = str(err.value)
    assert "torch.Tensor.backward ran during the evaluation at " in text
    assert "out.sum().backward()" in text
    assert ".grad changed during the evaluation for 'a leaf float32 Parameter" in text


# --------------------------------------------------------------------------- reachability


class Cut(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 2)
        self.spare = nn.Linear(2, 2)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x).relu()
        if self.how == "detach":
            h = h.detach()
        elif self.how == "data":
            h = h.data
        elif self.how == "no_grad":
            with torch.no_grad():
                h = h * 2
        elif self.how == "argmax":
            h = h.argmax(dim=1, keepdim=True).float().expand(-1, 8)
        elif self.how == "item":
            h = torch.full((x.shape[0], 8), h.mean().item())
        return self.fc2(h)


@pytest.mark.parametrize(
    ("how", "phrase"),
    [
        ("detach", "detach returns a tensor without autograd history"),
        ("data", "data.__get__ returns a tensor without autograd history"),
        ("no_grad", "mul ran with grad mode off"),
        ("argmax", "argmax gives an integer or boolean result"),
        ("item", "left autograd through .item()"),
    ],
)
def test_graph_reaches_names_where_the_path_was_cut(how: str, phrase: str) -> None:
    model, x = Cut(how), torch.randn(3, 4)
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_graph_reaches(lambda: model(x).pow(2).sum(), model)
    text = str(err.value)
    assert "does not reach 4 of 6 parameters" in text
    cut_line, spare_line = (line for line in text.splitlines() if line.startswith("'"))
    assert cut_line.startswith("'fc1.weight', 'fc1.bias': ")
    assert phrase in cut_line and "test_graph_checks.py" in cut_line
    assert spare_line.startswith("'spare.weight', 'spare.bias': no operation")


def test_a_failed_reach_records_every_target_and_the_unreached_ones() -> None:
    # two groups of unreached parameters (cut by .detach(), never used) beside reached ones
    model, x = Cut("detach"), torch.randn(3, 4)
    seen: list[Any] = []
    unsubscribe = recording.subscribe(seen.append)
    try:
        with pytest.raises(gk.errors.GraphCheckError):
            gk.assert_graph_reaches(lambda: model(x).pow(2).sum(), model)
    finally:
        unsubscribe()
    (record,) = seen
    assert record.tensors == tuple(name for name, _ in model.named_parameters())
    assert record.offending == ("fc1.weight", "fc1.bias", "spare.weight", "spare.bias")


def test_graph_reaches_a_connected_module_and_skips_frozen_parameters() -> None:
    model, x = Cut("none"), torch.randn(3, 4)
    model.spare.requires_grad_(False)
    gk.assert_graph_reaches(model(x).sum(), model)
    gk.assert_graph_reaches(lambda: model(x).sum(), model)
    with pytest.raises(gk.errors.GraphCheckError, match="requires_grad=False"):
        gk.assert_graph_reaches(model(x).sum(), {"spare": model.spare.weight})


def test_graph_reaches_an_output_without_graph() -> None:
    model, x = Cut("none"), torch.randn(3, 4)
    with torch.no_grad():
        loss = model(x).sum()
    with pytest.raises(gk.errors.GraphCheckError, match="the output has no autograd graph at all"):
        gk.assert_graph_reaches(loss, model)


def test_a_tensor_named_twice_is_reported_under_both_names() -> None:
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_graph_reaches(lambda: (w.detach() * 2).sum(), {"first": w, "second": w})
    assert "'first', 'second': detach returns a tensor without autograd history" in str(err.value)


def test_graph_reaches_intermediate_tensors() -> None:
    w = torch.ones(3, requires_grad=True)
    h = w * 2
    g = (w * 3).detach()
    out = h.sum() + g.sum()
    gk.assert_graph_reaches(out, {"h": h, "w": w})
    with pytest.raises(gk.errors.GraphCheckError, match="'g'"):
        gk.assert_graph_reaches(out, {"h": h, "g": g})


# --------------------------------------------------------------------------- memory


def test_numpy_bridge_shares_memory_and_copies_do_not() -> None:
    t = torch.ones(5)
    a = t.numpy()
    gk.assert_shares_memory(t, a)
    gk.assert_shares_memory(torch.from_numpy(a), t)
    gk.assert_shares_memory(a, a[1:3])
    gk.assert_no_shared_memory(t, torch.tensor(a))
    gk.assert_no_shared_memory(a, a.copy())
    with pytest.raises(gk.errors.GraphCheckError) as err:
        gk.assert_no_shared_memory(t, a)
    text = str(err.value)
    assert "'t': float32 tensor of shape (5,) on cpu." in text
    assert "'a': float32 NumPy array of shape (5,)." in text
    assert "20 bytes of their extents overlap" in text


def test_parameter_data_assignment_vs_re_assignment() -> None:
    net = nn.Sequential(nn.Linear(4, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    held = opt.param_groups[0]["params"][0]
    net[0].weight.data = torch.ones(2, 4)
    gk.assert_shares_memory(net[0].weight, held)
    net[0].weight = nn.Parameter(torch.ones(2, 4))
    with pytest.raises(gk.errors.GraphCheckError, match=r"nn\.Parameter") as err:
        gk.assert_shares_memory(net[0].weight, held)
    assert "Tensors do not share memory! (assert_shares_memory)" in str(err.value)


def test_exotic_dtypes_and_layouts() -> None:
    base = torch.randn(4, dtype=torch.complex64)
    gk.assert_shares_memory(base, base.conj())
    gk.assert_shares_memory(base, torch.view_as_real(base))
    bf = torch.ones(6, dtype=torch.bfloat16)
    gk.assert_shares_memory(bf, bf[2:])
    gk.assert_no_shared_memory(bf[::2], bf[1::2])  # interleaved: no element in common
    gk.assert_no_shared_memory(torch.empty(0), torch.empty(0))
    gk.assert_shares_memory(bf, bf)
    with pytest.raises(gk.errors.GraphCheckError, match="they are the same object"):
        gk.assert_no_shared_memory(bf, bf)
    with pytest.raises(gk.InvalidArgument, match="sparse"):
        gk.assert_shares_memory(torch.eye(2).to_sparse(), torch.eye(2))


@settings(max_examples=60, deadline=None)
@given(
    start_a=st.integers(0, 11),
    stop_a=st.integers(0, 12),
    step_a=st.integers(1, 4),
    start_b=st.integers(0, 11),
    stop_b=st.integers(0, 12),
    step_b=st.integers(1, 4),
    numpy_side=st.booleans(),
)
def test_sharing_matches_the_elements_two_slices_have_in_common(
    start_a: int, stop_a: int, step_a: int, start_b: int, stop_b: int, step_b: int, numpy_side: bool
) -> None:
    base = torch.arange(12.0)
    a = base[start_a:stop_a:step_a]
    b_tensor = base[start_b:stop_b:step_b]
    b: torch.Tensor | np.ndarray = b_tensor.numpy() if numpy_side else b_tensor
    common = set(range(12)[start_a:stop_a:step_a]) & set(range(12)[start_b:stop_b:step_b])
    if common:
        gk.assert_shares_memory(a, b)
        with pytest.raises(gk.errors.GraphCheckError):
            gk.assert_no_shared_memory(a, b)
    else:
        gk.assert_no_shared_memory(a, b)
        with pytest.raises(gk.errors.GraphCheckError):
            gk.assert_shares_memory(a, b)


# --------------------------------------------------------------------------- published records


def _published(call: Callable[[], object]) -> tuple[list[Any], BaseException | None]:
    """The results ``call`` published, and what it raised (None when it returned)."""
    seen: list[Any] = []
    unsubscribe = recording.subscribe(seen.append)
    try:
        call()
    except gk.errors.GraphCheckError as error:
        return seen, error
    finally:
        unsubscribe()
    return seen, None


def _graph_calls() -> dict[str, tuple[Callable[[], object], Callable[[], object], list[str]]]:
    """Per assertion: a passing call, a failing call, and the names the failing one blames."""
    w = torch.randn(4, 1, requires_grad=True)
    x = torch.randn(3, 4)
    with torch.no_grad():
        y_eval = x @ w
    y_graph = x @ w
    t = torch.ones(3)
    w_grad = torch.randn(2, requires_grad=True)
    w_grad.sum().backward()
    return {
        "assert_no_graph": (
            lambda: gk.assert_no_graph({"y": y_eval}),
            lambda: gk.assert_no_graph({"y": y_graph}),
            ["y"],
        ),
        "assert_detached": (
            lambda: gk.assert_detached({"y": y_eval}),
            lambda: gk.assert_detached({"w": w, "y": y_eval}),
            ["w"],
        ),
        "assert_requires_grad": (
            lambda: gk.assert_requires_grad({"w": w}),
            lambda: gk.assert_requires_grad({"w": w, "x": x}),
            ["x"],
        ),
        "assert_grad_is_none": (
            lambda: gk.assert_grad_is_none({"x": x}),
            lambda: gk.assert_grad_is_none({"x": x, "w": w_grad}),
            ["w"],
        ),
        "assert_graph_reaches": (
            lambda: gk.assert_graph_reaches((x @ w).sum(), {"w": w}),
            lambda: gk.assert_graph_reaches((x @ w.detach()).sum(), {"w": w}),
            ["w"],
        ),
        "assert_shares_memory": (
            lambda: gk.assert_shares_memory(t, t.numpy()),
            lambda: gk.assert_shares_memory(t, t.clone()),
            ["t", "b"],  # named by the caller's variable where it has one
        ),
        "assert_no_shared_memory": (
            lambda: gk.assert_no_shared_memory(t, t.clone()),
            lambda: gk.assert_no_shared_memory(t, t.numpy()),
            ["t", "b"],
        ),
    }


@pytest.mark.parametrize("check", list(_graph_calls()))
def test_every_graph_assertion_publishes_one_record_passed_or_failed(check: str) -> None:
    passing, failing, blamed = _graph_calls()[check]

    seen, error = _published(passing)
    assert error is None and len(seen) == 1
    (ok,) = seen
    assert isinstance(ok, gk.results.GraphCheckResult)
    assert (ok.kind, ok.check, ok.passed, ok.offending, ok.message) == (
        "graph",
        check,
        True,
        (),
        "",
    )

    seen, error = _published(failing)
    assert isinstance(error, gk.errors.GraphCheckError) and len(seen) == 1
    (bad,) = seen
    # The raised error carries the very record that was published, with its text.
    assert error.result is bad and str(error) == bad.message == bad.summary()
    assert (bad.kind, bad.check, bad.passed) == ("graph", check, False)
    assert list(bad.offending) == blamed and set(bad.offending) <= set(bad.tensors)
    assert bad.name.startswith(f"{check}(")

    for result in (ok, bad):
        data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
        validate_results({"schema_version": 1, "results": [data]})
        assert gk.results.GraphCheckResult.from_dict(data).to_dict() == result.to_dict()


def test_a_graph_assertion_reads_its_record_so_a_caught_failure_counts_as_expected() -> None:
    x = torch.randn(3)
    y = torch.randn(2, requires_grad=True)
    y.sum().backward()
    seen: list[Any] = []

    def watch_each(result: Any) -> None:
        recording.watch(result)  # what the pytest plugin does on publish
        seen.append(result)

    unsubscribe = recording.subscribe(watch_each)
    try:
        with pytest.raises(gk.errors.GraphCheckError):
            gk.assert_requires_grad(x)
        with pytest.raises(gk.errors.GraphCheckError):
            gk.assert_grad_is_none(y)
    finally:
        unsubscribe()
    # An assertion acts on its verdict, as assert_gradients_close does: never "unasserted".
    read = [recording.was_read(r) for r in seen]  # before this test reads anything itself
    assert read == [True, True] and [r.passed for r in seen] == [False, False]


def test_no_graph_of_a_call_is_named_by_the_function_and_blames_changed_grads() -> None:
    net = nn.Linear(3, 1)

    def evaluate(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        out = model(inputs).sum()
        out.backward()
        return out

    seen, error = _published(lambda: gk.assert_no_graph(evaluate, net, torch.randn(2, 3)))
    assert isinstance(error, gk.errors.GraphCheckError)
    (record,) = seen
    assert record.name.startswith("assert_no_graph(") and "evaluate" in record.name
    assert set(record.offending) == {"weight", "bias"}

    seen, error = _published(lambda: gk.assert_no_graph(net.eval(), torch.randn(2, 3)))
    assert isinstance(error, gk.errors.GraphCheckError)
    assert seen[0].name == "assert_no_graph(Linear)"


def test_misuse_publishes_nothing() -> None:
    seen: list[Any] = []
    unsubscribe = recording.subscribe(seen.append)
    try:
        with pytest.raises(gk.InvalidArgument):
            gk.assert_requires_grad()
    finally:
        unsubscribe()
    assert seen == []


@settings(max_examples=25, deadline=None)
@given(flags=st.lists(st.booleans(), min_size=1, max_size=8))
def test_offending_names_are_exactly_the_tensors_without_requires_grad(flags: list[bool]) -> None:
    tensors = {f"t{i}": torch.zeros(1, requires_grad=flag) for i, flag in enumerate(flags)}
    seen, error = _published(lambda: gk.assert_requires_grad(tensors))
    (record,) = seen
    assert record.tensors == tuple(tensors)
    assert record.offending == tuple(n for n, flag in zip(tensors, flags, strict=True) if not flag)
    assert record.passed is all(flags) and (error is None) is all(flags)
