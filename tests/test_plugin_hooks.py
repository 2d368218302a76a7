"""The plugin's own hooks: a project's conftest.py adds fields to its records (real pytest runs)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from test_plugin_basics import PLUGIN
from test_report_document import validate_document

from gradcheck_kit.pytest_plugin.extra import merge_answers
from gradcheck_kit.pytest_plugin.options import DEFAULT_JSON_PATH
from gradcheck_kit.report import validation

# Real gradient checks: a gradient record's schema is closed but for `extra`.
CHECKS = """
import pytest
import torch

import gradcheck_kit as gk


@pytest.mark.team("vision")
def test_sin():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    gk.assert_gradients_close(torch.sin, x, name="sin")


def test_cos():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert gk.check_gradients(torch.cos, x, name="cos").passed
"""

CONFTEST = """
import os

def pytest_configure(config):
    config.addinivalue_line("markers", "team(name): the team that owns the test")

def pytest_gradcheck_record(record, item, config):
    team = item.get_closest_marker("team") if item is not None else None
    return {
        "git_sha": os.environ.get("GIT_SHA_FOR_TEST", "unknown"),
        "team": team.args[0] if team else None,
        "outcome_seen": record["test"]["outcome"],
        "worker": getattr(config, "workerinput", {}).get("workerid"),
    }
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--strict-markers", *PLUGIN, "--gradcheck", *args)


def load(pytester: pytest.Pytester) -> dict[str, Any]:
    path = pytester.path / DEFAULT_JSON_PATH
    assert path.is_file(), f"{path} was not written"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    validate_document(document)  # `extra` is the one open object of a record
    return document


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {record["name"]: record for record in document["results"]}


def test_a_conftest_adds_fields_to_every_record(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = f"{random.getrandbits(64):016x}"
    monkeypatch.setenv("GIT_SHA_FOR_TEST", sha)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_ops=CHECKS)
    run(pytester).assert_outcomes(passed=2)
    records = by_name(load(pytester))
    assert records["sin"]["extra"]["git_sha"] == sha
    assert records["sin"]["extra"]["team"] == "vision"
    assert records["cos"]["extra"]["team"] is None
    # called once the test has finished: the record carries what pytest made of it
    assert records["sin"]["extra"]["outcome_seen"] == "passed"
    assert records["sin"]["extra"]["worker"] is None  # no xdist here


def test_the_nearest_conftest_wins_and_applies_only_below_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "def pytest_gradcheck_record(record, item, config):\n"
        "    return {'team': 'root', 'level': 'root'}\n"
    )
    sub = pytester.mkpydir("sub")
    (sub / "conftest.py").write_text(
        "def pytest_gradcheck_record(record, item, config):\n    return {'team': 'sub'}\n",
        encoding="utf-8",
    )
    unmarked = CHECKS.replace('@pytest.mark.team("vision")\n', "")
    (sub / "test_sub.py").write_text(unmarked, encoding="utf-8")
    pytester.makepyfile(test_top=unmarked)
    run(pytester).assert_outcomes(passed=4)
    records = {(r["test_id"].split("::")[0], r["name"]): r for r in load(pytester)["results"]}
    assert records[("test_top.py", "sin")]["extra"] == {"team": "root", "level": "root"}
    assert records[("sub/test_sub.py", "sin")]["extra"] == {"team": "sub", "level": "root"}


def test_without_a_hook_records_have_no_extra_key(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ops=CHECKS.replace('@pytest.mark.team("vision")\n', ""))
    run(pytester).assert_outcomes(passed=2)
    assert all("extra" not in record for record in load(pytester)["results"])


def test_a_hook_that_fails_costs_its_record_the_extras_and_warns(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        "def pytest_gradcheck_record(record, item, config):\n"
        "    if record['name'] == 'sin':\n"
        "        raise KeyError('no such field')\n"
        "    return ['not', 'a', 'mapping'] if record['name'] == 'cos' else None\n"
    )
    pytester.makepyfile(test_ops=CHECKS.replace('@pytest.mark.team("vision")\n', ""))
    result = run(pytester)
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(
        [
            "*GradcheckHookWarning: pytest_gradcheck_record failed for 'sin': KeyError*",
            "*GradcheckHookWarning: pytest_gradcheck_record failed for 'cos': TypeError: "
            "expected a mapping of fields or None, got list*",
        ]
    )
    assert all("extra" not in record for record in load(pytester)["results"])


def test_records_made_outside_tests_are_offered_with_no_item(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "import torch\n"
        "import gradcheck_kit as gk\n"
        "def pytest_collection_finish(session):\n"
        "    x = torch.randn(2, dtype=torch.float64, requires_grad=True)\n"
        "    gk.check_gradients(torch.exp, x, name='at_collection')\n"
        "def pytest_gradcheck_record(record, item, config):\n"
        "    return {'in_test': item is not None}\n"
    )
    pytester.makepyfile("def test_nothing():\n    pass\n")
    run(pytester).assert_outcomes(passed=1)
    (record,) = load(pytester)["results"]
    assert record["name"] == "at_collection" and record["test_id"] is None
    assert record["extra"] == {"in_test": False}


def test_a_misspelt_hook_argument_is_an_error_at_start(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_gradcheck_record(record, node):\n    return None\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run(pytester)
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*pytest_gradcheck_record*node*"])


def test_under_xdist_the_workers_ask_the_hook(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_ops=CHECKS)
    result = pytester.runpytest_subprocess(
        "--strict-markers", *PLUGIN, "--gradcheck", "-n", "2", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    records = by_name(load(pytester))
    assert records["sin"]["extra"]["team"] == "vision"
    assert records["cos"]["extra"]["outcome_seen"] == "passed"
    # asked in the worker that ran the test (where the item is), not in the controller
    assert {r["extra"]["worker"] for r in records.values()} <= {"gw0", "gw1"}


def test_answers_merge_first_wins_as_json() -> None:
    assert merge_answers([{"a": 1}, {"a": 2, "b": (1, float("inf"))}]) == {"a": 1, "b": [1, "inf"]}
    with pytest.raises(TypeError, match="got str"):
        merge_answers(["a"])


def test_the_schemas_keep_extra_open_and_only_extra(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_ops=CHECKS)
    run(pytester).assert_outcomes(passed=2)
    document = load(pytester)  # valid with `extra`, for jsonschema where installed
    assert not list(validation.iter_violations(document))  # and for the stdlib validator
    stray = copy.deepcopy(document)
    stray["results"][0]["team"] = "vision"  # beside `extra`, not in it
    with pytest.raises(AssertionError):
        validate_document(stray)
    assert list(validation.iter_violations(stray))
