"""Failures under pytest are reproducible: saved inputs, public names, training findings in call."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_plugin_basics import PLUGIN

import gradcheck_kit

WORKTREE = Path(gradcheck_kit.__file__).resolve().parent.parent

FAILING_CHECK = """
import pytest, torch


class HalfCube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 1.5 * x ** 2


def cube(x):
    return HalfCube.apply(x)


@pytest.mark.gradcheck
def test_cube(gradcheck):
    gradcheck(cube, torch.randn(4, dtype=torch.float64, requires_grad=True))
"""

# Prints each phase's outcome, so the tests can tell a call failure from a teardown error.
PHASES = """
def pytest_runtest_logreport(report):
    print(f"PHASE {report.nodeid} {report.when} {report.outcome}")
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--strict-markers", *PLUGIN, "-p", "no:cacheprovider", *args
    )


def phases(result: pytest.RunResult) -> list[tuple[str, str]]:
    # with -s a line may start with the progress output ("test_train.py PHASE ...")
    found = re.findall(r"PHASE \S+ (\w+) (\w+)", result.stdout.str())
    return [(when, outcome) for when, outcome in found]


def test_failing_check_saves_inputs_and_records_the_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ops=FAILING_CHECK)
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(failed=1)
    (record,) = json.loads((pytester.path / "reports" / "gradcheck.json").read_text())["results"]
    assert record["inputs_file"] == "reports/gradcheck-inputs/test_ops.py-test_cube-cube.pt"
    assert (pytester.path / record["inputs_file"]).is_file()
    assert record["reproduce"].startswith("import torch, gradcheck_kit; from test_ops import cube;")
    assert f"inputs = torch.load({record['inputs_file']!r})" in record["reproduce"]
    shown = [line.removeprefix("E").strip() for line in result.stdout.lines]
    assert f"Reproduce: {record['reproduce']}" in shown
    html = (pytester.path / "reports" / "gradcheck.html").read_text(encoding="utf-8")
    assert "test_ops.py-test_cube-cube.pt" in html  # the page shows the same line

    # Pasted into a shell in the project root, the line fails the same way.
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    pasted = subprocess.run(
        [sys.executable, "-c", record["reproduce"]],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pasted.returncode == 1
    assert "gradcheck_kit.errors.GradientMismatchError: [gradcheck] Gradients are not close!" in (
        pasted.stderr
    )


def test_traceback_names_the_public_error_and_hides_the_package(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ops=FAILING_CHECK)
    result = run(pytester, "--gradcheck")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    result.stdout.fnmatch_lines(
        ["E *gradcheck_kit.errors.GradientMismatchError: *Gradients are not close!*"]
    )
    assert "gradcheck_kit._src.errors" not in output
    assert "gradcheck_kit/_src" not in output
    assert "gradcheck_kit/pytest_plugin" not in output


def test_no_inputs_saved_without_gradcheck_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ops=FAILING_CHECK.replace("@pytest.mark.gradcheck\n", ""))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    assert not (pytester.path / "reports").exists()
    result.stdout.fnmatch_lines(["*Reproduce:*# inputs: the check's inputs*"])


TRAINING = """
import torch


def test_loop(training_watch):
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    training_watch(model, opt)
    for _ in range(3):
        model(torch.randn(8, 4)).pow(2).mean().backward()  # zero_grad() forgotten
        opt.step()
    {tail}
"""


def test_training_finding_fails_the_test_in_its_call_phase(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PHASES)
    pytester.makepyfile(test_train=TRAINING.format(tail="pass"))
    result = run(pytester, "-s")
    result.assert_outcomes(failed=1, errors=0)
    assert phases(result) == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    result.stdout.fnmatch_lines(
        [
            "E *gradcheck_kit.errors.TrainingLoopError: *Training loop check failed*",
            "*1. Gradient not reset between optimizer steps*",
        ]
    )
    assert "ERROR at teardown" not in result.stdout.str()
    assert "gradcheck_kit/pytest_plugin" not in result.stdout.str()  # no frame of ours


def test_own_failure_keeps_first_place_and_gets_the_findings(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PHASES)
    pytester.makepyfile(test_train=TRAINING.format(tail="assert False, 'the test itself'"))
    result = run(pytester, "-s")
    result.assert_outcomes(failed=1, errors=0)
    assert phases(result) == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    output = result.stdout.str()
    assert "AssertionError: the test itself" in output
    assert "TrainingLoopError" not in output  # the findings ride along as a note
    assert "1. Gradient not reset between optimizer steps" in output


def test_clean_loop_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_train=TRAINING.replace(".backward()  # zero_grad() forgotten", ".backward()")
        .replace("    for _ in range(3):\n", "    for _ in range(3):\n        opt.zero_grad()\n")
        .format(tail="pass")
    )
    run(pytester).assert_outcomes(passed=1)
