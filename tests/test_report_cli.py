"""``gradcheck-kit report``: re-render one JSON file, merge several, refuse bad input clearly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import samples
from test_report_document import validate_document

from gradcheck_kit import cli
from gradcheck_kit.report.document import load_document, make_document, write_document


def _shards(folder: Path) -> list[Path]:
    """Three CI shards: gradients, a training check, a benchmark on another machine."""
    shards = [
        [samples.gradient_record(f"g{i}", passed=i != 1, test_id=f"a.py::t[{i}]") for i in (0, 1)],
        [samples.training_record(test_id="b.py::test_loop")],
        [samples.device_benchmark_record(test_id="c.py::test_speed")],
    ]
    paths = []
    for i, records in enumerate(shards):
        env = {"python": "3.11.7", "devices": ["cpu: x86"] + (["cuda:0: H100"] if i == 2 else [])}
        document = make_document(records, environment=env, duration_s=1.0 + i)
        paths.append(write_document(document, folder / f"shard-{i}.json"))
    return paths


def test_report_renders_one_file_next_to_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (path,) = _shards(tmp_path)[:1]
    assert cli.main(["report", str(path)]) == 0
    out = tmp_path / "shard-0.html"
    assert capsys.readouterr().out == f"wrote {out}: 2 checks, 1 failed\n"
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "g1" in page


def test_report_merges_shards_into_one_page_and_one_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _shards(tmp_path)
    out, merged = tmp_path / "site" / "index.html", tmp_path / "merged.json"
    argv = ["report", *map(str, paths), "-o", str(out), "--json", str(merged), "--title", "CI"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"wrote {out}: 4 checks, 2 failed, merged from 3 files", f"wrote {merged}"]
    document = load_document(merged)
    validate_document(document)
    assert [r["test_id"] for r in document["results"]] == [
        "a.py::t[0]",
        "a.py::t[1]",
        "b.py::test_loop",
        "c.py::test_speed",
    ]
    assert document["environment"]["devices"] == ["cpu: x86", "cuda:0: H100"]
    page = out.read_text(encoding="utf-8")
    assert "<title>CI: 2 failed of 4</title>" in page
    assert "Merged from 3 files" in page and "shard-2.json" in page
    # The merged document renders the same page again.
    again = tmp_path / "again.html"
    assert cli.main(["report", str(merged), "-o", str(again)]) == 0
    assert again.read_text(encoding="utf-8").count("<tbody data-status=") == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "is not valid JSON: Expecting property name enclosed in double quotes"),
        ('{"schema_version": 7, "results": []}', "has schema_version=7, newer than this"),
        ('{"schema_version": 2, "results": {}}', "is not a gradcheck_kit results file"),
    ],
)
def test_report_refuses_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    good = _shards(tmp_path)[0]
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content, encoding="utf-8")
    out = tmp_path / "out.html"
    assert cli.main(["report", str(good), str(bad), "-o", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("gradcheck-kit: error: ") and message in captured.err
    assert str(bad) in captured.err
    assert not out.exists()


def test_report_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = _shards(tmp_path)
    assert cli.main(["report", *map(str, paths[:2])]) == 2
    assert "give -o OUT.html to merge 2 files" in capsys.readouterr().err
    before = paths[0].read_bytes()
    assert cli.main(["report", str(paths[0]), "-o", str(paths[0])]) == 2
    assert "is one of the inputs" in capsys.readouterr().err
    assert paths[0].read_bytes() == before
    with pytest.raises(SystemExit) as info:
        cli.main(["report"])
    assert info.value.code == 2
    assert "IN.json" in capsys.readouterr().err


def test_check_json_reads_version_2_and_records_without_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [samples.device_benchmark_record(), samples.gradient_record("g", passed=True)]
    records[0]["passed"] = None
    path = write_document(make_document(records), tmp_path / "r.json")
    assert cli.main(["check-json", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "INFO DynamicNet step",
        "PASSED g (tests/test_model.py::test_grad)",
        "2 checks, 0 failed",
    ]


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "gradcheck_kit"],
        [shutil.which("gradcheck-kit") or "gradcheck-kit-not-installed"],
    ],
    ids=["python -m gradcheck_kit", "gradcheck-kit"],
)
def test_report_from_the_command_line(tmp_path: Path, command: list[str]) -> None:
    if not shutil.which(command[0]):
        pytest.skip("the gradcheck-kit console script is not on PATH (package not installed)")
    paths = _shards(tmp_path)
    out = tmp_path / "report.html"
    proc = subprocess.run(
        [*command, "report", *map(str, paths), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}: 4 checks, 2 failed")
    assert out.read_text(encoding="utf-8").count("<tbody data-status=") == 4
    bad = subprocess.run(
        [*command, "report", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert f"no such file: '{tmp_path / 'missing.json'}'" in bad.stderr
    json.loads(paths[0].read_text(encoding="utf-8"))  # the inputs are untouched


def _edited(folder: Path, edit: Any) -> Path:
    """A results file the plugin could have written, then edited by hand."""
    records = [samples.gradient_record(f"g{i}", passed=True) for i in range(3)]
    records.append(samples.training_record(test_id="b.py::test_loop"))
    document = json.loads(json.dumps(make_document(records)))
    edit(document)
    path = folder / "edited.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["check-json", "report"])
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["results"][3].update(passed=0),
            "results[3].passed: expected a boolean or null, got 0",
        ),
        (
            lambda d: d["results"][1].update(passed=1),
            "results[1].passed: expected a boolean or null, got 1",
        ),
        (
            lambda d: d["results"][0]["pairs"][0].update(passed="yes"),
            'results[0].pairs[0].passed: expected a boolean, got "yes"',
        ),
        (
            lambda d: d["results"][2]["pairs"][0].pop("worst"),
            "results[2].pairs[0].worst: missing (the field is required)",
        ),
        (
            lambda d: d["results"][3]["findings"][0].update(step="3"),
            'results[3].findings[0].step: expected an integer or null, got "3"',
        ),
        (lambda d: d.update(created=20261205), "created: expected a string, got 20261205"),
    ],
)
def test_an_edited_file_that_breaks_the_schema_is_refused_naming_the_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    edit: Any,
    message: str,
) -> None:
    path = _edited(tmp_path, edit)
    argv = [command, str(path)] + (
        ["-o", str(tmp_path / "out.html")] if command == "report" else []
    )
    assert cli.main(argv) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"gradcheck-kit: error: '{path}'")
    assert captured.err.endswith(f": {message}\n") and captured.err.count("\n") == 1
    assert not (tmp_path / "out.html").exists()


def test_an_unedited_file_passes_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the sample training check failed: exit 1, not the 2 of an unusable file
    assert cli.main(["check-json", str(_edited(tmp_path, lambda d: None))]) == cli.EXIT_FAILED
    assert capsys.readouterr().out.endswith("4 checks, 1 failed\n")


@pytest.mark.parametrize("command", ["check-json", "report"])
@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"schema_version": 2, "results": [], "environment": {"x": ' + "[" * 500 + "]" * 500 + "}}",
        '{"schema_version": 2, "results": [' + '{"a": ' * 150 + "1" + "}" * 150 + "]}",
    ],
    ids=["100000 lists", "500 lists in the environment", "150 objects in a record"],
)
def test_a_deeply_nested_file_is_refused_not_a_recursion_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, text: str
) -> None:
    path = tmp_path / "deep.json"
    path.write_text(text, encoding="utf-8")
    argv = [command, str(path)] + (
        ["-o", str(tmp_path / "out.html")] if command == "report" else []
    )
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"gradcheck-kit: error: '{path}' is nested too deeply (more than 100 ")
    assert "Traceback" not in err and "RecursionError" not in err


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    # More lines than a pipe holds, so that writing meets the closed pipe.
    records = [samples.training_record(test_id=f"t.py::test_{i}") for i in range(5000)]
    path = write_document(make_document(records), tmp_path / "many.json")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradcheck_kit", "check-json", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"FAILED ")
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == cli.EXIT_USAGE
    assert "Traceback" not in err and "BrokenPipeError" not in err
