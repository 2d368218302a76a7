"""The pytest plugin's wiring, run through real pytest sessions (pytester).

The inner test files publish fake results straight to ``recording``, so these
tests need no gradient code: they check options, marker, labelling, the JSON
file, the terminal summary and the ``gradcheck-kit check-json`` reader.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import random
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

import gradcheck_kit
from gradcheck_kit import cli
from gradcheck_kit.pytest_plugin.plugin import DEFAULT_JSON_PATH, SKIP_REASON
from gradcheck_kit.report.document import DOCUMENT_SCHEMA_VERSION


def _plugin_args() -> list[str]:
    # Installed (pip install -e .), pytest loads the plugin from its entry point;
    # from a bare source tree (PYTHONPATH=.), name it explicitly.
    for entry_point in importlib.metadata.entry_points(group="pytest11"):
        if entry_point.value == "gradcheck_kit.pytest_plugin.plugin":
            return []
    return ["-p", "gradcheck_kit.pytest_plugin.plugin"]


# The inner runs need neither hypothesis's plugin (it imports all of hypothesis at every
# run's summary, ~1 s each, as pytester forgets modules first imported inside a run) nor
# pytest-benchmark's (it warns in every inner run when the outer run uses xdist).
PLUGIN = [*_plugin_args(), "-p", "no:hypothesispytest", "-p", "no:benchmark"]

# A stand-in for GradcheckResult with the three things the plugin uses.
FAKE_RESULT = """
import dataclasses
from typing import Optional

import pytest

from gradcheck_kit._src import recording


@dataclasses.dataclass(frozen=True)
class FakeResult(recording.Observable):
    name: str
    passed: bool
    test_id: Optional[str] = None

    def with_test_id(self, test_id):
        return dataclasses.replace(self, test_id=test_id)

    def to_dict(self):
        return {"name": self.name, "passed": self.passed, "test_id": self.test_id}
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--strict-markers", *PLUGIN, *args)


def line_of(path: Path, text: str) -> int:
    """The line (from 1) of ``path`` that starts with ``text``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(text))


def load(path: Path) -> dict[str, Any]:
    assert path.is_file(), f"{path} was not written"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


# ---------------------------------------------------------------- marker and flag


def test_marked_tests_are_skipped_without_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gradcheck
        def test_marked():
            assert False, "ran although --gradcheck was not given"

        @pytest.mark.gradcheck
        class TestMarkedClass:
            def test_in_class(self):
                assert False

        def test_plain():
            pass
        """
    )
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([f"SKIPPED *{SKIP_REASON}*"])
    result.stdout.no_fnmatch_line("*-- gradcheck --*")
    assert not (pytester.path / DEFAULT_JSON_PATH).exists()


def test_marked_tests_run_with_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gradcheck
        def test_marked_fails():
            assert False, "the marked test ran"

        @pytest.mark.gradcheck
        def test_marked_passes():
            pass
        """
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the marked test ran*"])


def test_marker_is_registered_with_a_description(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--markers")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["@pytest.mark.gradcheck(mode=, dtype=, eps=, atol=, rtol=, *: a gradient check*"]
    )


def test_options_are_in_their_own_group(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(
        [
            "gradient checks:",
            "*--gradcheck *Run the tests marked*",
            "*--gradcheck-json=PATH*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["*gradcheck_json (string):*", "*Default value for --gradcheck-json*"]
    )


def test_unknown_marker_arguments_are_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gradcheck(atoll=1e-5)
        def test_typo():
            pass
        """
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*gradcheck mark can't have 'atoll' keyword argument (known: *"])


# ---------------------------------------------------------------- the JSON file


def test_results_are_written_with_their_test_ids(pytester: pytest.Pytester) -> None:
    payload = f"check-{random.random()}"
    hostile = '<script>alert("x")</script> ü'
    # pytest writes non-ASCII in parametrize ids as escapes in the node id.
    hostile_id = hostile.encode("unicode_escape").decode("ascii")
    pytester.makepyfile(
        FAKE_RESULT
        + f"""
recording.publish(FakeResult("at-collection", True))


@pytest.fixture
def published_in_teardown():
    yield
    recording.publish(FakeResult("teardown", True))


def test_publishes(published_in_teardown):
    recording.publish(FakeResult({payload!r}, True))


@pytest.mark.parametrize("x", [1], ids=[{hostile!r}])
def test_hostile_id(x):
    recording.publish(FakeResult({hostile!r}, False))
"""
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*UnassertedCheckWarning*"])

    document = load(pytester.path / DEFAULT_JSON_PATH)
    assert document["schema_version"] == DOCUMENT_SCHEMA_VERSION
    assert document["tool"] == "gradcheck_kit"
    assert document["version"] == gradcheck_kit.__version__
    assert datetime.fromisoformat(document["created"]).tzinfo is not None
    assert set(document["environment"]) >= {"python", "torch", "platform"}
    module = "test_results_are_written_with_their_test_ids.py"
    source = pytester.path / module
    line = line_of(source, "def test_publishes")
    publishes = {"outcome": "passed", "looked_at": False, "file": module, "line": line}
    # pytest's location of a decorated test is its first decorator's line
    line = line_of(source, "def test_hostile_id") - 1
    hostile_test = {"outcome": "passed", "looked_at": False, "file": module, "line": line}
    assert document["results"] == [
        {"name": "at-collection", "passed": True, "test_id": None},
        {
            "name": payload,
            "passed": True,
            "test_id": f"{module}::test_publishes",
            "test": publishes,
        },
        {
            "name": "teardown",
            "passed": True,
            "test_id": f"{module}::test_publishes",
            "test": publishes,
        },
        {
            "name": hostile,
            "passed": False,
            "test_id": f"{module}::test_hostile_id[{hostile_id}]",
            "test": hostile_test,
        },
    ]
    # Nobody read the failed result: not a failure of the run, but no pass either.
    assert document["summary"]["unasserted"] == 1
    assert document["summary"]["failed"] == 0
    # Nothing is left behind by the atomic write.
    assert sorted(p.name for p in (pytester.path / "reports").iterdir()) == [
        "gradcheck.html",
        "gradcheck.json",
    ]


def test_terminal_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FAKE_RESULT
        + """
def test_good():
    recording.publish(FakeResult("good-check", True))


def test_bad():
    recording.publish(FakeResult("bad-check", False))
    recording.publish(FakeResult("worse-check", False))
    assert False, "the test fails with its checks"
"""
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*-- gradcheck --*",
            "3 checks, 2 failed (*",
            "FAILED bad-check in test_terminal_summary.py::test_bad",
            "FAILED worse-check in test_terminal_summary.py::test_bad",
            f"results: {Path(DEFAULT_JSON_PATH)}",
        ]
    )
    result.stdout.no_fnmatch_line("FAILED good-check*")


EXPECTED_FAILURES = """
def raise_if_failed(result):
    if not result.passed:
        raise AssertionError(result.name)


def test_caught():
    bad = FakeResult("caught", False)
    recording.publish(bad)
    with pytest.raises(AssertionError):
        raise_if_failed(bad)


def test_read():
    bad = FakeResult("read", False)
    recording.publish(bad)
    assert not bad.passed


@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfail():
    bad = FakeResult("xfail", False)
    recording.publish(bad)
    raise_if_failed(bad)


def test_never_read():
    recording.publish(FakeResult("never-read", False))


def test_fails():
    bad = FakeResult("real", False)
    recording.publish(bad)
    raise_if_failed(bad)
"""


def test_expected_failures_are_told_from_real_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAKE_RESULT + EXPECTED_FAILURES)
    result = run(pytester, "--gradcheck", "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=1, xfailed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*UnassertedCheckWarning: never-read (*::test_never_read) failed, and the test passed*",
            "*-- gradcheck --*",
            "5 checks, 1 failed, 3 failed as expected, 1 unasserted (*",
            "FAILED real in *::test_fails",
            "UNASSERTED never-read in *::test_never_read: *",
            "failed as expected: 3 *",
        ]
    )
    for name in ("caught", "read", "xfail", "never-read"):
        result.stdout.no_fnmatch_line(f"FAILED {name} *")
    document = load(pytester.path / DEFAULT_JSON_PATH)
    tests = {r["name"]: r["test"] for r in document["results"]}
    assert {name: (t["outcome"], t["looked_at"]) for name, t in tests.items()} == {
        "caught": ("passed", True),
        "read": ("passed", True),
        "xfail": ("xfailed", True),
        "never-read": ("passed", False),
        "real": ("failed", True),
    }
    assert tests["real"]["file"] == "test_expected_failures_are_told_from_real_ones.py"
    assert document["summary"] == {
        "checks": 5,
        "passed": 0,
        "failed": 1,
        "expected_failure": 3,
        "unasserted": 1,
        "no_verdict": 0,
        "by_kind": {
            "unknown": {
                "checks": 5,
                "passed": 0,
                "failed": 1,
                "expected_failure": 3,
                "unasserted": 1,
                "no_verdict": 0,
            }
        },
    }


def test_a_setup_or_teardown_error_makes_the_checks_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FAKE_RESULT
        + """
@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")


def test_x(broken_teardown):
    bad = FakeResult("in-errored-test", False)
    recording.publish(bad)
    assert not bad.passed
"""
    )
    run(pytester, "--gradcheck").assert_outcomes(passed=1, errors=1)
    (record,) = load(pytester.path / DEFAULT_JSON_PATH)["results"]
    assert record["test"]["outcome"] == "error"
    assert load(pytester.path / DEFAULT_JSON_PATH)["summary"]["failed"] == 1


def test_junit_xml_carries_each_checks_verdict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FAKE_RESULT + EXPECTED_FAILURES)
    run(pytester, "--gradcheck", "--junitxml=junit.xml", "-p", "no:randomly")
    root = ElementTree.parse(pytester.path / "junit.xml").getroot()
    properties = {
        case.get("name"): [(p.get("name"), p.get("value")) for p in case.iter("property")]
        for case in root.iter("testcase")
    }
    assert properties["test_read"] == [("gradcheck read", "failed")]
    assert properties["test_fails"] == [("gradcheck real", "failed")]
    assert properties["test_caught"] == [("gradcheck caught", "failed")]


@pytest.mark.parametrize("actions", ["true", ""])
def test_github_annotations_name_the_failed_checks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, actions: str
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", actions)
    pytester.makepyfile(FAKE_RESULT + EXPECTED_FAILURES)
    result = run(pytester, "--gradcheck", "-p", "no:randomly")
    module = "test_github_annotations_name_the_failed_checks.py"
    annotations = [line for line in result.outlines if line.startswith("::")]
    if not actions:
        assert annotations == []
        return
    never_read = line_of(pytester.path / module, "def test_never_read")
    fails = line_of(pytester.path / module, "def test_fails")
    assert annotations == [
        f"::warning file={module},line={never_read},title=gradcheck%3A unasserted never-read::"
        f"{module}::test_never_read: the test passed without reading this failed result. ",
        f"::error file={module},line={fails},title=gradcheck%3A real::{module}::test_fails: ",
    ]


def test_empty_run_still_writes_a_document(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["0 checks, 0 failed*"])
    assert load(pytester.path / DEFAULT_JSON_PATH)["results"] == []


def test_ini_option_moves_the_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngradcheck_json = out/from-ini.json\n")
    pytester.makepyfile(
        FAKE_RESULT + "\ndef test_x():\n    recording.publish(FakeResult('c', True))\n"
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=1)
    assert load(pytester.path / "out" / "from-ini.json")["results"][0]["name"] == "c"
    assert not (pytester.path / DEFAULT_JSON_PATH).exists()
    result.stdout.fnmatch_lines([f"results: {Path('out/from-ini.json')}"])


def test_command_line_beats_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngradcheck_json = out/from-ini.json\n")
    pytester.makepyfile(
        FAKE_RESULT + "\ndef test_x():\n    recording.publish(FakeResult('c', True))\n"
    )
    result = run(pytester, "--gradcheck", "--gradcheck-json", "cli/results.json")
    result.assert_outcomes(passed=1)
    assert load(pytester.path / "cli" / "results.json")["results"][0]["name"] == "c"
    assert not (pytester.path / "out").exists()


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngradcheck_json = out/\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester, "--gradcheck")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*gradcheck_json = 'out/' in the ini file*not a folder*"])


def test_bad_command_line_value_names_it(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--gradcheck", "--gradcheck-json", "  ")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gradcheck-json*Could not parse value: '  '*"])


def test_no_recording_after_the_run(pytester: pytest.Pytester) -> None:
    from gradcheck_kit._src import recording

    before = list(recording._listeners)
    pytester.makepyfile("def test_x():\n    pass\n")
    run(pytester, "--gradcheck").assert_outcomes(passed=1)
    # The run's recorder subscribed at configure and is gone again after unconfigure.
    assert recording._listeners == before


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_xdist_workers_send_results_to_the_controller(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        FAKE_RESULT
        + """
@pytest.mark.parametrize("i", range(4))
def test_x(i):
    check = FakeResult(f"check-{i}", i != 2)
    recording.publish(check)
    assert check.passed
"""
    )
    result = pytester.runpytest_subprocess("--strict-markers", *PLUGIN, "--gradcheck", "-n", "2")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["4 checks, 1 failed (*", "FAILED check-2 in *test_x?2?"])
    document = load(pytester.path / DEFAULT_JSON_PATH)
    by_name = {r["name"]: r for r in document["results"]}
    assert sorted(by_name) == [f"check-{i}" for i in range(4)]
    assert by_name["check-2"]["test_id"].endswith("::test_x[2]")
    assert by_name["check-2"]["passed"] is False
    # The worker that ran the test gave its records the outcome before sending them.
    assert by_name["check-2"]["test"]["outcome"] == "failed"
    assert by_name["check-1"]["test"] == {
        "outcome": "passed",
        "looked_at": True,
        "file": "test_xdist_workers_send_results_to_the_controller.py",
        "line": line_of(
            pytester.path / "test_xdist_workers_send_results_to_the_controller.py", "@pytest.mark"
        ),
    }
    # The controller ran no check, so it never imported torch for the report.
    assert document["environment"]["torch"] == "not imported"


# ---------------------------------------------------------------- gradcheck-kit check-json


def test_check_json_reads_what_the_plugin_wrote(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    # check-json holds the file to the schema, which wants every record's kind.
    fake_with_kind = FAKE_RESULT.replace('return {"name"', 'return {"kind": "fake", "name"')
    pytester.makepyfile(
        fake_with_kind
        + """
def test_good():
    recording.publish(FakeResult("good-check", True))

def test_bad():
    recording.publish(FakeResult("bad-check", False))
    assert False


def test_expected():
    expected = FakeResult("expected-check", False)
    recording.publish(expected)
    assert not expected.passed
"""
    )
    run(pytester, "--gradcheck", "-p", "no:randomly").assert_outcomes(passed=2, failed=1)
    capsys.readouterr()
    path = pytester.path / DEFAULT_JSON_PATH
    assert cli.main(["check-json", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    module = "test_check_json_reads_what_the_plugin_wrote.py"
    assert lines == [
        f"PASSED good-check ({module}::test_good)",
        f"FAILED bad-check ({module}::test_bad)",
        f"XFAIL expected-check ({module}::test_expected)",
        "3 checks, 1 failed, 1 failed as expected",
    ]

    document = load(path)
    document["results"] = [r for r in document["results"] if r["name"] != "bad-check"]
    path.write_text(json.dumps(document), encoding="utf-8")
    assert cli.main(["check-json", str(path)]) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "is not valid JSON"),
        ('{"schema_version": 1}', "is not a gradcheck_kit results file"),
        ('{"schema_version": 99, "results": []}', "schema_version=99"),
        ('{"schema_version": 1, "results": [3]}', "results[0] is not an object"),
    ],
)
def test_check_json_rejects_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert cli.main(["check-json", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("gradcheck-kit: error: ")
    assert message in captured.err


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "gradcheck_kit"],
        ["-c", "from gradcheck_kit.cli import main; raise SystemExit(main())"],
    ],
)
def test_version(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, *command, "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"gradcheck-kit {gradcheck_kit.__version__}"


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "check-json" in capsys.readouterr().err
