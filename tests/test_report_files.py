"""Files as asked: when the plugin writes, where subset runs go, pairs, bad records, paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_report_document import validate_document
from test_report_plugin import PUBLISH, load, run

from gradcheck_kit.pytest_plugin import report_paths
from gradcheck_kit.pytest_plugin.options import CheckDefaults, apply_marker
from gradcheck_kit.pytest_plugin.plugin import DEFAULT_JSON_PATH, DEFAULT_REPORT_PATH
from gradcheck_kit.pytest_plugin.subset import path_reasons, subset_path
from gradcheck_kit.report.files import remove_stale_temps, write_files_atomic
from gradcheck_kit.report.safe_records import RECORD_ERROR_KIND, safe_record

TWO_TESTS = (
    PUBLISH
    + """

def test_sin():
    publish(samples.gradient_record("sin", passed=True))


def test_cos():
    publish(samples.gradient_record("cos", passed=False))
"""
)
SUBSET_JSON = subset_path(Path(DEFAULT_JSON_PATH))
SUBSET_HTML = subset_path(Path(DEFAULT_REPORT_PATH))


def _old_pair(pytester: pytest.Pytester) -> tuple[Path, Path]:
    json_path, html_path = pytester.path / DEFAULT_JSON_PATH, pytester.path / DEFAULT_REPORT_PATH
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text("old json", encoding="utf-8")
    html_path.write_text("old html", encoding="utf-8")
    return json_path, html_path


# ------------------------------------------------------------ when nothing is written


@pytest.mark.parametrize("extra", [["--collect-only"], ["--collect-only", "-q"], ["--fixtures"]])
def test_runs_that_run_no_test_write_nothing(pytester: pytest.Pytester, extra: list[str]) -> None:
    pytester.makepyfile(TWO_TESTS)
    json_path, html_path = _old_pair(pytester)
    result = run(pytester, "--gradcheck", *extra)
    assert result.ret == 0
    assert json_path.read_text(encoding="utf-8") == "old json"
    assert html_path.read_text(encoding="utf-8") == "old html"
    assert not (pytester.path / SUBSET_JSON).exists()
    if "--collect-only" in extra:
        result.stdout.no_fnmatch_line("*- gradcheck -*")


def test_an_interrupted_collection_writes_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok=TWO_TESTS, test_broken="import no_such_module_here\n")
    json_path, _ = _old_pair(pytester)
    result = run(pytester, "--gradcheck")
    result.stdout.fnmatch_lines(["*results and report: not written (no test ran)*"])
    assert json_path.read_text(encoding="utf-8") == "old json"


def test_no_report_runs_the_checks_and_writes_no_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TWO_TESTS)
    result = run(pytester, "--gradcheck", "--gradcheck-no-report")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*2 checks, 1 failed*", "*not written (--gradcheck-no-report)*"])
    assert not (pytester.path / "reports").exists()


def test_ini_keys_enable_the_plugin_and_turn_the_files_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.gradcheck\ndef test_marked():\n    pass\n")
    pytester.makeini("[pytest]\ngradcheck = true\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)  # not skipped: the ini key is --gradcheck
    assert load(pytester.path / DEFAULT_JSON_PATH)["summary"]["checks"] == 0
    pytester.makeini("[pytest]\ngradcheck = true\ngradcheck_no_report = true\n")
    (pytester.path / DEFAULT_JSON_PATH).unlink()
    run(pytester).assert_outcomes(passed=1)
    assert not (pytester.path / DEFAULT_JSON_PATH).exists()
    pytester.makeini("[pytest]\ngradcheck = false\n")
    run(pytester).assert_outcomes(skipped=1)


# ------------------------------------------------------------ full and subset runs


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["-k", "sin"], "-k 'sin'"),
        (["-x"], "stopped early"),
        (["tests/test_two.py"], "file tests/test_two.py inside testpaths"),
        (["tests/test_two.py::test_sin"], "node id tests/test_two.py::test_sin"),
        (["--deselect", "tests/test_two.py::test_cos"], "--deselect"),
    ],
)
def test_a_subset_run_writes_beside_the_full_report(
    pytester: pytest.Pytester, args: list[str], reason: str
) -> None:
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    tests = pytester.mkdir("tests")
    # cos first, so that -x stops before sin
    (tests / "test_two.py").write_text(TWO_TESTS.replace("def test_sin", "def test_z_sin"))
    args = [a.replace("::test_sin", "::test_z_sin") for a in args]
    reason = reason.replace("::test_sin", "::test_z_sin")
    json_path, html_path = _old_pair(pytester)
    result = run(pytester, "--gradcheck", *args)
    result.stdout.fnmatch_lines(
        [f"*subset run: *{reason}*written beside the full report*", "*gradcheck.subset.json*"]
    )
    assert json_path.read_text(encoding="utf-8") == "old json"
    assert html_path.read_text(encoding="utf-8") == "old html"
    document = load(pytester.path / SUBSET_JSON)
    assert document["environment"]["run"].startswith("subset run: ")
    assert (pytester.path / SUBSET_HTML).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("args", [[], ["tests"], ["examples"], ["."], ["--ff"]])
def test_a_full_run_replaces_the_full_report(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makeini("[pytest]\ntestpaths = tests\n")
    for folder in ("tests", "examples"):
        pytester.mkdir(folder).joinpath(f"test_{folder}.py").write_text(TWO_TESTS)
    json_path, _ = _old_pair(pytester)
    run(pytester, "--gradcheck", *args)
    assert load(json_path)["environment"]["run"] == "full run"
    assert not (pytester.path / SUBSET_JSON).exists()


def test_last_failed_is_a_subset_and_failed_first_is_not(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TWO_TESTS)
    plugins = ["-p", "cacheprovider"]
    run(pytester, "--gradcheck", *plugins)
    full = load(pytester.path / DEFAULT_JSON_PATH)
    run(pytester, "--gradcheck", "--lf", *plugins).stdout.fnmatch_lines(["*subset run: --lf*"])
    assert load(pytester.path / DEFAULT_JSON_PATH)["created"] == full["created"]
    assert load(pytester.path / SUBSET_JSON)["summary"]["checks"] == 1


def test_path_rule_examples() -> None:
    root = Path("/p")
    assert path_reasons([], ["tests"], base=root, rootdir=root) == []
    assert path_reasons(["examples", "tests", "."], ["tests"], base=root, rootdir=root) == []
    assert path_reasons(["tests/unit"], ["tests"], base=root, rootdir=root) == [
        "folder tests/unit inside testpaths"
    ]
    # a listed file is the suite; any other .py file a subset
    assert path_reasons(["t.py"], ["t.py"], base=root, rootdir=root) == []
    assert path_reasons(["u.py"], [], base=root, rootdir=root) == ["file u.py"]


# ------------------------------------------------------------ records that cannot crash the end


BAD_NAMES = (
    PUBLISH
    + """

class Named:
    def __repr__(self):
        return "Named()"


def test_object_name():
    publish(samples.gradient_record(Named(), passed=True))


def test_surrogate_name():
    publish(samples.gradient_record("sin\\ud800", passed=True))


def test_endless_record():
    record = samples.gradient_record("loop", passed=False)
    record["self"] = record
    recording.publish(Published(record))
"""
)


def test_bad_names_and_records_never_cost_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(BAD_NAMES)
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    document = load(pytester.path / DEFAULT_JSON_PATH)
    validate_document(document)
    names = [r["name"] for r in document["results"]]
    assert names[:2] == ["Named()", "sin\\ud800"]
    stub = document["results"][2]
    assert stub["kind"] == RECORD_ERROR_KIND and stub["name"] == "loop"
    assert stub["passed"] is False and "nested deeper" in stub["error"]
    page = (pytester.path / DEFAULT_REPORT_PATH).read_text(encoding="utf-8")
    assert "sin\\ud800" in page


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.builds(object),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text() | st.integers(), inner, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_any_record_becomes_strict_utf8_json(value: object) -> None:
    record = safe_record({"kind": "gradient", "name": value, "passed": True, "x": value})
    json.dumps(record, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert isinstance(record["name"], str)


# ------------------------------------------------------------ marker values


def test_a_bad_marker_value_fails_only_its_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gradcheck(devices=5)
        def test_devices(grad_device):
            pass

        @pytest.mark.gradcheck(atol="tight")
        def test_atol(gradcheck):
            pass

        def test_fine():
            pass
        """
    )
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        ["*gradcheck mark: devices=5; use 'cpu', 'cuda'*", "*gradcheck mark: atol='tight'*"]
    )
    result.stdout.no_fnmatch_line("*TypeError*")
    result.stdout.no_fnmatch_line("*Interrupted*")


@given(
    st.sampled_from(["mode", "dtype", "seed", "atol", "rtol", "devices"]),
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=5)
    | st.lists(st.integers() | st.text(max_size=5), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    | st.builds(object),
)
def test_marker_values_are_accepted_or_a_named_value_error(name: str, value: object) -> None:
    try:
        apply_marker(CheckDefaults(), {name: value})
    except ValueError as exc:
        assert f"{name}=" in str(exc)


# ------------------------------------------------------------ bad paths


def test_bad_paths_are_usage_errors_before_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    raise AssertionError('must not run')\n")
    pytester.mkdir("folder")
    pytester.makefile(".txt", afile="x")
    cases = [
        (
            ["--gradcheck-json", "folder"],
            "--gradcheck-json (ini gradcheck_json): *folder is a folder*",
        ),
        (["--gradcheck-report", "afile.txt/r.html"], "--gradcheck-report*afile.txt is a file*"),
        (
            ["--gradcheck-json", "same.out", "--gradcheck-report", "same.out"],
            "*--gradcheck-json*and --gradcheck-report*both name*same.out*",
        ),
    ]
    for args, message in cases:
        result = run(pytester, "--gradcheck", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*{message}"])
        result.stdout.no_fnmatch_line("*must not run*")


def test_an_unwritable_folder_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As root every folder is writable, so the permission check itself is stubbed.
    monkeypatch.setattr(report_paths.os, "access", lambda path, mode: False)
    with pytest.raises(pytest.UsageError, match=r"--gradcheck-json.*folder .* is not writable"):
        report_paths.check_report_paths(tmp_path / "r" / "g.json", tmp_path / "r" / "g.html")


# ------------------------------------------------------------ the pair on disk


def test_a_failed_render_keeps_the_old_pair_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    old = [(tmp_path / "g.json", "old json"), (tmp_path / "g.html", "old html")]
    write_files_atomic(old)

    def broken() -> object:
        yield "<!DOCTYPE html>"
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError, match="renderer died"):
        write_files_atomic([(tmp_path / "g.json", "new json"), (tmp_path / "g.html", broken())])
    assert [p.read_text() for p, _ in old] == ["old json", "old html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.html", "g.json"]
    with pytest.raises(ValueError, match="the same file"):
        write_files_atomic([(tmp_path / "g.json", "a"), (tmp_path / "g.json", "b")])


def test_stale_temporaries_go_and_live_ones_stay(tmp_path: Path) -> None:
    dead = tmp_path / ".gradcheck-999999999-a.g.json.tmp"
    live = tmp_path / f".gradcheck-{os.getppid()}-b.g.json.tmp"
    old_live = tmp_path / f".gradcheck-{os.getppid()}-c.g.json.tmp"
    for path in (dead, live, old_live):
        path.write_text("{")
    os.utime(old_live, (time.time() - 7200, time.time() - 7200))
    assert sorted(p.name for p in remove_stale_temps(tmp_path)) == sorted(
        [dead.name, old_live.name]
    )
    assert live.exists()


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signals")
def test_sigterm_during_the_write_removes_the_temporaries(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = textwrap.dedent(
        f"""
        import pathlib, signal, time
        from gradcheck_kit.report.files import write_files_atomic

        folder = pathlib.Path({str(tmp_path)!r})
        write_files_atomic([(folder / "g.json", "old json"), (folder / "g.html", "old html")])

        def slow():
            yield "<!DOCTYPE html>" + "x" * 100_000
            (folder / "ready").write_text("1")
            time.sleep(60)
            yield "never"

        write_files_atomic([(folder / "g.json", "new json"), (folder / "g.html", slow())])
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), "the writer never got half-way"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM  # it still ends as SIGTERM asks
    finally:
        proc.kill()
    ready.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.html", "g.json"]
    assert (tmp_path / "g.json").read_text() == "old json"
    # the handler was only there for the write
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
