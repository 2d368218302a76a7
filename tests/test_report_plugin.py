"""``pytest --gradcheck`` writes the HTML report next to the JSON file (real pytest runs).

The inner test files publish sample records (``tests/support/samples.py``)
straight to ``recording``, so these runs need no gradient code and no torch.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from test_report_document import validate_document

from gradcheck_kit.pytest_plugin.plugin import DEFAULT_JSON_PATH, DEFAULT_REPORT_PATH


def _plugin_args() -> list[str]:
    for entry_point in importlib.metadata.entry_points(group="pytest11"):
        if entry_point.value == "gradcheck_kit.pytest_plugin.plugin":
            return []
    return ["-p", "gradcheck_kit.pytest_plugin.plugin"]


# As in test_plugin_basics.py: no hypothesis or pytest-benchmark plugin in the inner runs.
PLUGIN = [*_plugin_args(), "-p", "no:hypothesispytest", "-p", "no:benchmark"]
HOSTILE = "<script>alert(1)</script>"

# The inner runs (in a temporary folder, some in a subprocess) import the samples from here.
SUPPORT_PATH = str(Path(__file__).resolve().parent)

PUBLISH = f"""
import dataclasses
import sys

import pytest

from gradcheck_kit._src import recording

sys.path.insert(0, {SUPPORT_PATH!r})
from support import samples
"""
PUBLISH += """


@dataclasses.dataclass(frozen=True)
class Published:
    record: dict
    test_id: object = None

    def with_test_id(self, test_id):
        return dataclasses.replace(self, test_id=test_id)

    def to_dict(self):
        return {**self.record, "test_id": self.test_id}


def publish(record):
    # as an assert_* helper does: a failed check fails its test
    recording.publish(Published(record))
    if record.get("passed") is False:
        pytest.fail(f"{record.get('name')} failed", pytrace=False)
"""

CHECKS = (
    PUBLISH
    + f"""

def test_passes():
    publish(samples.gradient_record("sin", passed=True))


def test_transposed():
    publish(samples.gradient_record("matmul_backward", passed=False, pattern="transposed"))


def test_training():
    publish(samples.training_record(parameter="fc1.weight"))


def test_benchmark():
    publish(samples.device_benchmark_record())


@pytest.mark.parametrize("x", [1], ids=[{HOSTILE!r}])
def test_hostile(x):
    publish(samples.gradient_record({HOSTILE!r}, passed=False))
"""
)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--strict-markers", *PLUGIN, *args)


def load(path: Path) -> dict[str, Any]:
    assert path.is_file(), f"{path} was not written"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def test_gradcheck_writes_the_json_file_and_the_html_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CHECKS)
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*-- gradcheck --*",
            "5 checks, 3 failed (*",
            f"results: {Path(DEFAULT_JSON_PATH)}",
            f"report: {Path(DEFAULT_REPORT_PATH)}",
        ]
    )
    document = load(pytester.path / DEFAULT_JSON_PATH)
    validate_document(document)
    assert document["summary"]["by_kind"]["gradient"] == {
        "checks": 3,
        "passed": 1,
        "failed": 2,
        "expected_failure": 0,
        "unasserted": 0,
        "no_verdict": 0,
    }
    environment = document["environment"]
    assert environment["options"]["gradcheck"] is True
    assert environment["options"]["gradcheck_report"].endswith("gradcheck.html")
    assert environment["seeds"]["per_check"] == [0]
    assert environment["devices"][0].startswith("cpu: ")
    assert document["duration_s"] is not None and document["duration_s"] >= 0

    page = (pytester.path / DEFAULT_REPORT_PATH).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "test_hostile[" in page
    assert page.index("matmul_backward") < page.index(">sin<")  # failures first
    assert '<svg class="heatmap"' in page and '<svg class="chart bars"' in page
    # Both files, and nothing else: the writes left no temporary file behind.
    assert sorted(p.name for p in (pytester.path / "reports").iterdir()) == [
        "gradcheck.html",
        "gradcheck.json",
    ]


def test_report_path_from_ini_and_command_line(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngradcheck_report = out/from-ini.html\n")
    pytester.makepyfile(PUBLISH + "\ndef test_x():\n    publish(samples.manual_record())\n")
    run(pytester, "--gradcheck").assert_outcomes(failed=1)
    assert "manual derivative" in (pytester.path / "out" / "from-ini.html").read_text("utf-8")
    assert not (pytester.path / DEFAULT_REPORT_PATH).exists()

    result = run(pytester, "--gradcheck", "--gradcheck-report", "cli/page.html")
    result.assert_outcomes(failed=1)
    assert (pytester.path / "cli" / "page.html").is_file()
    result.stdout.fnmatch_lines([f"report: {Path('cli/page.html')}"])


def test_bad_report_paths_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester, "--gradcheck", "--gradcheck-report", " ")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gradcheck-report*Could not parse value: ' '*"])
    pytester.makeini("[pytest]\ngradcheck_report = out/\n")
    result = run(pytester, "--gradcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*gradcheck_report = 'out/' in the ini file*not a folder*"])


def test_the_option_is_in_the_group_with_its_default(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(["gradient checks:", "*--gradcheck-report=PATH*"])
    result.stdout.fnmatch_lines(["*gradcheck_report (string):*"])


def test_a_page_that_cannot_be_rendered_costs_the_json_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The module the plugin will import (an earlier in-process run may have dropped the
    # first copy from sys.modules, leaving `gradcheck_kit.report.html` a stale attribute).
    html = importlib.import_module("gradcheck_kit.report.html")

    def broken(document: Any, *, title: str = "") -> Any:
        yield "<!DOCTYPE html>"
        raise RuntimeError("template exploded")

    monkeypatch.setattr(html, "generate_html", broken)
    pytester.makepyfile(PUBLISH + "\ndef test_x():\n    publish(samples.training_record())\n")
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["report: not written (RuntimeError: template exploded)"])
    assert load(pytester.path / DEFAULT_JSON_PATH)["summary"]["failed"] == 1
    assert not (pytester.path / DEFAULT_REPORT_PATH).exists()


def test_no_report_without_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CHECKS)
    run(pytester).assert_outcomes(passed=2, failed=3)
    assert not (pytester.path / "reports").exists()


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_under_xdist_only_the_controller_writes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        PUBLISH
        + """
import os

@pytest.mark.parametrize("i", range(6))
def test_x(i):
    record = samples.gradient_record(f"check-{i}", passed=i != 3)
    record["notes"] = [os.environ.get("PYTEST_XDIST_WORKER", "controller")]
    publish(record)
"""
    )
    result = pytester.runpytest_subprocess("--strict-markers", *PLUGIN, "--gradcheck", "-n", "2")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["6 checks, 1 failed (*", f"report: {Path(DEFAULT_REPORT_PATH)}"])
    document = load(pytester.path / DEFAULT_JSON_PATH)
    validate_document(document)
    assert sorted(r["name"] for r in document["results"]) == [f"check-{i}" for i in range(6)]
    assert {r["notes"][0] for r in document["results"]} == {"gw0", "gw1"}
    assert document["environment"]["options"]["xdist_workers"] == 2
    page = (pytester.path / DEFAULT_REPORT_PATH).read_text(encoding="utf-8")
    assert page.count("<tbody data-status=") == 6
    assert sorted(p.name for p in (pytester.path / "reports").iterdir()) == [
        "gradcheck.html",
        "gradcheck.json",
    ]


def test_device_benchmark_records_what_pytest_benchmark_measured(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pytest_benchmark")
    # pytest-benchmark disables itself in an xdist worker (this suite runs under -n 2)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(
        """
import torch

def test_step(device_benchmark):
    device_benchmark(torch.nn.Linear(3, 1), lambda: torch.randn(4, 3))
"""
    )
    result = pytester.runpytest(
        *_plugin_args(),
        "-p",
        "no:hypothesispytest",
        "--gradcheck",
        "--benchmark-min-rounds=7",
        "--benchmark-max-time=0.05",
    )
    result.assert_outcomes(passed=1)
    document = load(pytester.path / DEFAULT_JSON_PATH)
    validate_document(document)
    (record,) = [r for r in document["results"] if r["kind"] == "device_benchmark"]
    (cpu,) = record["devices"]
    timing = cpu["forward_backward"]
    # The rounds pytest-benchmark ran, not one run of our own.
    assert timing["runs"] >= 7 and timing["iterations"] >= 1
    assert 0 < timing["min_s"] <= timing["median_s"] and timing["iqr_s"] >= 0
    assert timing["mean_s"] > 0 and timing["stddev_s"] >= 0
    page = (pytester.path / DEFAULT_REPORT_PATH).read_text(encoding="utf-8")
    assert "<th>iterations</th>" in page and "<th>stddev</th>" in page
