"""pytest --gradcheck-torch routes torch's gradcheck and gradgradcheck through the drop-ins."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

import pytest
import torch
from test_plugin_basics import PLUGIN

from gradcheck_kit._src import recording
from gradcheck_kit._src.routing import TorchRouting
from gradcheck_kit.pytest_plugin.plugin import DEFAULT_JSON_PATH
from gradcheck_kit.report.validation import check_document

# In a dict: the routing replaces a module global bound to torch's function (by design)
TORCH = {"gradcheck": torch.autograd.gradcheck, "gradgradcheck": torch.autograd.gradgradcheck}
_GC_MODULE = sys.modules["torch.autograd.gradcheck"]

HELPER = """
import torch


def my_check(fn, inputs, **kw):
    # a project's own wrapper, through the module attribute
    return torch.autograd.gradcheck(fn, inputs, **kw)
"""

CONFTEST = """
import pytest
from torch.autograd import gradcheck as conftest_gradcheck  # bound before the routing


@pytest.fixture
def check_in_conftest():
    return conftest_gradcheck
"""

# Every spelling; each test passes under torch's gradcheck and under the drop-in.
SPELLINGS = """
import pytest
import torch
import torch.autograd.gradcheck as gradcheck_module
from torch.autograd import gradcheck, gradgradcheck
from torch.testing._internal.common_utils import gradcheck as internal_gradcheck

from helper import my_check


def x():
    return torch.rand(3, dtype=torch.float64, requires_grad=True) + 0.5


class Tripled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        return a * 2

    @staticmethod
    def backward(ctx, g):
        return g * 3  # wrong: 2 is right


def test_attribute():
    assert torch.autograd.gradcheck(torch.sin, (x(),))


def test_module_attribute():
    assert sys_module().gradcheck(torch.exp, (x(),))


def test_from_import():
    assert gradcheck(torch.tanh, (x(),))


def test_import_as():
    assert gradcheck_module(torch.cos, (x(),))


def test_wrapper():
    assert my_check(torch.sigmoid, (x(),))


def test_conftest_binding(check_in_conftest):
    assert check_in_conftest(torch.sin, (x(),))


def test_torch_testing_helper():
    assert internal_gradcheck(torch.sin, (x(),))


def test_gradgradcheck():
    assert gradgradcheck(torch.tanh, (x(),))
    assert torch.autograd.gradgradcheck(torch.sin, (x(),))


def test_known_bad_function():
    with pytest.raises(RuntimeError):
        torch.autograd.gradcheck(Tripled.apply, (x(),))


def sys_module():
    import sys

    return sys.modules["torch.autograd.gradcheck"]
"""

EXPECTED_CALLS = {
    "test_attribute": ["torch.autograd.gradcheck"],
    "test_module_attribute": ["torch.autograd.gradcheck"],
    "test_from_import": ["torch.autograd.gradcheck"],
    "test_import_as": ["torch.autograd.gradcheck"],
    "test_wrapper": ["torch.autograd.gradcheck"],
    "test_conftest_binding": ["torch.autograd.gradcheck"],
    "test_torch_testing_helper": ["torch.autograd.gradcheck"],
    "test_gradgradcheck": ["torch.autograd.gradgradcheck"] * 2,
    "test_known_bad_function": ["torch.autograd.gradcheck"],
}


def _records(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    path = pytester.path / DEFAULT_JSON_PATH
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    check_document(document)
    records: list[dict[str, Any]] = document["results"]
    return records


def _by_test(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        out.setdefault(record["test_id"].rpartition("::")[2], []).append(record)
    return out


def _write_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(helper=HELPER, test_spellings=SPELLINGS)
    pytester.makeconftest(CONFTEST)
    pytester.syspathinsert()


def _assert_torch_is_back() -> None:
    assert torch.autograd.gradcheck is TORCH["gradcheck"]
    assert torch.autograd.gradgradcheck is TORCH["gradgradcheck"]
    assert _GC_MODULE.gradcheck is TORCH["gradcheck"]
    assert _GC_MODULE.gradgradcheck is TORCH["gradgradcheck"]


@pytest.mark.parametrize("option", ["--gradcheck-torch", "--gradcheck-torch=compare"])
def test_every_spelling_runs_unchanged_and_is_recorded(
    pytester: pytest.Pytester, option: str
) -> None:
    _write_suite(pytester)
    result = pytester.runpytest(*PLUGIN, option)
    result.assert_outcomes(passed=len(EXPECTED_CALLS))
    by_test = _by_test(_records(pytester))
    assert {k: [r["routed"]["function"] for r in v] for k, v in by_test.items()} == EXPECTED_CALLS
    mode = "compare" if option.endswith("compare") else "route"
    for test, records in by_test.items():
        for record in records:
            routed = record["routed"]
            assert routed["mode"] == mode
            # where the call was made: the test file, also through torch's testing helper
            where = "helper.py" if test == "test_wrapper" else "test_spellings.py"
            assert routed["caller"].startswith(f"{where}:"), (test, routed)
            assert routed["seconds"] > 0
            if mode == "compare":
                assert routed["torch"]["verdict"] == ("failed" if "bad" in test else "passed")
                assert routed["agree"] is True
            else:
                assert routed["torch"] is None
    bad = by_test["test_known_bad_function"][0]
    assert bad["passed"] is False and bad["hint"]
    assert bad["pairs"][0]["error_map"] is not None  # a heatmap, as for a native check
    if mode == "compare":
        assert bad["routed"]["torch"]["error"].startswith("GradcheckError: Jacobian mismatch")
        result.stdout.fnmatch_lines(
            ["torch gradcheck calls routed: 10; agree 10/10; torch * s, gradcheck_kit * s"]
        )
    else:
        result.stdout.fnmatch_lines(["torch gradcheck calls routed: 10; gradcheck_kit * s"])
    _assert_torch_is_back()


# float32 at torch's defaults: torch's eps=1e-6 step drowns in roundoff and it fails;
# the drop-in counts the finite-difference error and passes.
FLOAT32 = """
import torch


def test_float32():
    x = torch.rand(4, dtype=torch.float32, requires_grad=True) + 0.5
    ok = torch.autograd.gradcheck(torch.sin, (x,), raise_exception=False)
    print("VERDICT", ok)
"""


def test_compare_records_a_disagreement_and_follows_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FLOAT32)
    result = pytester.runpytest(
        *PLUGIN, "-s", "-W", "ignore::UserWarning", "--gradcheck-torch=compare"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*VERDICT False", "torch gradcheck calls routed: 1; agree 0/1; *"])
    (record,) = _records(pytester)
    routed = record["routed"]
    assert record["passed"] is True
    assert routed["agree"] is False
    assert routed["torch"]["verdict"] == "failed"
    assert routed["torch"]["seconds"] > 0 and routed["seconds"] > 0
    assert routed["disagreement"].startswith("torch failed (GradcheckError: Jacobian mismatch")
    assert "gradcheck_kit passed" in routed["disagreement"]
    html = (pytester.path / "reports" / "gradcheck.html").read_text(encoding="utf-8")
    assert "torch.autograd.gradcheck from test_compare_records_a_disagreement" in html


def test_route_mode_the_dropin_decides(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FLOAT32)
    result = pytester.runpytest(*PLUGIN, "-s", "--gradcheck-torch")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*VERDICT True"])


def test_ini_key_turns_routing_on(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngradcheck_torch = true\n")
    pytester.makepyfile(FLOAT32)
    result = pytester.runpytest(*PLUGIN, "-s")
    result.stdout.fnmatch_lines(["*VERDICT True", "torch gradcheck calls routed: 1; *"])


@pytest.mark.parametrize(
    ("args", "ini"),
    [(["--gradcheck-torch=bogus"], ""), ([], "[pytest]\ngradcheck_torch = sometimes\n")],
)
def test_a_bad_mode_is_a_usage_error_naming_the_choices(
    pytester: pytest.Pytester, args: list[str], ini: str
) -> None:
    if ini:
        pytester.makeini(ini)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*PLUGIN, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*route*compare*"])
    _assert_torch_is_back()


def test_torch_is_restored_after_a_crashing_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import torch

def pytest_collection_finish(session):
    routed = torch.autograd.gradcheck is not torch.autograd.gradcheck.__wrapped__
    open("routed.txt", "w").write(str(routed))
    raise RuntimeError("the run crashes here")
"""
    )
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*PLUGIN, "--gradcheck-torch")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert (pytester.path / "routed.txt").read_text() == "True"
    _assert_torch_is_back()


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_under_xdist_records_and_calls_reach_the_controller(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import pytest
import torch


@pytest.mark.parametrize("i", range(4))
def test_x(i):
    x = torch.rand(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(torch.sin, (x,))
"""
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-n", "2", "--gradcheck-torch=compare")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["torch gradcheck calls routed: 4; agree 4/4; *"])
    records = _records(pytester)
    assert sorted(r["test_id"].rpartition("::")[2] for r in records) == [
        f"test_x[{i}]" for i in range(4)
    ]
    assert all(r["routed"]["torch"]["verdict"] == "passed" for r in records)


# -- the routing itself, without pytest ------------------------------------------------------


def _published(run: Any) -> list[Any]:
    seen: list[Any] = []
    stop = recording.subscribe(seen.append)
    try:
        run()
    finally:
        stop()
    return seen


def test_compare_gradgradcheck_is_one_call_not_two() -> None:
    # torch's gradgradcheck calls gradcheck through its module's globals: not routed again
    routing = TorchRouting("compare").install()
    try:
        x = torch.rand(3, dtype=torch.float64, requires_grad=True)
        seen = _published(lambda: torch.autograd.gradgradcheck(torch.tanh, (x,)))
    finally:
        routing.restore()
    assert [c["function"] for c in routing.calls] == ["torch.autograd.gradgradcheck"]
    assert [r.routed.function for r in seen] == ["torch.autograd.gradgradcheck"]
    _assert_torch_is_back()


def test_route_mode_leaves_sparse_inputs_to_torch() -> None:
    routing = TorchRouting("route").install()
    try:
        x = torch.eye(3, dtype=torch.float64).to_sparse().requires_grad_()
        fn = lambda t: torch.sparse.sum(t)  # noqa: E731
        seen = _published(lambda: torch.autograd.gradcheck(fn, (x,), masked=True))
    finally:
        routing.restore()
    assert seen == []
    assert "sparse" in routing.calls[0]["fallback"]


def test_a_binding_made_while_routing_is_restored_too() -> None:
    routing = TorchRouting("route").install()
    module = type(sys)("made_while_routing")
    sys.modules[module.__name__] = module
    try:
        from torch.autograd import gradcheck

        module.gc = gradcheck  # type: ignore[attr-defined]
        assert module.gc is not TORCH["gradcheck"]  # type: ignore[attr-defined]
    finally:
        routing.restore()
        del sys.modules[module.__name__]
    assert module.gc is TORCH["gradcheck"]  # type: ignore[attr-defined]


def test_signature_stays_torchs() -> None:
    import inspect

    routing = TorchRouting("route").install()
    try:
        assert inspect.signature(torch.autograd.gradcheck) == inspect.signature(TORCH["gradcheck"])
    finally:
        routing.restore()


def test_unknown_mode_is_misuse() -> None:
    with pytest.raises(ValueError, match="route, compare"):
        TorchRouting("both")  # type: ignore[arg-type]
