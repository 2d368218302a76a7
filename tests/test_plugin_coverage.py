"""``pytest --gradcheck-cov=PKG`` through real pytest sessions (pytester, in subprocesses).

A small package with three custom Functions and two Modules; the inner tests
check some of them. The terminal lines, the JSON document's ``coverage``
object, the HTML section, xdist's merge and the usage errors are checked.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_plugin_basics import PLUGIN, load
from test_report_document import validate_document

from gradcheck_kit.pytest_plugin.coverage import parse_package
from gradcheck_kit.report.coverage import (
    coverage_section,
    merge_coverage,
    summary_lines,
)
from gradcheck_kit.report.document import make_document, merge_documents

OPS = """
import torch


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


class _Abs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return x.sign() * g
"""

NETS = """
import torch

from .ops import Square


class SquareNet(torch.nn.Module):
    def forward(self, x):
        return Square.apply(x)


class Unused(torch.nn.Module):
    def forward(self, x):
        return x
"""

TESTS = """
import torch

import gradcheck_kit as gk
from covpkg.nets import SquareNet, Unused
from covpkg.ops import Cube, _Abs


def x64():
    return torch.rand(3, dtype=torch.float64, requires_grad=True) + 0.5


def test_net():
    assert gk.check_module_gradients(SquareNet(), x64(), wrt="inputs").passed


def test_cube():
    assert gk.check_gradients(Cube.apply, x64()).passed


def test_cube_again():
    assert gk.check_gradients(lambda x: Cube.apply(x).sum(), x64()).passed


def test_not_a_check():
    # called, but by no check: not exercised
    Unused()(_Abs.apply(x64())).sum().backward()
"""

FUNCTIONS_LINE = "custom Functions checked: 2/3; not checked: covpkg.ops._Abs"
MODULES_LINE = "nn.Modules checked: 1/2; not checked: covpkg.nets.Unused"


def make_project(pytester: pytest.Pytester) -> None:
    package = pytester.mkpydir("covpkg")
    (package / "ops.py").write_text(OPS)
    (package / "nets.py").write_text(NETS)
    pytester.makeini("[pytest]\npythonpath = .\n")
    pytester.makepyfile(test_covpkg=TESTS)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider", *args)


def classes(document: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in document["coverage"][key]["classes"]}


def test_the_terminal_names_what_no_check_exercised(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    result = run(pytester, "--gradcheck-cov=covpkg")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*- gradcheck coverage -*", FUNCTIONS_LINE, MODULES_LINE])


def test_the_json_and_the_page_carry_the_classes_and_their_tests(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester)
    result = run(pytester, "--gradcheck", "--gradcheck-cov", "covpkg")
    result.assert_outcomes(passed=4)
    document = load(pytester.path / "reports" / "gradcheck.json")
    validate_document(document)
    assert document["coverage"]["packages"] == ["covpkg"]
    functions = classes(document, "functions")
    assert functions["covpkg.ops.Cube"]["tests"] == [
        "test_covpkg.py::test_cube",
        "test_covpkg.py::test_cube_again",
    ]
    assert functions["covpkg.ops.Square"]["tests"] == ["test_covpkg.py::test_net"]
    assert functions["covpkg.ops._Abs"] == {
        "name": "covpkg.ops._Abs",
        "checked": False,
        "private": True,
        "tests": [],
    }
    modules = classes(document, "modules")
    assert {name: m["checked"] for name, m in modules.items()} == {
        "covpkg.nets.SquareNet": True,
        "covpkg.nets.Unused": False,
    }
    page = (pytester.path / "reports" / "gradcheck.html").read_text(encoding="utf-8")
    section = page[page.index('<details class="coverage"') :]
    assert "custom Functions: 2 of 3 checked" in section
    assert "<code>covpkg.nets.Unused</code>" in section
    assert "<code>test_covpkg.py::test_cube_again</code>" in section


def test_xdist_workers_send_their_share_to_the_controller(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    result = run(pytester, "--gradcheck", "--gradcheck-cov=covpkg", "-n", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([FUNCTIONS_LINE, MODULES_LINE])
    document = load(pytester.path / "reports" / "gradcheck.json")
    validate_document(document)
    # test_cube and test_cube_again ran on different workers or the same: both are named
    assert len(classes(document, "functions")["covpkg.ops.Cube"]["tests"]) == 2


def test_the_ini_key_names_packages_one_a_line(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makeini("[pytest]\npythonpath = .\ngradcheck_cov =\n    covpkg.nets\n")
    result = run(pytester)
    # only the subpackage's classes are listed; Square lies outside it
    result.stdout.fnmatch_lines(["custom Functions checked: 0/0", MODULES_LINE])


def test_the_command_line_beats_the_ini_key(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makeini("[pytest]\npythonpath = .\ngradcheck_cov = no_such_pkg\n")
    result = run(pytester, "--gradcheck-cov=covpkg.ops")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["custom Functions checked: 2/3*", "nn.Modules checked: 0/0"])


def test_a_package_that_does_not_import_is_a_usage_error(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    result = run(pytester, "--gradcheck-cov=covpkg", "--gradcheck-cov=no_such_pkg")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--gradcheck-cov=no_such_pkg: cannot import 'no_such_pkg': ModuleNotFoundError*"]
    )
    result.stdout.no_fnmatch_line("*passed*")


def test_a_package_whose_import_raises_is_a_usage_error_too(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    (pytester.path / "badpkg.py").write_text("raise RuntimeError('needs a GPU')\n")
    result = run(pytester, "--gradcheck-cov=badpkg")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*badpkg: cannot import 'badpkg': RuntimeError: needs a GPU*"])


def test_a_bad_name_is_refused_by_the_parser(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--gradcheck-cov=covpkg/ops")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*Could not parse value: 'covpkg/ops'*"])


def test_without_the_option_nothing_is_listed(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=4)
    result.stdout.no_fnmatch_line("*gradcheck coverage*")
    assert "coverage" not in load(pytester.path / "reports" / "gradcheck.json")


# ---------------------------------------------------------------- the data, without pytest


def listing(names: list[str]) -> dict[str, Any]:
    return {
        "package": "lib",
        "classes": [{"name": n, "kind": "function", "private": False} for n in names],
    }


@given(
    total=st.integers(min_value=0, max_value=30),
    checked=st.integers(min_value=0, max_value=30),
    limit=st.integers(min_value=1, max_value=12),
)
def test_the_terminal_line_counts_and_caps_the_names(total: int, checked: int, limit: int) -> None:
    checked = min(checked, total)
    names = [f"lib.F{i:02d}" for i in range(total)]
    exercised = {n: {"kind": "function", "tests": []} for n in names[:checked]}
    line = summary_lines(coverage_section([listing(names)], exercised), limit=limit)[0]
    assert line.startswith(f"custom Functions checked: {checked}/{total}")
    unchecked = names[checked:]
    for name in unchecked[:limit]:
        assert name in line
    for name in unchecked[limit:]:
        assert name not in line
    if len(unchecked) > limit:
        assert line.endswith(f"…and {len(unchecked) - limit} more")
    else:
        assert "more" not in line


def test_an_exercised_class_missing_from_the_listing_is_added_if_in_the_package() -> None:
    section = coverage_section(
        [listing(["lib.A"])],
        {
            "lib.make.<locals>.Local": {"kind": "function", "tests": ["t"]},
            "other.B": {"kind": "function", "tests": ["t"]},
        },
    )
    assert [c["name"] for c in section["functions"]["classes"]] == [
        "lib.A",
        "lib.make.<locals>.Local",
    ]


def test_merged_documents_count_a_class_checked_in_any_shard() -> None:
    one = make_document([])
    one["coverage"] = coverage_section([listing(["lib.A", "lib.B"])], {})
    two = make_document([])
    two["coverage"] = coverage_section(
        [listing(["lib.A", "lib.B"])], {"lib.B": {"kind": "function", "tests": ["t.py::b"]}}
    )
    merged = merge_documents([("one.json", one), ("two.json", two)])
    validate_document(merged)
    functions = merged["coverage"]["functions"]
    assert (functions["checked"], functions["total"]) == (1, 2)
    assert functions["classes"][1]["tests"] == ["t.py::b"]
    assert merge_coverage([]) is None
    assert "coverage" not in merge_documents([("one.json", make_document([]))])


def test_many_tests_of_one_class_are_capped_with_a_count() -> None:
    tests = [f"t.py::test_{i}" for i in range(60)]
    exercised = {"lib.A": {"kind": "function", "tests": tests}}
    section = coverage_section([listing(["lib.A"])], exercised)
    entry = section["functions"]["classes"][0]
    assert len(entry["tests"]) == 50 and entry["more_tests"] == 10
    document = make_document([])
    document["coverage"] = section
    validate_document(json.loads(json.dumps(document)))


@pytest.mark.parametrize("value", ["", "a..b", "1pkg", "pkg-name"])
def test_parse_package_refuses_what_is_not_a_dotted_name(value: str) -> None:
    with pytest.raises(Exception, match="Could not parse value"):
        parse_package(value)


def test_parse_package_strips_blanks() -> None:
    assert parse_package(textwrap.dedent("  lib.ops ")) == "lib.ops"


def test_the_page_escapes_hostile_names_and_lists_unchecked_first() -> None:
    from gradcheck_kit.report.html import render_html

    hostile = 'lib.<script>alert("x")</script>'
    document = make_document([])
    document["coverage"] = coverage_section(
        [
            {
                "package": "lib",
                "classes": [
                    {"name": "lib.A", "kind": "module", "private": False},
                    {"name": hostile, "kind": "module", "private": False},
                ],
                "import_errors": {"lib.gpu": "OSError: <no driver>"},
            }
        ],
        {"lib.A": {"kind": "module", "tests": ["t.py::test_ü[<b>]"]}},
    )
    page = render_html(document)
    section = page[
        page.index('<details class="coverage"') : page.index(
            "</details>", page.index('<details class="coverage"')
        )
    ]
    assert "<script>alert" not in section
    assert "lib.&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in section
    assert section.index("&lt;script&gt;") < section.index("<code>lib.A</code>")
    assert "t.py::test_ü[&lt;b&gt;]" in section
    assert "OSError: &lt;no driver&gt;" in section
