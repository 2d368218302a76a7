"""``gradcheck-kit check TARGET...``: targets run without pytest, same verdicts, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_report_document import validate_document

from gradcheck_kit import cli
from gradcheck_kit.report.document import load_document
from gradcheck_kit.report.validation import check_document

TARGETS = """
import sys

import torch

class Half(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * x
    @staticmethod
    def backward(ctx, g):
        return g

def x64():
    return torch.linspace(0.5, 1.5, 4, dtype=torch.float64).requires_grad_()

def good():
    return [(torch.sin, x64()), (torch.nn.Linear(4, 2, dtype=torch.float64), x64())]

def bad():
    return Half.apply, x64()

def raises():
    raise RuntimeError("weights file missing")

def bad_inputs():
    return torch.sin, torch.arange(4)

def fn_raises():
    def boom(x):
        raise ValueError("boom needs a 2-d input")
    return boom, x64()

def nan_output():
    def nan(x):
        return x * float("nan")
    return nan, x64()

def exits():
    sys.exit(0)

def fn_exits():
    def quits(x):
        sys.exit(3)
    return quits, x64()
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "cliproj_targets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "grads.py").write_text(textwrap.dedent(TARGETS))
    (package / "exits_on_import.py").write_text("import sys\nsys.exit('no GPU here')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cliproj_targets")]:
        del sys.modules[name]


def test_passing_targets_exit_0(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "cliproj_targets.grads:good", "--mode", "full"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "PASSED cliproj_targets.grads:good::sin" in out
    assert "PASSED cliproj_targets.grads:good::Linear" in out
    assert out.rstrip().endswith("2 checks, 0 failed")


def test_a_failing_target_exits_1_with_the_report(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = project / "out" / "results.json"
    code = cli.main(
        [
            "check",
            "cliproj_targets.grads:good",
            "cliproj_targets.grads:bad",
            "--json",
            str(out_json),
        ]
    )
    assert code == cli.EXIT_FAILED
    out = capsys.readouterr().out
    assert "FAILED cliproj_targets.grads:bad::apply" in out
    assert "Gradients are not close" in out
    assert out.rstrip().endswith("3 checks, 1 failed")
    records = json.loads(out_json.read_text())["results"]
    assert [r["test_id"] for r in records] == [
        "cliproj_targets.grads:good::sin",
        "cliproj_targets.grads:good::Linear",
        "cliproj_targets.grads:bad::apply",
    ]
    assert [r["passed"] for r in records] == [True, True, False]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cliproj_targets.grads:raises", "raised RuntimeError: weights file missing"),
        ("cliproj_targets.missing:f", "cannot import module 'cliproj_targets.missing'"),
        ("nocolon", "is not of the form 'package.module:factory'"),
    ],
)
def test_broken_targets_exit_2_with_a_message(
    project: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    assert cli.main(["check", spec]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_option_values_are_argparse_errors(project: Path) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["check", "cliproj_targets.grads:good", "--mode", "exact"])
    assert info.value.code == 2


def test_the_console_script_runs_in_a_subprocess(project: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gradcheck_kit", "check", "cliproj_targets.grads:bad"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=project,
    )
    assert proc.returncode == 1, proc.stderr
    assert "1 check, 1 failed" in proc.stdout


GOOD = "cliproj_targets.grads:good"
# Each kind of target that cannot be checked, and what its one-line error says.
BROKEN = [
    (
        "cliproj_targets.grads:bad_inputs",
        "cliproj_targets.grads:bad_inputs::sin",
        "InvalidArgument: nothing to check: no input is a floating-point tensor",
    ),
    (
        "cliproj_targets.grads:fn_raises",
        "cliproj_targets.grads:fn_raises::boom",
        "ValueError: boom needs a 2-d input; gradcheck_kit: raised by fn",
    ),
    (
        "cliproj_targets.grads:nan_output",
        "cliproj_targets.grads:nan_output::nan",
        "NonFiniteOutputError: output is nan at index (0,)",
    ),
    (
        "cliproj_targets.grads:raises",
        "cliproj_targets.grads:raises",
        "target factory cliproj_targets.grads:raises raised RuntimeError: weights file missing",
    ),
    (
        "cliproj_targets.grads:exits",
        "cliproj_targets.grads:exits",
        "its module or factory called sys.exit(0); a factory must return what to check",
    ),
    (
        "cliproj_targets.exits_on_import:f",
        "cliproj_targets.exits_on_import:f",
        "its module or factory called sys.exit('no GPU here')",
    ),
    (
        "cliproj_targets.grads:fn_exits",
        "cliproj_targets.grads:fn_exits::quits",
        "the checked function called sys.exit(3); it must return its outputs",
    ),
    ("cliproj_targets.missing:f", "cliproj_targets.missing:f", "cannot import module"),
]


@pytest.mark.parametrize(("spec", "test_id", "message"), BROKEN)
def test_a_broken_target_errors_alone_and_the_later_ones_still_run(
    project: Path, capsys: pytest.CaptureFixture[str], spec: str, test_id: str, message: str
) -> None:
    out_json = project / "out.json"
    assert cli.main(["check", spec, GOOD, "--json", str(out_json)]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"ERROR {test_id}"
    assert f"PASSED {GOOD}::sin" in captured.out and f"PASSED {GOOD}::Linear" in captured.out
    assert captured.out.rstrip().endswith("2 checks, 0 failed, 1 error")
    # one actionable line, no traceback
    assert captured.err.splitlines() == [captured.err.strip()]
    assert captured.err.startswith(f"gradcheck-kit: error: {test_id}: ")
    assert message in captured.err and "Traceback" not in captured.err

    document = load_document(out_json)
    validate_document(document)
    check_document(document)
    error, *checks = document["results"]
    assert error["kind"] == "error" and error["status"] == "error"
    assert (error["test_id"], error["passed"]) == (test_id, False)
    assert message in error["message"]
    assert [(r["test_id"], r["passed"]) for r in checks] == [
        (f"{GOOD}::sin", True),
        (f"{GOOD}::Linear", True),
    ]


def test_every_target_gets_its_verdict_or_its_error_in_one_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = project / "all.json"
    specs = [spec for spec, _, _ in BROKEN]
    argv = ["check", *specs, "cliproj_targets.grads:bad", GOOD, "--json", str(out_json)]
    # errors beat failures: 2, not 1
    assert cli.main(argv) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[: len(BROKEN)] == [f"ERROR {test_id}" for _, test_id, _ in BROKEN]
    assert lines[len(BROKEN)].startswith("FAILED cliproj_targets.grads:bad::apply")
    assert lines[-1] == f"3 checks, 1 failed, {len(BROKEN)} errors"
    assert len(captured.err.splitlines()) == len(BROKEN) and "Traceback" not in captured.err
    records = load_document(out_json)["results"]
    assert [r["kind"] for r in records] == ["error"] * len(BROKEN) + ["gradient"] * 3

    # check-json reads the errors back as such: failures of the run, not unreadable input
    assert cli.main(["check-json", str(out_json)]) == cli.EXIT_FAILED
    out = capsys.readouterr().out
    assert "ERROR cliproj_targets.grads:exits (cliproj_targets.grads:exits): its module" in out
    assert out.rstrip().endswith(f"{len(BROKEN) + 3} checks, {len(BROKEN) + 1} failed")


def test_traceback_shows_where_a_target_errored(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", "cliproj_targets.grads:fn_raises", GOOD, "--traceback"]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert 'raise ValueError("boom needs a 2-d input")' in err


def test_an_unwritable_json_path_is_an_error_after_the_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "taken").mkdir()
    assert cli.main(["check", GOOD, "--json", str(project / "taken")]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert "2 checks, 0 failed" in captured.out
    assert f"cannot write '{project / 'taken'}'" in captured.err


def test_a_factory_calling_sys_exit_does_not_end_the_command(project: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gradcheck_kit", "check", "cliproj_targets.grads:exits", GOOD],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=project,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.splitlines()[0] == "ERROR cliproj_targets.grads:exits"
    assert "2 checks, 0 failed, 1 error" in proc.stdout
    assert "called sys.exit(0)" in proc.stderr and "Traceback" not in proc.stderr
