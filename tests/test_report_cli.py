"""``gradcheck-kit report``: re-render one JSON file, merge several, refuse bad input clearly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report_document import validate_document

from gradcheck_kit import cli
from gradcheck_kit.report import samples
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
