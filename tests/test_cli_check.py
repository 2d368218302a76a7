"""``gradcheck-kit check TARGET...``: targets run without pytest, same verdicts, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradcheck_kit import cli

TARGETS = """
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
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "cliproj_targets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "grads.py").write_text(textwrap.dedent(TARGETS))
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
