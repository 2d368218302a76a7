"""The results document: its JSON Schema, reading (errors, upgrade), merging, atomic writing.

Torch-free on purpose: a report is read and merged on machines without torch.
``validate_document`` is imported by the other ``test_report_*`` modules.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from _schemas import document_validator, validate_document
from hypothesis import given
from hypothesis import strategies as st
from support import samples

from gradcheck_kit.report.document import (
    DOCUMENT_SCHEMA_VERSION,
    VERDICTS,
    DocumentError,
    combine_environments,
    load_document,
    make_document,
    merge_documents,
    parse_document,
    summarize,
    verdict,
    write_document,
)


def _validator() -> Any:
    """jsonschema's validator of the document (test_report_validation compares with it)."""
    return document_validator()


def every_kind() -> list[dict[str, Any]]:
    return [
        samples.gradient_record("t", passed=False, pattern="transposed"),
        samples.gradient_record("r", passed=False, pattern="region", error_map=False),
        samples.gradient_record("ok", passed=True),
        samples.manual_record(),
        samples.training_record(),
        samples.training_record(passed=True),
        samples.device_benchmark_record(),
        samples.device_benchmark_record(cuda=False),
        samples.device_parity_record(passed=False),
        {"kind": "future_kind", "name": "new", "passed": None, "message": "later issues"},
    ]


# ---------------------------------------------------------------- the schema


def test_a_document_of_every_kind_validates() -> None:
    document = make_document(every_kind(), environment=samples.sample_environment(), duration_s=1.5)
    validate_document(document)
    assert document["schema_version"] == DOCUMENT_SCHEMA_VERSION == 2
    assert document["summary"]["by_kind"]["device_benchmark"]["checks"] == 2


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.update(schema_version=1), "schema_version"),
        (lambda d: d["results"].append({"name": "no kind"}), "results"),
        (lambda d: d["results"][0].update(passed="yes"), "results"),
        (lambda d: d["results"][0].update(eps="tiny"), "results"),  # gradient: strict schema
        (lambda d: d["environment"].update(devices="cpu"), "environment"),
        (lambda d: d["summary"].pop("by_kind"), "summary"),
    ],
)
def test_the_schema_rejects_a_broken_document(change: Any, where: str) -> None:
    document = make_document(every_kind(), environment=samples.sample_environment())
    change(document)
    with pytest.raises(AssertionError, match=where):
        validate_document(document)


def test_the_schema_is_package_data() -> None:
    # Found through the package, so it ships in the wheel (pyproject package-data).
    text = resources.files("gradcheck_kit.report").joinpath("document_schema.json").read_text()
    assert json.loads(text)["properties"]["schema_version"]["const"] == DOCUMENT_SCHEMA_VERSION


# ---------------------------------------------------------------- reading


def test_verdicts_and_summary() -> None:
    records = [
        {"kind": "gradient", "passed": True},
        {"kind": "gradient", "passed": False},
        {"kind": "device_benchmark"},
        {"passed": False},
    ]
    assert [verdict(r) for r in records] == ["passed", "failed", "no_verdict", "failed"]
    summary = summarize(records)
    assert (summary["checks"], summary["passed"], summary["failed"]) == (4, 1, 2)
    assert summary["no_verdict"] == 1
    assert summary["by_kind"]["unknown"] == {
        "checks": 1,
        "passed": 0,
        "failed": 1,
        "expected_failure": 0,
        "unasserted": 0,
        "no_verdict": 0,
    }


_OUTCOMES = st.sampled_from([None, "passed", "failed", "error", "skipped", "xfailed", "xpassed"])


@given(
    passed=st.sampled_from([True, False, None]),
    outcome=_OUTCOMES,
    looked_at=st.sampled_from([True, False, None]),
)
def test_a_failure_counts_only_where_pytest_failed_its_test(
    passed: bool | None, outcome: str | None, looked_at: bool | None
) -> None:
    record: dict[str, Any] = {**samples.gradient_record("fn", passed=True), "passed": passed}
    if outcome is not None:
        record["test"] = {"outcome": outcome}
        if looked_at is not None:
            record["test"]["looked_at"] = looked_at
    word = verdict(record)
    if passed is not False:
        assert word == ("passed" if passed else "no_verdict")
    elif outcome in (None, "failed", "error"):
        assert word == "failed"
    elif outcome != "xfailed" and looked_at is False:
        assert word == "unasserted"
    else:
        assert word == "expected_failure"
    summary = summarize([record])
    assert summary[word] == summary["checks"] == 1
    assert sum(summary[w] for w in VERDICTS) == 1
    if passed is not None:  # a gradient record always has a verdict
        validate_document(make_document([record]))


def test_a_version_1_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    old = {
        "schema_version": 1,
        "tool": "gradcheck_kit",
        "version": "0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "environment": {"python": "3.11.7", "torch": "2.13.0", "platform": "Linux"},
        "results": [samples.gradient_record(passed=False)],
    }
    path.write_text(json.dumps(old), encoding="utf-8")
    document = load_document(path)
    assert document["schema_version"] == DOCUMENT_SCHEMA_VERSION
    assert document["duration_s"] is None
    assert document["summary"]["failed"] == 1
    validate_document(document)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file: '{path}'"),
        ("", "'{path}' is not valid JSON: Expecting value: line 1 column 1"),
        ('{"results": [1, }', "'{path}' is not valid JSON: "),
        ("[]", "'{path}' is not a gradcheck_kit results file (no 'results' list)"),
        ('{"schema_version": 2}', "is not a gradcheck_kit results file"),
        ('{"results": []}', "'{path}' has schema_version=None; expected a whole number"),
        ('{"schema_version": "2", "results": []}', "has schema_version='2'"),
        ('{"schema_version": true, "results": []}', "has schema_version=True"),
        (
            '{"schema_version": 3, "results": []}',
            "'{path}' has schema_version=3, newer than this gradcheck_kit",
        ),
        ('{"schema_version": 2, "results": [[]]}', "'{path}': results[0] is not an object: []"),
        ('{"schema_version": 2, "results": [{"kind": 7}]}', "results[0].kind: expected a string"),
        (
            '{"schema_version": 2, "results": [{"passed": "no"}]}',
            'results[0].passed: expected a boolean or null, got "no"',
        ),
        (
            '{"schema_version": 2, "results": [{"passed": 0}]}',
            "results[0].passed: expected a boolean or null, got 0",
        ),
        ("[" * 100_000 + "]" * 100_000, "'{path}' is nested too deeply"),
        ('{"schema_version": 2, "results": [], "environment": []}', "environment is not an object"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DocumentError) as info:
        load_document(path)
    assert message.format(path=path) in str(info.value)


def test_a_newer_version_says_what_to_do() -> None:
    with pytest.raises(DocumentError, match=r"reads \(up to 2\): upgrade gradcheck_kit"):
        parse_document(json.dumps({"schema_version": 99, "results": []}), source="ci.json")


def test_a_folder_or_binary_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="is a folder, not a results file"):
        load_document(tmp_path)
    binary = tmp_path / "data.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DocumentError, match="cannot read"):
        load_document(binary)


# ---------------------------------------------------------------- merging


def _shard(index: int, records: list[dict[str, Any]], **environment: Any) -> dict[str, Any]:
    env = {"python": "3.11.7", "torch": "2.13.0", "devices": ["cpu: x86"], **environment}
    return make_document(records, environment=env, duration_s=float(index + 1))


def test_merging_shards_keeps_every_record_once_in_order(tmp_path: Path) -> None:
    shards = [
        _shard(0, [samples.gradient_record(f"g{i}", test_id=f"t.py::test[{i}]") for i in range(3)]),
        _shard(1, [samples.training_record(test_id="t.py::test_train")], torch="not imported"),
        _shard(
            2,
            [samples.device_benchmark_record()],
            devices=["cpu: x86", "cuda:0: NVIDIA H100"],
            python="3.12.1",
        ),
    ]
    paths = []
    for i, shard in enumerate(shards):
        paths.append(write_document(shard, tmp_path / f"shard{i}.json"))
    merged = merge_documents([(str(p), load_document(p)) for p in paths])
    validate_document(merged)
    assert [r.get("name") for r in merged["results"]] == [
        "g0",
        "g1",
        "g2",
        "Net",
        "DynamicNet step",
    ]
    assert merged["summary"]["checks"] == 5
    assert merged["summary"]["failed"] == 1
    assert merged["duration_s"] == 3.0  # shards run side by side: the longest
    assert [s["path"] for s in merged["sources"]] == [str(p) for p in paths]
    assert [s["checks"] for s in merged["sources"]] == [3, 1, 1]
    env = merged["environment"]
    assert env["torch"] == "2.13.0"  # a known version beats "not imported"
    assert env["devices"] == ["cpu: x86", "cuda:0: NVIDIA H100"]
    assert env["python"] == "3.11.7 | 3.12.1"

    # A merge of merges lists the original files once each, not the intermediate one.
    again = merge_documents([("merged.json", merged), ("shard0.json", shards[0])])
    assert len(again["sources"]) == 4
    assert again["summary"]["checks"] == 8


def test_merging_nothing_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one document"):
        merge_documents([])


def test_combining_environments() -> None:
    combined = combine_environments(
        [
            {"seeds": {"per_check": [0]}, "cuda": None, "torch": "not imported"},
            {"seeds": {"per_check": [0, 1], "hypothesis": "7"}, "cuda": "12.6", "torch": "2.13"},
            {"torch": "2.13", "platform": "Linux"},
        ]
    )
    assert combined == {
        "seeds": {"per_check": [0, 1], "hypothesis": "7"},
        "cuda": "12.6",
        "torch": "2.13",
        "platform": "Linux",
    }


# ---------------------------------------------------------------- writing


def test_write_document_is_atomic_and_refuses_nan(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    write_document(make_document([samples.gradient_record()]), path)
    before = path.read_bytes()
    bad = make_document([{"kind": "x", "passed": True, "value": float("nan")}])
    with pytest.raises(ValueError, match="Out of range float values"):
        write_document(bad, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]
    assert load_document(path)["summary"]["checks"] == 1
