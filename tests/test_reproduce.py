"""The Reproduce: line of a failed check, the inputs it saves, and the exceptions' public names."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_kit as gk
from gradcheck_kit import errors
from gradcheck_kit._src.failure_inputs import (
    InputsFolder,
    close_inputs_folder,
    open_inputs_folder,
)
from gradcheck_kit._src.reproduce import function_reference

WORKTREE = Path(gk.__file__).resolve().parent.parent

# A small project: tests/ops_under_test.py, imported the way pytest imports a test
# file in a folder without __init__.py (its folder on sys.path, a top-level name).
OPS = """
import torch


def cube_wrong(x):
    return HalfCube.apply(x)


class HalfCube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 1.5 * x ** 2  # should be 3 x**2


square = lambda x: x * x  # noqa: E731


def make_scaled(k):
    def scaled(x):
        return k * x
    return scaled
"""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, object]]:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "ops_under_test.py").write_text(OPS, encoding="utf-8")
    sys.path.insert(0, str(tmp_path / "tests"))
    try:
        yield tmp_path, importlib.import_module("ops_under_test")
    finally:
        sys.path.remove(str(tmp_path / "tests"))
        sys.modules.pop("ops_under_test", None)


def test_importable_function_is_imported_from_the_project_root(
    project: tuple[Path, object],
) -> None:
    root, ops = project
    ref = function_reference(ops.cube_wrong, root=root)  # type: ignore[attr-defined]
    assert ref.importable
    assert ref.imports == "from tests.ops_under_test import cube_wrong"
    assert ref.expression == "cube_wrong"
    assert ref.label == "tests.ops_under_test:cube_wrong"


def test_function_apply_imports_its_class(project: tuple[Path, object]) -> None:
    root, ops = project
    ref = function_reference(ops.HalfCube.apply, root=root)  # type: ignore[attr-defined]
    assert (ref.imports, ref.expression) == (
        "from tests.ops_under_test import HalfCube",
        "HalfCube.apply",
    )


def test_torch_builtin_is_named_through_torch() -> None:
    ref = function_reference(torch.sin)
    assert (ref.imports, ref.expression, ref.importable) == ("import torch", "torch.sin", True)


def test_lambda_is_named_by_its_file_and_line(project: tuple[Path, object]) -> None:
    root, ops = project
    ref = function_reference(ops.square, root=root)  # type: ignore[attr-defined]
    line = OPS.splitlines().index("square = lambda x: x * x  # noqa: E731") + 1
    assert not ref.importable
    assert ref.label == f"<lambda> at tests/ops_under_test.py:{line}"


def test_closure_is_named_by_its_qualified_name_file_and_line(
    project: tuple[Path, object],
) -> None:
    root, ops = project
    ref = function_reference(ops.make_scaled(2.0), root=root)  # type: ignore[attr-defined]
    line = OPS.splitlines().index("    def scaled(x):") + 1
    assert not ref.importable
    assert ref.label == f"make_scaled.<locals>.scaled at tests/ops_under_test.py:{line}"


def _failing_check(folder: InputsFolder, fn: object, *inputs: torch.Tensor) -> gk.GradcheckResult:
    open_inputs_folder(folder)
    try:
        return gk.check_gradients(fn, inputs)  # type: ignore[arg-type]
    finally:
        close_inputs_folder(folder)


def test_failed_check_saves_inputs_and_names_them(project: tuple[Path, object]) -> None:
    root, ops = project
    folder = InputsFolder(root / "reports" / "gradcheck-inputs", root=root, label=lambda: "t::a")
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    result = _failing_check(folder, ops.cube_wrong, x)  # type: ignore[attr-defined]
    assert not result.passed
    assert result.inputs_file == "reports/gradcheck-inputs/t-a-cube_wrong.pt"
    (loaded,) = torch.load(root / result.inputs_file)
    assert torch.equal(loaded, x) and loaded.requires_grad
    assert result.reproduce is not None
    assert "from tests.ops_under_test import cube_wrong" in result.reproduce
    assert f"inputs = torch.load({result.inputs_file!r})" in result.reproduce
    assert result.summary().splitlines()[-1] == f"Reproduce: {result.reproduce}"
    assert result.to_dict()["inputs_file"] == result.inputs_file


def test_lambda_line_says_it_must_be_recreated(project: tuple[Path, object]) -> None:
    root, _ = project
    folder = InputsFolder(root / "inputs", root=WORKTREE)  # this file's lambda is named
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    result = _failing_check(folder, lambda x: x * x.detach(), x)  # detach halves the gradient
    assert not result.passed
    assert result.reproduce is not None
    assert "assert_gradients_close(fn, inputs" in result.reproduce
    assert "re-create before pasting: fn (<lambda> at tests/test_reproduce.py:" in result.reproduce


def test_passed_check_saves_nothing(tmp_path: Path) -> None:
    folder = InputsFolder(tmp_path / "inputs")
    result = _failing_check(
        folder, torch.sin, torch.ones(2, dtype=torch.float64, requires_grad=True)
    )
    assert result.passed and result.inputs_file is None and result.reproduce is None
    assert not (tmp_path / "inputs").exists()


def test_without_a_folder_nothing_is_written_and_the_line_says_so(
    project: tuple[Path, object],
) -> None:
    _, ops = project
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    result = gk.check_gradients(ops.cube_wrong, x)  # type: ignore[attr-defined]
    assert result.inputs_file is None
    assert result.reproduce is not None and "torch.load" not in result.reproduce
    assert "gradcheck_kit.save_failure_inputs(inputs, path)" in result.reproduce


def test_cap_skips_saving_with_a_note(project: tuple[Path, object]) -> None:
    root, ops = project
    x = torch.randn(8, dtype=torch.float64, requires_grad=True)  # 64 bytes
    folder = InputsFolder(root / "inputs", root=root, cap_bytes=100)
    first = _failing_check(folder, ops.cube_wrong, x)  # type: ignore[attr-defined]
    second = _failing_check(folder, ops.cube_wrong, x)  # type: ignore[attr-defined]
    assert first.inputs_file is not None and (root / first.inputs_file).is_file()
    assert second.inputs_file is None
    assert any("inputs not saved" in note and "cap is 100 bytes" in note for note in second.notes)
    assert folder.skipped == 1 and folder.used_bytes == 64
    assert len(list((root / "inputs").iterdir())) == 1


@settings(max_examples=25, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 3), max_size=3), min_size=1, max_size=3),
    as_dict=st.booleans(),
    requires_grad=st.booleans(),
    extra=st.one_of(st.none(), st.integers(), st.text(max_size=5)),
)
def test_saved_inputs_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    shapes: list[list[int]],
    as_dict: bool,
    requires_grad: bool,
    extra: object,
) -> None:
    tensors = [
        torch.randn(tuple(shape), dtype=torch.float64).requires_grad_(requires_grad)
        for shape in shapes
    ]
    inputs: object = (
        {f"x{i}": t for i, t in enumerate(tensors)} | {"extra": extra}
        if as_dict
        else (*tensors, extra)
    )
    path = gk.save_failure_inputs(inputs, tmp_path_factory.mktemp("rt") / "in.pt")
    loaded = torch.load(path)
    assert type(loaded) is type(inputs)
    values = list(loaded.values()) if isinstance(loaded, dict) else list(loaded)
    for original, back in zip(tensors, values, strict=False):
        assert torch.equal(original, back) and back.requires_grad == requires_grad
    assert values[-1] == extra
    assert [p.name for p in path.parent.iterdir()] == ["in.pt"]  # no temporary file left


PASTE_SCRIPT = """
import sys
from pathlib import Path
import torch, gradcheck_kit as gk
from gradcheck_kit._src.failure_inputs import InputsFolder, open_inputs_folder
sys.path.insert(0, "tests")
import ops_under_test
root = Path.cwd()
open_inputs_folder(InputsFolder(root / "reports" / "gradcheck-inputs", root=root))
torch.manual_seed(0)
x = torch.randn(5, dtype=torch.float64, requires_grad=True)
result = gk.check_gradients(ops_under_test.cube_wrong, (x,))
print(result.reproduce)
print([l for l in result.summary().splitlines() if l.startswith("Mismatched")][0])
"""


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pasted_line_reruns_the_check_and_fails_the_same_way(
    project: tuple[Path, object],
) -> None:
    root, _ = project
    first = _python(PASTE_SCRIPT, root)
    assert first.returncode == 0, first.stderr
    line, mismatched = first.stdout.strip().splitlines()
    assert "#" not in line  # nothing to re-create by hand
    pasted = _python(line, root)  # a fresh interpreter in the project root
    assert pasted.returncode == 1
    assert (
        "gradcheck_kit.errors.GradientMismatchError: [gradcheck] Gradients are not close!"
        in pasted.stderr
    )
    assert mismatched in pasted.stderr


def test_exceptions_carry_their_public_name_and_pickle() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert cls.__module__ == "gradcheck_kit.errors"
    error = gk.GradientMismatchError("[gradcheck] Gradients are not close!")
    text = "".join(traceback.format_exception_only(type(error), error))
    assert text.startswith("gradcheck_kit.errors.GradientMismatchError: [gradcheck]")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is gk.GradientMismatchError and str(back) == str(error)


def test_module_line_rebuilds_the_module_with_its_weights(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "nets.py").write_text(
        OPS
        + textwrap.dedent(
            """
            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.lin = torch.nn.Linear(3, 2)

                def forward(self, x):
                    return HalfCube.apply(self.lin(x)).sum()
            """
        ),
        encoding="utf-8",
    )
    script = PASTE_SCRIPT.replace("ops_under_test", "nets").replace(
        "gk.check_gradients(nets.cube_wrong, (x,))",
        "gk.check_module_gradients(nets.Net(), torch.randn(2, 3))",
    )
    first = _python(script, tmp_path)
    assert first.returncode == 0, first.stderr
    line, mismatched = first.stdout.strip().splitlines()
    assert "from tests.nets import Net; module = Net()" in line
    assert "module.load_state_dict(saved['state_dict'])" in line
    pasted = _python(line, tmp_path)
    assert pasted.returncode == 1
    assert mismatched in pasted.stderr
